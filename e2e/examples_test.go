package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/release"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// TestTerraformExample applies examples/terraform, unchanged, with a real
// OpenTofu (or Terraform) CLI and terraform-provider-vault, to a dev Vault
// that has the release binary in its plugin directory. It then proves the
// result from the outside: the plan is empty on a second run, Vault issues
// credentials that log in, revocation ends the user's session and hands
// what it owned to reassign_owned_to, the static role's password works,
// and destroy removes it all. `make test-examples` builds both tools from
// the module proxy (tools/tofu, tools/terraform-provider-vault) and runs it.
func TestTerraformExample(t *testing.T) {
	needAll(t)
	tf, providerDir := os.Getenv("TF_BIN"), os.Getenv("TF_PROVIDER_VAULT_DIR")
	if tf == "" || providerDir == "" {
		t.Skip("needs TF_BIN (an OpenTofu or Terraform CLI) and TF_PROVIDER_VAULT_DIR (a directory holding terraform-provider-vault): run `make test-examples`")
	}
	if _, err := os.Stat(filepath.Join(providerDir, "terraform-provider-vault")); err != nil {
		t.Fatalf("TF_PROVIDER_VAULT_DIR: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	// A cleanup, not a defer: the fallback destroy below is a cleanup too,
	// registered later, so it runs first, while ctx is still live.
	t.Cleanup(cancel)
	shipped := hostRelease(ctx, t, "v0.9.11-example.1")
	// Unlike devVault, nothing is registered or mounted: that is the example's job.
	s, err := vaulttest.StartDev(ctxT(t), vaultBin, t.TempDir(), shipped)
	must(t, err)
	watchVault(t, s)
	c := s.Client
	ex := newTFExample(t, superPool(t))
	run := ex.cli(ctx, tf, providerDir, []string{
		"VAULT_ADDR=" + s.Addr, "VAULT_TOKEN=" + c.Token(),
		"TF_VAR_plugin_version=" + shipped.Version,
		"TF_VAR_plugin_sha256=" + shipped.SHA256,
	})

	out, err := run("apply", "-auto-approve", "-no-color")
	if err != nil {
		t.Fatalf("%s apply: %v\n%s", filepath.Base(tf), err, out)
	}
	t.Logf("%s apply:\n%s", filepath.Base(tf), out)
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			_, _ = run("destroy", "-auto-approve", "-no-color")
		}
	})
	// A second plan that wants changes would mean every apply rewrites the
	// connection (and its password) or re-registers the plugin.
	if out, err := run("plan", "-detailed-exitcode", "-no-color"); err != nil {
		t.Fatalf("a plan right after apply is not empty (%v):\n%s", err, out)
	}

	cfg := assertServes(t, c, shipped)
	details, _ := cfg.Data["connection_details"].(map[string]interface{})
	if details["reassign_owned_to"] != ex.owner || details["terminate_sessions"] != true {
		t.Fatalf("the connection lacks the plugin's parameters: reassign_owned_to=%v terminate_sessions=%v", details["reassign_owned_to"], details["terminate_sessions"])
	}
	ex.checkDynamic(c)
	ex.checkStatic(c)

	if out, err := run("destroy", "-auto-approve", "-no-color"); err != nil {
		t.Fatalf("destroy: %v\n%s", err, out)
	}
	destroyed = true
	mounts, err := c.Sys().ListMountsWithContext(ctxT(t))
	must(t, err)
	if _, ok := mounts["database/"]; ok {
		t.Fatal("the database mount is still there after destroy")
	}
	if _, err := c.Sys().GetPluginWithContext(ctxT(t), &api.GetPluginInput{Name: vaulttest.PluginName, Type: api.PluginTypeDatabase, Version: shipped.Version}); err == nil {
		t.Fatal("the plugin is still registered after destroy")
	}
}

// hostRelease builds the release for this machine's platform, as `make
// release` does, and returns its bare binary.
func hostRelease(ctx context.Context, t *testing.T, version string) *vaulttest.Plugin {
	t.Helper()
	host := release.Target{OS: runtime.GOOS, Arch: runtime.GOARCH}
	r, err := release.Build(ctx, release.Options{Root: vaulttest.RepoRoot(), Dist: t.TempDir(), Version: version, Targets: []release.Target{host}})
	must(t, err)
	a := r.Artifact(host)
	return &vaulttest.Plugin{Path: a.Binary, SHA256: a.BinarySHA256, Version: r.Version}
}

// tfExample is what the example is applied against: the roles it names,
// made before it runs, and the superuser's pool that checks the result.
type tfExample struct {
	t                            *testing.T
	super                        *pgxpool.Pool
	suffix, owner, group, static string
}

// newTFExample creates the roles the example's variables name: the owner
// revocation hands objects to, the group dynamic users join, and the user
// the static role manages.
func newTFExample(t *testing.T, super *pgxpool.Pool) *tfExample {
	suffix := fmt.Sprint(time.Now().UnixNano())
	ex := &tfExample{t: t, super: super, suffix: suffix, owner: "tf_owner_" + suffix, group: "tf_app_" + suffix, static: "tf_static_" + suffix}
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %q NOLOGIN`, ex.owner),
		fmt.Sprintf(`CREATE ROLE %q NOLOGIN`, ex.group),
		fmt.Sprintf(`CREATE ROLE %q LOGIN PASSWORD 'initial-pw'`, ex.static),
	} {
		_, err := super.Exec(ctxT(t), stmt)
		must(t, err)
	}
	return ex
}

// cli copies examples/terraform/*.tf into a temporary directory, writes a
// CLI configuration that points at the provider in providerDir, and returns
// a function that runs tf there with env, the example's variables, and
// none of the caller's VAULT_* and TF_* variables.
func (ex *tfExample) cli(ctx context.Context, tf, providerDir string, env []string) func(args ...string) (string, error) {
	t := ex.t
	dir := t.TempDir()
	tfFiles, err := filepath.Glob(filepath.Join(vaulttest.RepoRoot(), "examples", "terraform", "*.tf"))
	must(t, err)
	if len(tfFiles) == 0 {
		t.Fatal("no .tf files in examples/terraform")
	}
	for _, f := range tfFiles {
		b, err := os.ReadFile(f)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644))
	}
	cliConfig := filepath.Join(dir, "cli.tfrc")
	must(t, os.WriteFile(cliConfig, []byte(fmt.Sprintf(`provider_installation {
  dev_overrides {
    "hashicorp/vault" = %q
  }
  direct {}
}
`, providerDir)), 0o644))
	env = append(env,
		"TF_CLI_CONFIG_FILE="+cliConfig, "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1",
		"TF_VAR_connection_url="+pg.TemplateURL(""),
		"TF_VAR_username="+pg.SuperUser,
		"TF_VAR_password="+pg.SuperPassword,
		"TF_VAR_reassign_owned_to="+ex.owner,
		"TF_VAR_app_group="+ex.group,
		"TF_VAR_static_username="+ex.static,
	)
	return func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, tf, append([]string{"-chdir=" + dir}, args...)...)
		cmd.Env = append(withoutVaultOrTF(os.Environ()), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
}

// checkDynamic logs in with dynamic credentials from the example's role,
// then revokes them and sees what revocation did: the role is gone, what
// it owned belongs to reassign_owned_to, and its session is ended.
func (ex *tfExample) checkDynamic(c *api.Client) {
	t, super := ex.t, ex.super
	sec := read(t, c, "database/creds/app")
	user, pw := creds(sec)
	conn, err := pg.Connect(ctxT(t), user, pw, "")
	if err != nil {
		t.Fatalf("logging in with the dynamic credentials: %v", err)
	}
	defer conn.Close(context.Background())
	var inGroup bool
	must(t, conn.QueryRow(ctxT(t), "SELECT pg_has_role(current_user, $1, 'MEMBER')", ex.group).Scan(&inGroup))
	if !inGroup {
		t.Fatalf("the dynamic user is not in %s: the example's creation statement did not run", ex.group)
	}
	table := "tf_owned_" + ex.suffix
	_, err = super.Exec(ctxT(t), fmt.Sprintf(`CREATE TABLE %q (id int); ALTER TABLE %q OWNER TO %q`, table, table, user))
	must(t, err)
	t.Cleanup(func() { _, _ = super.Exec(context.Background(), fmt.Sprintf(`DROP TABLE IF EXISTS %q`, table)) })
	must(t, c.Sys().Revoke(sec.LeaseID))
	if roleExists(t, super, user) {
		t.Fatalf("role %q still exists after revocation", user)
	}
	var tableOwner string
	must(t, super.QueryRow(ctxT(t), "SELECT tableowner FROM pg_tables WHERE tablename = $1", table).Scan(&tableOwner))
	if tableOwner != ex.owner {
		t.Fatalf("after revocation %s is owned by %q, want reassign_owned_to %q", table, tableOwner, ex.owner)
	}
	if _, err := conn.Exec(ctxT(t), "SELECT 1"); err == nil {
		t.Fatal("the revoked user's session survived: terminate_sessions did not reach the plugin")
	}
}

// checkStatic checks the static role: Vault rotated the password when the
// role was created, so the new one logs in and the one from before fails.
func (ex *tfExample) checkStatic(c *api.Client) {
	t := ex.t
	sUser, sPw := creds(read(t, c, "database/static-creds/app-static"))
	if sUser != ex.static {
		t.Fatalf("static-creds user %q, want %q", sUser, ex.static)
	}
	if err := pg.CanLogin(ctxT(t), ex.static, sPw); err != nil {
		t.Fatalf("logging in with the static credentials: %v", err)
	}
	if err := pg.CanLogin(ctxT(t), ex.static, "initial-pw"); err == nil {
		t.Fatal("the static user's password from before Vault still works")
	}
}

// withoutVaultOrTF drops the caller's VAULT_* and TF_* variables, which
// would point the CLI or the provider somewhere else.
func withoutVaultOrTF(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "TF_") {
			out = append(out, kv)
		}
	}
	return out
}
