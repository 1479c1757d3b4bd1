// Command demo shows the plugin's whole job on a fresh machine: a throwaway
// PostgreSQL and a Vault dev server, the plugin registered with its sha256
// and version, dynamic credentials issued, used, renewed and revoked, a
// client certificate issued, used and revoked, a static role rotated and the
// root credential rotated. With -dev it leaves
// the sandbox running until Ctrl-C instead.
//
// Run it with `make demo` or `make dev`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

func main() {
	dev := flag.Bool("dev", false, "leave Vault and PostgreSQL running until Ctrl-C")
	version := flag.String("version", "v0.1.0", "version to build the plugin with")
	flag.Parse()
	if err := run(*dev, *version); err != nil {
		fmt.Fprintf(os.Stderr, "\nFAILED: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("  ✓ "+format+"\n", args...)
}

func run(dev bool, version string) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("vault-plugin-database-postgres demo")

	sb, err := vaulttest.NewSandbox(ctx, vaulttest.SandboxOptions{
		Version: version, TempPrefix: "pgvault-demo-", Step: step,
	})
	if err != nil {
		return err
	}
	defer sb.Close()
	plugin, pg, v, c, dir := sb.Plugin, sb.PG, sb.Vault, sb.Client, sb.Dir
	if err := vaulttest.Configure(c, "database", "pg", plugin, map[string]interface{}{
		"connection_url": pg.TemplateURL(""), "username": pg.SuperUser, "password": pg.SuperPassword,
	}); err != nil {
		return fmt.Errorf("configuring the connection: %w", err)
	}
	step("configured database/config/pg with verify_connection: Vault's plugin reached PostgreSQL as %q", pg.SuperUser)
	if _, err := c.Logical().Write("database/roles/app", map[string]interface{}{
		"db_name": "pg", "default_ttl": "1h", "max_ttl": "24h",
		"creation_statements": []string{
			vaulttest.CreateRole,
			`GRANT pg_read_all_data TO "{{name}}";`,
		},
	}); err != nil {
		return err
	}
	step("created role database/roles/app (1h leases, read-only via pg_read_all_data)")

	if dev {
		return sandbox(ctx, v, pg)
	}

	// Dynamic credentials.
	sec, err := c.Logical().Read("database/creds/app")
	if err != nil {
		return fmt.Errorf("reading credentials: %w", err)
	}
	user, pw := sec.Data["username"].(string), sec.Data["password"].(string)
	step("vault read database/creds/app → user %s, lease %s", user, shortLease(sec.LeaseID))
	conn, err := pg.Connect(ctx, user, pw, "")
	if err != nil {
		return fmt.Errorf("logging in with the dynamic credentials: %w", err)
	}
	var who string
	var tables int
	if err := conn.QueryRow(ctx, "SELECT current_user, (SELECT count(*) FROM pg_class)").Scan(&who, &tables); err != nil {
		return err
	}
	conn.Close(ctx)
	step("logged in as %s and ran a query (pg_class has %d rows): the credentials work", who, tables)
	if err := pg.CanLogin(ctx, user, pw+"x"); err == nil {
		return fmt.Errorf("a wrong password logged in")
	}
	step("a wrong password is refused: SCRAM authentication is real")

	admin, err := pg.Pool(ctx)
	if err != nil {
		return err
	}
	defer admin.Close()
	var before, after time.Time
	if err := admin.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", user).Scan(&before); err != nil {
		return err
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := c.Sys().Renew(sec.LeaseID, 7200); err != nil {
		return fmt.Errorf("renewing: %w", err)
	}
	if err := admin.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", user).Scan(&after); err != nil {
		return err
	}
	if !after.After(before) {
		return fmt.Errorf("renewal did not move VALID UNTIL (%s → %s)", before, after)
	}
	step("renewed the lease: VALID UNTIL moved from %s to %s", before.Format(time.TimeOnly), after.Format(time.TimeOnly))

	session, err := pg.Connect(ctx, user, pw, "")
	if err != nil {
		return err
	}
	defer session.Close(context.Background())
	if err := c.Sys().Revoke(sec.LeaseID); err != nil {
		return fmt.Errorf("revoking: %w", err)
	}
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", user).Scan(&n); err != nil || n != 0 {
		return fmt.Errorf("role %s still in pg_roles after revocation (%v)", user, err)
	}
	if err := session.Ping(ctx); err == nil {
		return fmt.Errorf("the revoked user's open session still works")
	}
	step("revoked the lease: %s is gone from pg_roles and its open session was ended", user)

	if err := certificates(ctx, c, pg, admin, dir); err != nil {
		return err
	}

	// Static role.
	if _, err := admin.Exec(ctx, `CREATE ROLE "demo-static" LOGIN PASSWORD 'set-by-a-human'`); err != nil {
		return err
	}
	if _, err := c.Logical().Write("database/static-roles/reporting", map[string]interface{}{
		"db_name": "pg", "username": "demo-static", "rotation_period": "24h",
	}); err != nil {
		return fmt.Errorf("creating the static role: %w", err)
	}
	s1, err := c.Logical().Read("database/static-creds/reporting")
	if err != nil {
		return err
	}
	pw1 := s1.Data["password"].(string)
	if err := pg.CanLogin(ctx, "demo-static", pw1); err != nil {
		return fmt.Errorf("static credentials: %w", err)
	}
	step("static role database/static-roles/reporting took over demo-static; its Vault password logs in")
	if _, err := c.Logical().Write("database/rotate-role/reporting", nil); err != nil {
		return fmt.Errorf("rotate-role: %w", err)
	}
	s2, err := c.Logical().Read("database/static-creds/reporting")
	if err != nil {
		return err
	}
	pw2 := s2.Data["password"].(string)
	if err := pg.CanLogin(ctx, "demo-static", pw2); err != nil {
		return fmt.Errorf("rotated static credentials: %w", err)
	}
	if err := pg.CanLogin(ctx, "demo-static", pw1); err == nil {
		return fmt.Errorf("the old static password still works after rotate-role")
	}
	step("rotate-role: the new password logs in, the old one is refused")

	// Root rotation, on an admin that is not the cluster superuser.
	rootPw := "Initial@/#{}%?&'pw"
	if _, err := admin.Exec(ctx, `CREATE ROLE "vault-admin" LOGIN CREATEROLE PASSWORD 'Initial@/#{}%?&''pw'`); err != nil {
		return err
	}
	if err := vaulttest.Configure(c, "database", "managed", plugin, map[string]interface{}{
		"connection_url": pg.TemplateURL(""), "username": "vault-admin", "password": rootPw,
	}); err != nil {
		return err
	}
	if _, err := c.Logical().Write("database/roles/managed-app", map[string]interface{}{
		"db_name": "managed", "default_ttl": "1h",
		"creation_statements": []string{vaulttest.CreateRole},
	}); err != nil {
		return err
	}
	if _, err := c.Logical().Write("database/rotate-root/managed", nil); err != nil {
		return fmt.Errorf("rotate-root: %w", err)
	}
	if err := pg.CanLogin(ctx, "vault-admin", rootPw); err == nil {
		return fmt.Errorf("the old root password still works after rotate-root")
	}
	sec, err = c.Logical().Read("database/creds/managed-app")
	if err != nil {
		return fmt.Errorf("credentials after rotate-root: %w", err)
	}
	if err := pg.CanLogin(ctx, sec.Data["username"].(string), sec.Data["password"].(string)); err != nil {
		return err
	}
	if err := c.Sys().Revoke(sec.LeaseID); err != nil {
		return err
	}
	step("rotate-root on a CREATEROLE admin: only Vault knows its password now, and credentials still issue and revoke")

	fmt.Println("demo passed; cleaning up Vault and PostgreSQL")
	return nil
}

func shortLease(id string) string {
	if i := strings.LastIndex(id, "/"); i >= 0 && len(id)-i > 8 {
		return id[:i+9] + "…"
	}
	return id
}

// sandbox prints how to use the running environment and waits for Ctrl-C.
func sandbox(ctx context.Context, v *vaulttest.Server, pg *pgtest.Server) error {
	fmt.Printf(`
The sandbox is up. In another shell:

  export VAULT_ADDR=%s
  export VAULT_TOKEN=root

PostgreSQL as the admin:

  psql %s

Try:

  vault read database/creds/app
  vault lease revoke -prefix database/creds/app
  vault write -f database/rotate-root/pg     # then only Vault knows the admin password

Ctrl-C stops Vault and PostgreSQL and removes their data.
`, v.Addr, shellQuote(pg.SuperURL()))
	<-ctx.Done()
	fmt.Println("\nstopping")
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
