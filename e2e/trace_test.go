package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// TestNoSecretsAtTraceLevel runs every operation through Vault with Vault
// and the plugin both logging at trace, then greps Vault's log (which
// carries the plugin's lines), and PostgreSQL's statement log, for every
// password the test saw, in every form a log could write it in. The
// server log may hold SCRAM verifiers: the plugin hashes on the client so
// that only they, never a password, reach the server; Vault's log holds
// neither.
func TestNoSecretsAtTraceLevel(t *testing.T) {
	needAll(t)
	a := superPool(t)
	ctx := ctxT(t)
	sfx := fmt.Sprintf("%d", time.Now().UnixNano())
	root, static := "trace-admin-"+sfx, "trace-static-"+sfx
	rootPw := `Tr@ce/#{}%?&'\pw-` + sfx
	// Created with statement logging off for this session, so that the
	// only way a root password can reach the server log is the plugin.
	setup, err := pg.Connect(ctx, pg.SuperUser, pg.SuperPassword, "")
	must(t, err)
	for _, sql := range []string{
		"SET log_statement = 'none'",
		fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", pgx.Identifier{root}.Sanitize(), strings.ReplaceAll(rootPw, "'", "''")),
		fmt.Sprintf("CREATE ROLE %s LOGIN", pgx.Identifier{static}.Sanitize()),
	} {
		if _, err := setup.Exec(ctx, sql); err != nil {
			t.Fatalf("setting up roles: %v", err)
		}
	}
	setup.Close(context.Background())
	// Registered first, so it runs after Vault has stopped.
	t.Cleanup(func() {
		for _, r := range []string{static, root} {
			_, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize())
		}
	})

	traced := *plugin
	traced.Env = append(append([]string{}, plugin.Env...), "PGVAULT_LOG_LEVEL=trace")
	v, err := vaulttest.StartDevLogLevel(ctx, vaultBin, t.TempDir(), &traced, "trace")
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault log tail:\n%s", v.LogTail())
		}
		v.Stop()
	})
	c := v.Client
	must(t, vaulttest.Register(c, &traced))
	must(t, vaulttest.EnableDatabase(c, "database"))
	must(t, vaulttest.Configure(c, "database", "pg", &traced, rootConfig(root, rootPw)))

	type secret struct{ what, user, password, verifier string }
	var secrets []secret
	verifierOf := func(user string) string {
		var v string
		must(t, a.QueryRow(ctx, "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = $1", user).Scan(&v))
		return v
	}
	secrets = append(secrets, secret{"the first root password", root, rootPw, verifierOf(root)})

	write(t, c, "database/rotate-root/pg", nil)
	if err := pg.CanLogin(ctx, root, rootPw); err == nil {
		t.Fatal("the old root password still works after rotate-root")
	}
	// The new root password is Vault's alone; its verifier is checked.
	secrets = append(secrets, secret{"the rotated root password", root, "", verifierOf(root)})

	write(t, c, "database/roles/app", map[string]interface{}{
		"db_name": "pg", "creation_statements": []string{creation}, "default_ttl": "1h", "max_ttl": "24h",
	})
	var leases, dynUsers []string
	for i := 0; i < 2; i++ {
		sec := read(t, c, "database/creds/app")
		user, pw := creds(sec)
		if err := pg.CanLogin(ctx, user, pw); err != nil {
			t.Fatalf("dynamic credentials: %v", err)
		}
		leases, dynUsers = append(leases, sec.LeaseID), append(dynUsers, user)
		secrets = append(secrets, secret{"a dynamic password", user, pw, verifierOf(user)})
	}
	if _, err := c.Sys().Renew(leases[0], 7200); err != nil {
		t.Fatalf("renew: %v", err)
	}

	write(t, c, "database/static-roles/static", map[string]interface{}{
		"db_name": "pg", "username": static, "rotation_period": "24h",
	})
	_, pw1 := creds(read(t, c, "database/static-creds/static"))
	secrets = append(secrets, secret{"a static password", static, pw1, verifierOf(static)})
	write(t, c, "database/rotate-role/static", nil)
	_, pw2 := creds(read(t, c, "database/static-creds/static"))
	if pw2 == pw1 {
		t.Fatal("rotate-role did not change the password")
	}
	if err := pg.CanLogin(ctx, static, pw2); err != nil {
		t.Fatalf("rotated static password: %v", err)
	}
	secrets = append(secrets, secret{"a rotated static password", static, pw2, verifierOf(static)})

	for i, l := range leases {
		must(t, c.Sys().Revoke(l))
		if roleExists(t, a, dynUsers[i]) {
			t.Fatalf("role %q survived revocation", dynUsers[i])
		}
	}
	// Vault writes its log as the requests run; stop it so that every
	// line, the plugin's included, is on disk.
	v.Stop()

	vaultLog, err := os.ReadFile(v.LogFile)
	must(t, err)
	serverLog, err := pg.ReadLog()
	must(t, err)
	// The grep must have something to look at: trace lines from Vault,
	// the plugin's debug lines relayed by Vault, and the plugin's
	// statements in the server log.
	for _, want := range []string{"[TRACE]", "created user", dynUsers[0]} {
		if !strings.Contains(string(vaultLog), want) {
			t.Fatalf("Vault's log lacks %q: the logs are not at the level this test needs", want)
		}
	}
	if !strings.Contains(serverLog, dynUsers[0]) || !strings.Contains(serverLog, static) {
		t.Fatal("the server log lacks the plugin's statements: is log_statement = 'all'?")
	}
	t.Logf("grepping %d bytes of Vault's log and %d of the server's for %d secrets", len(vaultLog), len(serverLog), len(secrets))
	logs := []struct {
		name, text string
		verifiers  bool // whether verifiers must be absent too
	}{
		{"Vault's log (with the plugin's)", string(vaultLog), true},
		{"PostgreSQL's statement log", serverLog, false},
	}
	for _, s := range secrets {
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
