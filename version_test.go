package postgres

import (
	"runtime/debug"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestReportedVersion: the linked version wins; without one, a binary from
// `go install …@v1.2.3` reports v1.2.3 (the Version default once hid it).
func TestReportedVersion(t *testing.T) {
	t.Parallel()
	installed := func(v string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/pgvault/vault-plugin-database-postgres", Version: v}}
	}
	for _, c := range []struct {
		name, linked string
		bi           *debug.BuildInfo
		want         string
	}{
		{"release build", "v1.2.3", installed("(devel)"), "v1.2.3"},
		{"linked without v", "1.2.3", nil, "v1.2.3"},
		{"linked wins over module", "v1.2.3", installed("v1.0.0"), "v1.2.3"},
		{"go install at a tag", devVersion, installed("v1.4.0"), "v1.4.0"},
		{"go install at a commit", devVersion, installed("v1.4.1-0.20251126020000-0123456789ab"), "v1.4.1-0.20251126020000-0123456789ab"},
		{"plain go build", devVersion, installed("(devel)"), devVersion},
		{"modified checkout", devVersion, installed("v1.4.1-0.20251126020000-0123456789ab+dirty"), devVersion},
		{"no build info", devVersion, nil, devVersion},
		{"empty linked", "", installed("v2.0.0"), "v2.0.0"},
	} {
		if got := reportedVersion(c.linked, c.bi); got != c.want {
			t.Errorf("%s: reportedVersion(%q, %v) = %q, want %q", c.name, c.linked, c.bi, got, c.want)
		}
	}
}

// TestTypeIsTheBuiltinsType: Vault labels its database plugin-instance
// gauges with Type(); the built-in reports "pgx".
func TestTypeIsTheBuiltinsType(t *testing.T) {
	if typ, err := newPostgres(hclog.NewNullLogger()).Type(); err != nil || typ != "pgx" {
		t.Fatalf("Type() = %q, %v; the built-in reports \"pgx\"", typ, err)
	}
}
