// Package e2e proves the plugin the way operators run it: a real Vault
// server launches the built binary and talks to a real PostgreSQL.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

var (
	pg       *pgtest.Server
	vaultBin string
	plugin   *vaulttest.Plugin
)

const pluginVersion = "v0.9.9-e2e"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse() // so testing.Short can be read before m.Run
	if testing.Short() {
		return m.Run() // every test skips itself under -short
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Each test starts its own Vault (devVault); the sandbox holds what they share.
	sb, err := vaulttest.NewSandbox(ctx, vaulttest.SandboxOptions{
		Version: pluginVersion, BuildFlags: []string{"-race"}, TempPrefix: "pgvault-e2e-", NoVault: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer sb.Close()
	vaultBin, plugin, pg = sb.VaultBin, sb.Plugin, sb.PG
	plugin.Env = []string{"GORACE=halt_on_error=1"}
	fmt.Fprintf(os.Stderr, "e2e: Vault %s, PostgreSQL from %s\n", vaultBin, pg.Source)
	return m.Run()
}

func needAll(t *testing.T) {
	t.Helper()
	if pg == nil {
		t.Skip("end-to-end tests need Vault and PostgreSQL; skipped under -short")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// devVault starts a dev Vault with the plugin registered and one database
// mount configured for the superuser; it returns the client.
func devVault(t *testing.T) (*vaulttest.Server, *api.Client) {
	t.Helper()
	return devVaultWith(t, plugin)
}

// devVaultWith is devVault with the given plugin binary.
func devVaultWith(t *testing.T, plugin *vaulttest.Plugin) (*vaulttest.Server, *api.Client) {
	t.Helper()
	needAll(t) // before pg is read: nil under -short
	return devVaultAt(t, plugin, "debug", rootConfig(pg.SuperUser, pg.SuperPassword), nil)
}

// devVaultAt is devVaultWith with Vault's -log-level level and the
// connection pg configured with cfg; before, if not nil, runs first (the
// trace test turns on an audit device before the root password is written).
func devVaultAt(t *testing.T, plugin *vaulttest.Plugin, level string, cfg map[string]interface{}, before func(*api.Client)) (*vaulttest.Server, *api.Client) {
	t.Helper()
	needAll(t)
	s, err := vaulttest.StartRegistered(ctxT(t), vaultBin, t.TempDir(), plugin, level)
	must(t, err)
	watchVault(t, s)
	if before != nil {
		before(s.Client)
	}
	must(t, vaulttest.Configure(s.Client, "database", "pg", plugin, cfg))
	return s, s.Client
}

// watchVault stops s when the test ends, after failing the test if the
// plugin (built with -race) reported a data race in Vault's log, and
// logging the end of that log if the test failed.
func watchVault(t *testing.T, s *vaulttest.Server) {
	t.Cleanup(func() {
		if log, _ := os.ReadFile(s.LogFile); strings.Contains(string(log), "DATA RACE") {
			t.Errorf("the plugin reported a data race under Vault:\n%s", log)
		}
		if t.Failed() {
			t.Logf("vault log tail:\n%s", s.LogTail())
		}
		s.Stop()
	})
}

// assertServes checks that Vault's catalog holds p with its sha256 and
// version, and that the connection pg runs that version (Vault reads
// running_plugin_version from the plugin's PluginVersion); it returns the
// connection's configuration.
func assertServes(t *testing.T, c *api.Client, p *vaulttest.Plugin) *api.Secret {
	t.Helper()
	got, err := c.Sys().GetPluginWithContext(ctxT(t), &api.GetPluginInput{Name: vaulttest.PluginName, Type: api.PluginTypeDatabase, Version: p.Version})
	must(t, err)
	if got.Version != p.Version || got.SHA256 != p.SHA256 {
		t.Fatalf("catalog shows version %q sha %q, want %q %q", got.Version, got.SHA256, p.Version, p.SHA256)
	}
	cfg := read(t, c, "database/config/pg")
	if v := fmt.Sprint(cfg.Data["running_plugin_version"]); v != p.Version {
		t.Fatalf("running_plugin_version = %q, want %q (the plugin's PluginVersion)", v, p.Version)
	}
	return cfg
}

func rootConfig(user, password string) map[string]interface{} {
	return map[string]interface{}{
		"connection_url": pg.TemplateURL(""),
		"username":       user,
		"password":       password,
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, c *api.Client, path string, data map[string]interface{}) *api.Secret {
	t.Helper()
	s, err := c.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return s
}

func read(t *testing.T, c *api.Client, path string) *api.Secret {
	t.Helper()
	s, err := c.Logical().Read(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if s == nil {
		t.Fatalf("read %s: nothing there", path)
	}
	return s
}

const creation = vaulttest.CreateRole

func superPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p, err := pg.Pool(ctxT(t))
	must(t, err)
	t.Cleanup(p.Close)
	return p
}

func roleExists(t *testing.T, p *pgxpool.Pool, name string) bool {
	t.Helper()
	ok, err := pgtest.RoleExists(ctxT(t), p, name)
	must(t, err)
	return ok
}

// validUntil reads a role's VALID UNTIL.
func validUntil(t *testing.T, p *pgxpool.Pool, name string) time.Time {
	t.Helper()
	until, err := pgtest.ValidUntil(ctxT(t), p, name)
	must(t, err)
	return until
}

func creds(s *api.Secret) (string, string) {
	return s.Data["username"].(string), s.Data["password"].(string)
}

func TestDynamicCredentials(t *testing.T) {
	v, c := devVault(t)
	a := superPool(t)

	cfg := read(t, c, "database/config/pg")
	blob, _ := json.Marshal(cfg.Data)
	details, _ := cfg.Data["connection_details"].(map[string]interface{})
	if _, ok := details["password"]; ok || strings.Contains(string(blob), pg.SuperPassword) {
		t.Fatalf("connection config read back shows a password: %s", blob)
	}

	write(t, c, "database/roles/app", map[string]interface{}{
		"db_name": "pg", "creation_statements": []string{creation}, "default_ttl": "1h", "max_ttl": "24h",
	})
	sec := read(t, c, "database/creds/app")
	user, pw := creds(sec)
	if err := pg.CanLogin(ctxT(t), user, pw); err != nil {
		t.Fatalf("login with dynamic credentials: %v", err)
	}
	if err := pg.CanLogin(ctxT(t), user, pw+"-wrong"); err == nil {
		t.Fatal("a wrong password logged in")
	}

	before := validUntil(t, a, user)
	time.Sleep(1100 * time.Millisecond)
	if _, err := c.Sys().Renew(sec.LeaseID, 7200); err != nil {
		t.Fatalf("renew: %v", err)
	}
	after := validUntil(t, a, user)
	if !after.After(before) {
		t.Fatalf("renewal did not move rolvaliduntil: %s -> %s", before, after)
	}

	// An open session must end with the lease.
	conn, err := pg.Connect(ctxT(t), user, pw, "")
	must(t, err)
	defer conn.Close(context.Background())
	pid := conn.PgConn().PID()
	must(t, c.Sys().Revoke(sec.LeaseID))
	if roleExists(t, a, user) {
		t.Fatalf("role %q still exists after revocation", user)
	}
	var n int
	must(t, a.QueryRow(ctxT(t), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&n))
	if n != 0 {
		t.Fatalf("the revoked user's session %d is still open", pid)
	}
	// Vault's debug log carries the plugin's own log lines.
	log, err := os.ReadFile(v.LogFile)
	must(t, err)
	if !strings.Contains(string(log), "password_authentication=auto") && !strings.Contains(string(log), `"password_authentication":"auto"`) {
		t.Fatalf("the plugin's log lines are not in Vault's log:\n%s", log)
	}
	for _, secret := range []string{pw, pg.SuperPassword} {
		if strings.Contains(string(log), secret) {
			t.Fatal("Vault's log holds a password")
		}
	}
}

func TestRoleStatements(t *testing.T) {
	_, c := devVault(t)
	a := superPool(t)
	t.Run("DO block", func(t *testing.T) {
		write(t, c, "database/roles/do", map[string]interface{}{
			"db_name": "pg", "default_ttl": "1h",
			"creation_statements": []string{`DO $$
BEGIN
  CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
  EXECUTE format('COMMENT ON ROLE %I IS %L', '{{name}}', 'made in a DO block; really');
END
$$;`},
		})
		user, pw := creds(read(t, c, "database/creds/do"))
		if err := pg.CanLogin(ctxT(t), user, pw); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("failing statement leaves no role", func(t *testing.T) {
		write(t, c, "database/roles/broken", map[string]interface{}{
			"db_name": "pg", "default_ttl": "1h",
			"creation_statements": []string{creation, `GRANT SELECT ON table_that_does_not_exist TO "{{name}}";`},
		})
		_, err := c.Logical().Read("database/creds/broken")
		if err == nil || !strings.Contains(err.Error(), "table_that_does_not_exist") {
			t.Fatalf("error = %v, want one naming the missing table", err)
		}
		var n int
		must(t, a.QueryRow(ctxT(t), "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-broken-%'").Scan(&n))
		if n != 0 {
			t.Fatalf("%d roles left behind", n)
		}
	})
}

func TestStaticRole(t *testing.T) {
	_, c := devVault(t)
	a := superPool(t)
	static := fmt.Sprintf("static-app-%d", time.Now().UnixNano())
	_, err := a.Exec(ctxT(t), fmt.Sprintf(`CREATE ROLE %q LOGIN PASSWORD 'initial-pw'`, static))
	must(t, err)
	write(t, c, "database/static-roles/app", map[string]interface{}{
		"db_name": "pg", "username": static, "rotation_period": "24h",
	})
	_, pw1 := creds(read(t, c, "database/static-creds/app"))
	if err := pg.CanLogin(ctxT(t), static, pw1); err != nil {
		t.Fatalf("static credentials: %v", err)
	}
	if err := pg.CanLogin(ctxT(t), static, "initial-pw"); err == nil {
		t.Fatal("the pre-Vault password still works")
	}
	write(t, c, "database/rotate-role/app", nil)
	_, pw2 := creds(read(t, c, "database/static-creds/app"))
	if pw2 == pw1 {
		t.Fatal("rotate-role did not change the password")
	}
	if err := pg.CanLogin(ctxT(t), static, pw2); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := pg.CanLogin(ctxT(t), static, pw1); err == nil {
		t.Fatal("the old password still works after rotate-role")
	}
}

func TestRotateRoot(t *testing.T) {
	s, c := devVault(t)
	_ = s
	a := superPool(t)
	rootPw := `Root@/#{}%?&'pw`
	root := fmt.Sprintf("vault-admin-%d", time.Now().UnixNano())
	_, err := a.Exec(ctxT(t), fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(root), render.QuoteLiteral(rootPw)))
	must(t, err)
	must(t, vaulttest.Configure(c, "database", "admin", plugin, rootConfig(root, rootPw)))
	write(t, c, "database/roles/viaadmin", map[string]interface{}{
		"db_name": "admin", "creation_statements": []string{creation}, "default_ttl": "1h",
	})
	write(t, c, "database/rotate-root/admin", nil)
	if err := pg.CanLogin(ctxT(t), root, rootPw); err == nil {
		t.Fatal("the old root password still works after rotate-root")
	}
	sec := read(t, c, "database/creds/viaadmin")
	user, pw := creds(sec)
	if err := pg.CanLogin(ctxT(t), user, pw); err != nil {
		t.Fatalf("credentials after rotate-root: %v", err)
	}
	must(t, c.Sys().Revoke(sec.LeaseID))
	if roleExists(t, a, user) {
		t.Fatal("revocation after rotate-root left the role")
	}
}

func TestMultiplexingAndVersion(t *testing.T) {
	s, c := devVault(t)
	must(t, vaulttest.EnableDatabase(c, "database2"))
	must(t, vaulttest.Configure(c, "database2", "pg-a", plugin, rootConfig(pg.SuperUser, pg.SuperPassword)))
	must(t, vaulttest.Configure(c, "database2", "pg-b", plugin, rootConfig(pg.SuperUser, pg.SuperPassword)))
	for _, m := range []struct{ mount, conn string }{{"database", "pg"}, {"database2", "pg-a"}, {"database2", "pg-b"}} {
		write(t, c, m.mount+"/roles/r-"+m.conn, map[string]interface{}{"db_name": m.conn, "creation_statements": []string{creation}, "default_ttl": "1h"})
		user, pw := creds(read(t, c, m.mount+"/creds/r-"+m.conn))
		if err := pg.CanLogin(ctxT(t), user, pw); err != nil {
			t.Fatalf("%s/%s: %v", m.mount, m.conn, err)
		}
	}
	if n := vaulttest.CountPluginProcesses(s.PluginDir); n != 1 {
		t.Fatalf("%d plugin processes serve 2 mounts and 3 connections, want 1 (multiplexed)", n)
	}

	cfg := assertServes(t, c, plugin)
	if got := fmt.Sprint(cfg.Data["plugin_version"]); got != plugin.Version {
		t.Fatalf("connection plugin_version = %q, want %q", got, plugin.Version)
	}
	out, err := s.Output(ctxT(t), vaultBin, "secrets", "list", "-detailed")
	if err != nil {
		t.Fatalf("vault secrets list -detailed: %v: %s", err, out)
	}
	if !strings.Contains(out, "database2/") {
		t.Fatalf("secrets list does not show the mounts:\n%s", out)
	}
	out, err = s.Output(ctxT(t), vaultBin, "plugin", "list", "-detailed", "database")
	if err != nil || !strings.Contains(out, vaulttest.PluginName) || !strings.Contains(out, plugin.Version) {
		t.Fatalf("vault plugin list does not show %s %s (%v):\n%s", vaulttest.PluginName, plugin.Version, err, out)
	}
}

func TestParallelCredentials(t *testing.T) {
	_, c := devVault(t)
	a := superPool(t)
	_, err := a.Exec(ctxT(t), "CREATE TABLE IF NOT EXISTS e2e_orders (id int)")
	must(t, err)
	write(t, c, "database/roles/par", map[string]interface{}{
		"db_name": "pg", "default_ttl": "1h",
		"creation_statements": []string{creation, `GRANT SELECT ON e2e_orders TO "{{name}}";`},
	})
	const n = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]string{}
	var errs []error
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.Logical().Read("database/creds/par")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			u, p := creds(s)
			got[u] = p
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("parallel creds: %v", err)
	}
	if len(got) != n {
		t.Fatalf("%d distinct users from %d requests", len(got), n)
	}
	var names []string
	for u, p := range got {
		names = append(names, u)
		if err := pg.CanLogin(ctxT(t), u, p); err != nil {
			t.Errorf("login %s: %v", u, err)
		}
	}
	must(t, c.Sys().RevokePrefix("database/creds/par"))
	var left int
	must(t, a.QueryRow(ctxT(t), "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", names).Scan(&left))
	if left != 0 {
		t.Fatalf("%d of %d roles left after revoke-prefix", left, n)
	}
}

// TestHA runs three Vault nodes on Raft: credentials issued through the
// leader are revoked by the node that takes over when the leader stops.
func TestHA(t *testing.T) {
	needAll(t)
	cl, err := vaulttest.StartRaftCluster(ctxT(t), vaultBin, t.TempDir(), plugin, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range cl.Nodes {
				t.Logf("%s log tail:\n%s", n.Addr, n.LogTail())
			}
		}
		cl.Stop()
	})
	leader, err := cl.Leader(ctxT(t))
	must(t, err)
	c := leader.Client
	must(t, vaulttest.RegisterAndMount(c, plugin))
	must(t, vaulttest.Configure(c, "database", "pg", plugin, rootConfig(pg.SuperUser, pg.SuperPassword)))
	write(t, c, "database/roles/ha", map[string]interface{}{"db_name": "pg", "creation_statements": []string{creation}, "default_ttl": "1h"})
	a := superPool(t)
	var leases []string
	var users []string
	for i := 0; i < 3; i++ {
		s := read(t, c, "database/creds/ha")
		u, p := creds(s)
		if err := pg.CanLogin(ctxT(t), u, p); err != nil {
			t.Fatal(err)
		}
		leases, users = append(leases, s.LeaseID), append(users, u)
	}
	leader.Stop()
	if leader.Lingering != 0 {
		t.Errorf("%d plugin processes outlived the stopped leader", leader.Lingering)
	}
	next, err := cl.Leader(ctxT(t))
	must(t, err)
	if next == leader {
		t.Fatal("the stopped leader is still the leader")
	}
	// The new active node may need a moment to load mounts and leases.
	for i, l := range leases {
		rerr := pgtest.Poll(ctxT(t), 60*time.Second, 500*time.Millisecond, func() error {
			return next.Client.Sys().Revoke(l)
		})
		if rerr != nil {
			t.Fatalf("revoke on the new leader: %v", rerr)
		}
		if roleExists(t, a, users[i]) {
			t.Fatalf("role %q survived revocation by the new leader", users[i])
		}
	}
	// And it issues new credentials.
	u, p := creds(read(t, next.Client, "database/creds/ha"))
	if err := pg.CanLogin(ctxT(t), u, p); err != nil {
		t.Fatal(err)
	}
}
