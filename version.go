package postgres

import (
	"runtime/debug"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// productName is the plugin's name wherever it shows: the managed_by of the
// labels it writes (and that the reaper looks for), its application_name,
// the comment on the holding role.
const productName = "vault-plugin-database-postgres"

// devVersion is what a build that sets no version reports. It is still a
// valid v-prefixed semver: Vault refuses to register or run a plugin that
// reports anything else.
const devVersion = "v0.1.0-dev"

// Version is the plugin's semantic version. Release builds set it with
// -ldflags "-X github.com/pgvault/vault-plugin-database-postgres.Version=v1.2.3".
var Version = devVersion

// ReportedVersion is the version the plugin tells Vault: the linked
// Version, else the module version `go install …@v1.2.3` records, else
// devVersion.
func ReportedVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return reportedVersion(Version, bi)
}

// reportedVersion is ReportedVersion with its inputs given. A bare "1.2.3"
// passed through ldflags is given its "v" prefix.
func reportedVersion(linked string, bi *debug.BuildInfo) string {
	v := strings.TrimSpace(linked)
	if v == "" || v == "dev" || v == devVersion {
		// `go install` links no version but records the module's; a build
		// from a modified checkout records "+dirty", which names no release.
		if bi != nil && strings.HasPrefix(bi.Main.Version, "v") && !strings.HasSuffix(bi.Main.Version, "+dirty") {
			return bi.Main.Version
		}
		return devVersion
	}
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return v
}

// PluginVersion implements logical.PluginVersioner so that Vault knows the
// running version: `vault read database/config/<name>` shows it as
// running_plugin_version. (`vault secrets list -detailed` shows the version
// of the database engine built into Vault, not this plugin's.)
func (p *Postgres) PluginVersion() logical.PluginVersion {
	return logical.PluginVersion{Version: ReportedVersion()}
}
