package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// TestNoSecretsAtTraceLevel runs every operation through Vault with Vault
// and the plugin both logging at trace, and a file audit device on from
// before the connection is configured, then greps Vault's log (which
// carries the plugin's lines), its audit log, and PostgreSQL's statement
// log, for every password the test saw, in every form a log could write it
// in. The server log may hold SCRAM verifiers: the plugin hashes on the
// client so that only they, never a password, reach the server; Vault's
// logs hold neither.
func TestNoSecretsAtTraceLevel(t *testing.T) {
	needAll(t)
	tr := &traceRun{t: t, a: superPool(t), ctx: ctxT(t)}
	sfx := fmt.Sprintf("%d", time.Now().UnixNano())
	root, static := "trace-admin-"+sfx, "trace-static-"+sfx
	rootPw := `Tr@ce/#{}%?&'\pw-` + sfx
	tr.createRoles(root, rootPw, static)

	traced := *plugin
	traced.Env = append(append([]string{}, plugin.Env...), "PGVAULT_LOG_LEVEL=trace")
	// The audit device is on before the root password is written.
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v, c := devVaultAt(t, &traced, "trace", rootConfig(root, rootPw), func(c *api.Client) {
		must(t, c.Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": auditLog}}))
	})
	tr.c = c
	tr.saw("the first root password", root, rootPw)
	tr.rotateRoot(root, rootPw)
	leases, dynUsers := tr.dynamic()
	tr.rotateStatic(static)
	for i, l := range leases {
		must(t, c.Sys().Revoke(l))
		if roleExists(t, tr.a, dynUsers[i]) {
			t.Fatalf("role %q survived revocation", dynUsers[i])
		}
	}
	// Vault writes its log as the requests run; stop it so that every
	// line, the plugin's included, is on disk.
	v.Stop()
	tr.grepLogs(v.LogFile, auditLog, dynUsers[0], static)
}

// traceRun is what TestNoSecretsAtTraceLevel's steps share: the secrets
// it saw, to grep the logs for at the end.
type traceRun struct {
	t       *testing.T
	a       *pgxpool.Pool
	c       *api.Client
	ctx     context.Context
	secrets []traceSecret
}

// traceSecret is a password the test saw (empty for one only Vault knows)
// and the verifier PostgreSQL stored for it.
type traceSecret struct{ what, user, password, verifier string }

// saw records user's password and the verifier the server holds now.
func (tr *traceRun) saw(what, user, password string) {
	var v string
	must(tr.t, tr.a.QueryRow(tr.ctx, "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = $1", user).Scan(&v))
	tr.secrets = append(tr.secrets, traceSecret{what, user, password, v})
}

// createRoles creates the root and static roles with statement logging off
// for this session, so that the only way a root password can reach the
// server log is the plugin; they are dropped after Vault has stopped.
func (tr *traceRun) createRoles(root, rootPw, static string) {
	t := tr.t
	setup, err := pg.Connect(tr.ctx, pg.SuperUser, pg.SuperPassword, "")
	must(t, err)
	for _, sql := range []string{
		"SET log_statement = 'none'",
		fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD %s", render.QuoteIdent(root), render.QuoteLiteral(rootPw)),
		fmt.Sprintf("CREATE ROLE %s LOGIN", render.QuoteIdent(static)),
	} {
		if _, err := setup.Exec(tr.ctx, sql); err != nil {
			t.Fatalf("setting up roles: %v", err)
		}
	}
	setup.Close(context.Background())
	// Registered before Vault starts, so it runs after Vault has stopped.
	t.Cleanup(func() {
		for _, r := range []string{static, root} {
			_, _ = tr.a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(r))
		}
	})
}

// rotateRoot rotates the root credential and checks the old password no
// longer works; the new one is Vault's alone, so only its verifier is
// recorded.
func (tr *traceRun) rotateRoot(root, rootPw string) {
	write(tr.t, tr.c, "database/rotate-root/pg", nil)
	if err := pg.CanLogin(tr.ctx, root, rootPw); err == nil {
		tr.t.Fatal("the old root password still works after rotate-root")
	}
	tr.saw("the rotated root password", root, "")
}

// dynamic issues two dynamic credentials that log in and renews the first
// lease; it returns the leases and the users.
func (tr *traceRun) dynamic() (leases, users []string) {
	t, c := tr.t, tr.c
	write(t, c, "database/roles/app", map[string]interface{}{
		"db_name": "pg", "creation_statements": []string{creation}, "default_ttl": "1h", "max_ttl": "24h",
	})
	for i := 0; i < 2; i++ {
		sec := read(t, c, "database/creds/app")
		user, pw := creds(sec)
		if err := pg.CanLogin(tr.ctx, user, pw); err != nil {
			t.Fatalf("dynamic credentials: %v", err)
		}
		leases, users = append(leases, sec.LeaseID), append(users, user)
		tr.saw("a dynamic password", user, pw)
	}
	if _, err := c.Sys().Renew(leases[0], 7200); err != nil {
		t.Fatalf("renew: %v", err)
	}
	return leases, users
}

// rotateStatic makes static a static role, rotates it, and checks the
// rotated password logs in.
func (tr *traceRun) rotateStatic(static string) {
	t, c := tr.t, tr.c
	write(t, c, "database/static-roles/static", map[string]interface{}{
		"db_name": "pg", "username": static, "rotation_period": "24h",
	})
	_, pw1 := creds(read(t, c, "database/static-creds/static"))
	tr.saw("a static password", static, pw1)
	write(t, c, "database/rotate-role/static", nil)
	_, pw2 := creds(read(t, c, "database/static-creds/static"))
	if pw2 == pw1 {
		t.Fatal("rotate-role did not change the password")
	}
	if err := pg.CanLogin(tr.ctx, static, pw2); err != nil {
		t.Fatalf("rotated static password: %v", err)
	}
	tr.saw("a rotated static password", static, pw2)
}

// grepLogs checks that the logs hold what the grep needs (trace lines, the
// plugin's lines, the audited requests, the plugin's statements for dynUser
// and static), then greps Vault's log and audit log for every form of every
// secret and verifier, and the server's log for every form of every
// password.
func (tr *traceRun) grepLogs(vaultLogFile, auditLogFile, dynUser, static string) {
	t := tr.t
	vaultLog, err := os.ReadFile(vaultLogFile)
	must(t, err)
	auditLog, err := os.ReadFile(auditLogFile)
	must(t, err)
	serverLog, err := pg.ReadLog()
	must(t, err)
	// The grep must have something to look at: trace lines from Vault,
	// the plugin's debug lines relayed by Vault, and the plugin's
	// statements in the server log.
	for _, want := range []string{"[TRACE]", "created user", dynUser} {
		if !strings.Contains(string(vaultLog), want) {
			t.Fatalf("Vault's log lacks %q: the logs are not at the level this test needs", want)
		}
	}
	// The audit device saw the root password written and every password
	// returned (Vault writes them HMAC-ed).
	for _, want := range []string{"database/config/pg", "database/rotate-root/pg", "database/creds/app", "database/static-creds/static"} {
		if !strings.Contains(string(auditLog), want) {
			t.Fatalf("the audit log lacks %q", want)
		}
	}
	if !strings.Contains(serverLog, dynUser) || !strings.Contains(serverLog, static) {
		t.Fatal("the server log lacks the plugin's statements: is log_statement = 'all'?")
	}
	t.Logf("grepping %d bytes of Vault's log, %d of its audit log and %d of the server's for %d secrets", len(vaultLog), len(auditLog), len(serverLog), len(tr.secrets))
	logs := []struct {
		name, text string
		verifiers  bool // whether verifiers must be absent too
	}{
		{"Vault's log (with the plugin's)", string(vaultLog), true},
		{"Vault's audit log", string(auditLog), true},
		{"PostgreSQL's statement log", serverLog, false},
	}
	for _, s := range tr.secrets {
		for _, l := range logs {
			var forms []string
			if s.password != "" {
				forms = append(forms, passwordForms(s.user, s.password)...)
			}
			if l.verifiers {
				forms = append(forms, verifierForms(s.verifier)...)
			}
			for _, f := range forms {
				if strings.Contains(l.text, f) {
					t.Errorf("%s holds %s of %q (or its hash)", l.name, s.what, s.user)
					break
				}
			}
		}
	}
}

// passwordForms is a password as a log could write it: as is, quoted for
// SQL, escaped for a URL or for JSON, and as PostgreSQL's md5 hash.
func passwordForms(user, pw string) []string {
	js, _ := json.Marshal(pw)
	sum := md5.Sum([]byte(pw + user))
	return []string{
		pw,
		strings.ReplaceAll(pw, "'", "''"),
		url.QueryEscape(pw),
		url.PathEscape(pw),
		url.UserPassword("u", pw).String()[2:],
		string(js[1 : len(js)-1]),
		"md5" + hex.EncodeToString(sum[:]),
	}
}

// verifierForms are the secret parts of a verifier: the whole of it, and
// for SCRAM (SCRAM-SHA-256$iter:salt$StoredKey:ServerKey) each key.
func verifierForms(v string) []string {
	if v == "" {
		return nil
	}
	forms := []string{v}
	if i := strings.LastIndexByte(v, '$'); strings.HasPrefix(v, "SCRAM-") && i > 0 {
		forms = append(forms, strings.Split(v[i+1:], ":")...)
	}
	return forms
}
