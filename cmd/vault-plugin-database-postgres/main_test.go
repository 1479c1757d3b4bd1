package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// semver is what Vault accepts as a plugin version.
var semver = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

func TestVersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	cases := []struct {
		name, ldflags, want string
	}{
		{"plain go build", "", ""},
		{"ldflags without v", "-X github.com/pgvault/vault-plugin-database-postgres.Version=1.2.3", "v1.2.3"},
		{"ldflags with v", "-X github.com/pgvault/vault-plugin-database-postgres.Version=v2.0.0-rc.1", "v2.0.0-rc.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "plugin")
			args := []string{"build", "-o", bin}
			if tc.ldflags != "" {
				args = append(args, "-ldflags", tc.ldflags)
			}
			if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
				t.Fatalf("go build: %v: %s", err, out)
			}
			out, err := exec.Command(bin, "-version").Output()
			if err != nil {
				t.Fatalf("-version: %v", err)
			}
			got := strings.TrimSpace(string(out))
			if !semver.MatchString(got) {
				t.Fatalf("-version printed %q, which Vault would refuse (not v-prefixed semver)", got)
			}
			if tc.want != "" && got != tc.want {
				t.Fatalf("-version = %q, want %q", got, tc.want)
			}
		})
	}
}
