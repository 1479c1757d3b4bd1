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

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

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

// demo is what the steps share once the sandbox is up.
type demo struct {
	c      *api.Client
	pg     *pgtest.Server
	plugin *vaulttest.Plugin
	admin  *pgxpool.Pool // the superuser's pool, opened after the first login
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
	d := &demo{c: sb.Client, pg: sb.PG, plugin: sb.Plugin}
	if err := d.configure(); err != nil {
		return err
	}
	if dev {
		return sandbox(ctx, sb.Vault, sb.PG)
	}

	sec, pw, err := d.issueAndUse(ctx)
	if err != nil {
		return err
	}
	if d.admin, err = d.pg.Pool(ctx); err != nil {
		return err
	}
	defer d.admin.Close()
	if err := d.renewAndRevoke(ctx, sec, pw); err != nil {
		return err
	}
	if err := certificates(ctx, d.c, d.pg, d.admin, sb.Dir); err != nil {
		return err
	}
	if err := d.staticRole(ctx); err != nil {
		return err
	}
	if err := d.rotateRoot(ctx); err != nil {
		return err
	}
	fmt.Println("demo passed; cleaning up Vault and PostgreSQL")
	return nil
}

// configure points database/config/pg at the server as its superuser and
// creates the read-only role database/roles/app.
func (d *demo) configure() error {
	c, pg := d.c, d.pg
	if err := vaulttest.Configure(c, "database", "pg", d.plugin, map[string]interface{}{
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
	return nil
}

// issueAndUse reads dynamic credentials, logs in with them and shows a
// wrong password refused; it returns the lease and the password.
func (d *demo) issueAndUse(ctx context.Context) (*api.Secret, string, error) {
	sec, err := d.c.Logical().Read("database/creds/app")
	if err != nil {
		return nil, "", fmt.Errorf("reading credentials: %w", err)
	}
	user, pw := sec.Data["username"].(string), sec.Data["password"].(string)
	step("vault read database/creds/app → user %s, lease %s", user, shortLease(sec.LeaseID))
	conn, err := d.pg.Connect(ctx, user, pw, "")
	if err != nil {
		return nil, "", fmt.Errorf("logging in with the dynamic credentials: %w", err)
	}
	var who string
	var tables int
	if err := conn.QueryRow(ctx, "SELECT current_user, (SELECT count(*) FROM pg_class)").Scan(&who, &tables); err != nil {
		return nil, "", err
	}
	conn.Close(ctx)
	step("logged in as %s and ran a query (pg_class has %d rows): the credentials work", who, tables)
	if err := d.pg.CanLogin(ctx, user, pw+"x"); err == nil {
		return nil, "", fmt.Errorf("a wrong password logged in")
	}
	step("a wrong password is refused: SCRAM authentication is real")
	return sec, pw, nil
}

// renewAndRevoke renews the lease (VALID UNTIL moves) and revokes it with
// a session open (the role is dropped and the session ended).
func (d *demo) renewAndRevoke(ctx context.Context, sec *api.Secret, pw string) error {
	c, admin := d.c, d.admin
	user := sec.Data["username"].(string)
	before, err := pgtest.ValidUntil(ctx, admin, user)
	if err != nil {
		return err
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := c.Sys().Renew(sec.LeaseID, 7200); err != nil {
		return fmt.Errorf("renewing: %w", err)
	}
	after, err := pgtest.ValidUntil(ctx, admin, user)
	if err != nil {
		return err
	}
	if !after.After(before) {
		return fmt.Errorf("renewal did not move VALID UNTIL (%s → %s)", before, after)
	}
	step("renewed the lease: VALID UNTIL moved from %s to %s", before.Format(time.TimeOnly), after.Format(time.TimeOnly))

	session, err := d.pg.Connect(ctx, user, pw, "")
	if err != nil {
		return err
	}
	defer session.Close(context.Background())
	if err := c.Sys().Revoke(sec.LeaseID); err != nil {
		return fmt.Errorf("revoking: %w", err)
	}
	if exists, err := pgtest.RoleExists(ctx, admin, user); err != nil || exists {
		return fmt.Errorf("role %s still in pg_roles after revocation (%v)", user, err)
	}
	if err := session.Ping(ctx); err == nil {
		return fmt.Errorf("the revoked user's open session still works")
	}
	step("revoked the lease: %s is gone from pg_roles and its open session was ended", user)
	return nil
}

// staticRole hands an existing role to Vault and rotates its password.
func (d *demo) staticRole(ctx context.Context) error {
	c, pg := d.c, d.pg
	if _, err := d.admin.Exec(ctx, `CREATE ROLE "demo-static" LOGIN PASSWORD 'set-by-a-human'`); err != nil {
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
	return nil
}

// rotateRoot rotates the root credential of an admin that is not the
// cluster superuser, then issues and revokes with it.
func (d *demo) rotateRoot(ctx context.Context) error {
	c, pg := d.c, d.pg
	rootPw := "Initial@/#{}%?&'pw"
	if _, err := d.admin.Exec(ctx, `CREATE ROLE "vault-admin" LOGIN CREATEROLE PASSWORD 'Initial@/#{}%?&''pw'`); err != nil {
		return err
	}
	if err := vaulttest.Configure(c, "database", "managed", d.plugin, map[string]interface{}{
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
	sec, err := c.Logical().Read("database/creds/managed-app")
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
