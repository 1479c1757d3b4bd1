package postgres

import (
	"runtime/debug"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// Version is the plugin's semantic version. Release builds set it with
// -ldflags "-X github.com/pgvault/vault-plugin-database-postgres.Version=v1.2.3".
// A plain `go build` keeps the development default, which is still a valid
// v-prefixed semver: Vault refuses to register or run a plugin that reports
// anything else.
var Version = "v0.1.0-dev"

// ReportedVersion is the version the plugin tells Vault. A bare "1.2.3" passed through
// ldflags is accepted and given its "v" prefix.
func ReportedVersion() string {
	v := strings.TrimSpace(Version)
	if v == "" || v == "dev" {
		// Fall back to the module version when installed with `go install …@vX`.
		if bi, ok := debug.ReadBuildInfo(); ok && strings.HasPrefix(bi.Main.Version, "v") && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		return "v0.1.0-dev"
	}
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return v
}

// PluginVersion implements logical.PluginVersioner so that Vault's catalog and
// `vault secrets list -detailed` show the running version.
func (p *Postgres) PluginVersion() logical.PluginVersion {
	return logical.PluginVersion{Version: ReportedVersion()}
}
