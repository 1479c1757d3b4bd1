package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// configWith is a config function: baseConfig with the keys of set.
func configWith(set map[string]interface{}) func() map[string]interface{} {
	return func() map[string]interface{} { return mergeConfig(set) }
}

// initializeCases are configurations for Initialize, each with the error it
// expects ("" for success). The configurations are functions: pg is set
// only once TestMain runs.
var initializeCases = []struct {
	name    string
	config  func() map[string]interface{}
	wantErr string // substring; "" means success
}{
	{"superuser with special-character password", baseConfig, ""},
	{"numbers as strings and floats", configWith(map[string]interface{}{
		"max_open_connections": "7", "max_idle_connections": float64(3), "max_connection_lifetime": "30s"}), ""},
	{"lifetime as seconds", configWith(map[string]interface{}{"max_connection_lifetime": float64(60)}), ""},
	{"keyword/value DSN", func() map[string]interface{} {
		return mergeConfig(map[string]interface{}{"connection_url": fmt.Sprintf(
			"host=%s port=%d dbname=postgres user={{username}} password={{password}} sslmode=%s sslrootcert=%s", pg.Host, pg.Port, pg.SSLMode, pg.CAFile)})
	}, ""},
	{"several hosts, the first one down", func() map[string]interface{} {
		return mergeConfig(map[string]interface{}{"connection_url": strings.Replace(pg.TemplateURL(""),
			fmt.Sprintf("@%s:%d", pg.Host, pg.Port), fmt.Sprintf("@127.0.0.1:1,%s:%d", pg.Host, pg.Port), 1)})
	}, ""},
	{"unknown keys are only logged", configWith(map[string]interface{}{"some_future_key": true}), ""},
	{"missing connection_url", func() map[string]interface{} {
		c := baseConfig()
		delete(c, "connection_url")
		return c
	}, "connection_url is required"},
	{"wrong root password", configWith(map[string]interface{}{"password": "not-the-password"}), "verifying connection"},
	{"gcp iam", configWith(map[string]interface{}{"auth_type": "gcp_iam"}), `auth_type "gcp_iam" is not supported`},
	{"bad password_authentication", configWith(map[string]interface{}{"password_authentication": "plain"}), "password_authentication"},
	{"certificate without key", configWith(map[string]interface{}{"tls_certificate": "-----BEGIN CERTIFICATE-----"}), "must be set together"},
	{"broken username template", configWith(map[string]interface{}{"username_template": "{{ .Nope"}), "username_template"},
	{"username template too long", configWith(map[string]interface{}{"username_template": "{{ random 70 }}"}), "at most 63 bytes"},
	{"negative pool size", configWith(map[string]interface{}{"max_open_connections": -1}), "max_open_connections"},
	{"not a duration", configWith(map[string]interface{}{"max_connection_lifetime": "soon"}), "max_connection_lifetime"},
}

func TestInitialize(t *testing.T) {
	needPG(t)
	for _, tc := range initializeCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newPostgres(hclog.NewNullLogger())
			defer db.Close()
			cfg := tc.config()
			resp, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Initialize: %v", err)
				}
				assertConfigRoundTrips(t, cfg, resp.Config)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), pg.SuperPassword) {
				t.Fatalf("error leaks the root password: %v", err)
			}
		})
	}
}

// assertConfigRoundTrips checks that Initialize returned the config it was
// given, advertised the credential types, and that what it returned
// initializes a fresh instance.
func assertConfigRoundTrips(t *testing.T, cfg, returned map[string]interface{}) {
	t.Helper()
	for k, v := range cfg {
		if fmt.Sprint(returned[k]) != fmt.Sprint(v) {
			t.Errorf("returned config[%q] = %v, want %v (the config must round-trip)", k, returned[k], v)
		}
	}
	if _, ok := returned[dbplugin.SupportedCredentialTypesKey]; !ok {
		t.Errorf("supported credential types not advertised")
	}
	again := newPostgres(hclog.NewNullLogger())
	defer again.Close()
	if _, err := again.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: returned, VerifyConnection: true}); err != nil {
		t.Fatalf("re-Initialize with the returned config: %v", err)
	}
}

// TestConnectionErrorNamesURLUser: with the user only in connection_url (no
// username parameter), a failed connection names that user, and not the
// password.
func TestConnectionErrorNamesURLUser(t *testing.T) {
	needPG(t)
	wrong := "wrong-" + randSuffix()
	db := newPostgres(hclog.NewNullLogger())
	defer db.Close()
	_, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: map[string]interface{}{"connection_url": pg.URL(pg.SuperUser, wrong, "")}, VerifyConnection: true})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("as %q", pg.SuperUser)) {
		t.Fatalf("error = %v, want one naming the user %q", err, pg.SuperUser)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Fatalf("error holds the password: %v", err)
	}
}

func TestInitializeTLS(t *testing.T) {
	needPG(t)
	if pg.CAPEM == "" {
		t.Skip("server has no test CA (PG_URL or Docker)")
	}
	url := fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=verify-full", pg.Port)
	t.Run("inline tls_ca verifies the server", func(t *testing.T) {
		db := newDB(t, map[string]interface{}{"connection_url": url, "tls_ca": pg.CAPEM})
		var ssl bool
		conn, err := db.state.Load().pool.Acquire(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if err := conn.QueryRow(testCtx(t), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
			t.Fatalf("connection is not TLS: ssl=%v err=%v", ssl, err)
		}
	})
	t.Run("client certificate authenticates the admin", func(t *testing.T) {
		a := admin(t)
		execSQL(t, a, `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '`+pgtest.CertUser+`') THEN CREATE ROLE `+pgtest.CertUser+` LOGIN CREATEROLE; END IF; END $$`)
		cert, key, err := pg.ClientCert(pgtest.CertUser)
		if err != nil {
			t.Fatal(err)
		}
		certURL := fmt.Sprintf("postgres://{{username}}@127.0.0.1:%d/postgres?sslmode=verify-full", pg.Port)
		cfg := map[string]interface{}{"connection_url": certURL, "username": pgtest.CertUser, "password": "",
			"tls_ca": pg.CAPEM, "tls_certificate": cert, "private_key": key}
		db := newDB(t, cfg)
		req := newUserReq(createStmt)
		resp := dbtesting.AssertNewUser(t, db, req)
		assertLogin(t, resp.Username, req.Password)
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: resp.Username})

		// Without the certificate the same user is rejected.
		noCert := newPostgres(hclog.NewNullLogger())
		defer noCert.Close()
		delete(cfg, "tls_certificate")
		delete(cfg, "private_key")
		for k, v := range baseConfig() {
			if _, ok := cfg[k]; !ok {
				cfg[k] = v
			}
		}
		if _, err := noCert.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err == nil {
			t.Fatal("the certificate-only user connected without a certificate")
		}
	})
	t.Run("wrong CA is refused", func(t *testing.T) {
		other, _, _ := unrelatedCert(t)
		db := newPostgres(hclog.NewNullLogger())
		defer db.Close()
		cfg := baseConfig()
		cfg["connection_url"], cfg["tls_ca"] = url, other
		if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err == nil {
			t.Fatal("a server certificate from an unknown CA was accepted")
		}
	})
}

func TestNewUser(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	execSQL(t, a, "CREATE TABLE IF NOT EXISTS newuser_orders (id int)")

	cases := []struct {
		name  string
		stmts []string
		check func(t *testing.T, user string)
	}{
		{"plain create with grant", []string{createStmt, `GRANT SELECT ON newuser_orders TO "{{name}}";`}, func(t *testing.T, user string) {
			var ok bool
			if err := a.QueryRow(testCtx(t), "SELECT has_table_privilege($1, 'newuser_orders', 'SELECT')", user).Scan(&ok); err != nil || !ok {
				t.Fatalf("grant missing: %v %v", ok, err)
			}
		}},
		{"DO block with END in lower case and semicolons", []string{`DO $$
begin
  if not exists (select 1 from pg_roles where rolname = '{{name}}') then
    create role "{{name}}" with login password '{{password}}' valid until '{{expiration}}';
  end if;
end
$$;`, `GRANT SELECT ON newuser_orders TO "{{name}}"; -- comment; with; semicolons`}, nil},
		{"semicolons inside literals and comments", []string{createStmt + `
/* a comment; with {{name}} inside; */
COMMENT ON ROLE "{{name}}" IS 'issued by vault; do not edit; it''s fine';`}, func(t *testing.T, user string) {
			if c, _ := roleComment(t, a, user); c != "issued by vault; do not edit; it's fine" {
				t.Fatalf("comment = %q", c)
			}
		}},
		{"function body with a nested dollar tag", []string{createStmt, `CREATE OR REPLACE FUNCTION pg_temp.f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END; $fn$;`}, nil},
		{"bare placeholders are quoted", []string{`CREATE ROLE {{name}} WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}};`}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := newUserReq(tc.stmts...)
			resp := dbtesting.AssertNewUser(t, db, req)
			assertLogin(t, resp.Username, req.Password)
			until := validUntil(t, a, resp.Username)
			if d := until.Sub(req.Expiration); d > time.Second || d < -time.Second {
				t.Fatalf("rolvaliduntil = %s, want %s", until, req.Expiration)
			}
			if tc.check != nil {
				tc.check(t, resp.Username)
			}
		})
	}
}

func TestNewUserQuotesValues(t *testing.T) {
	db := newDB(t, map[string]interface{}{
		"username_template": `{{ printf "v-%s\"x'y-%s" (.RoleName | truncate 8) (random 8) }}`,
	})
	req := newUserReq(createStmt, `COMMENT ON ROLE "{{name}}" IS 'for {{name}}';`)
	req.Password = `it's"a;pw\` + randSuffix()
	resp := dbtesting.AssertNewUser(t, db, req)
	// Quotes in a generated name are mapped to _ (see safeUsername); the
	// password keeps every character.
	if !strings.Contains(resp.Username, `_x_y`) {
		t.Fatalf("username %q: quotes not mapped to _", resp.Username)
	}
	assertLogin(t, resp.Username, req.Password)
}

func TestNewUserErrors(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	cases := []struct {
		name    string
		stmts   []string
		wantErr string
	}{
		{"no statements", nil, "no creation_statements"},
		{"blank statements", []string{"  ", "\n"}, "no creation_statements"},
		{"unknown placeholder", []string{`CREATE ROLE "{{nmae}}";`}, "unknown placeholder {{nmae}}"},
		{"failing second statement leaves no role", []string{createStmt, `GRANT SELECT ON no_such_table TO "{{name}}";`}, "no_such_table"},
		{"failing statement inside a DO block leaves no role", []string{createStmt, `DO $$ BEGIN RAISE EXCEPTION 'boom'; END $$;`}, "boom"},
		{"error quoting the password is redacted", []string{createStmt, `DO $$ BEGIN RAISE EXCEPTION 'pw is %', {{password}}; END $$;`}, "pw is [redacted]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := newUserReq(tc.stmts...)
			req.UsernameConfig.RoleName = "err" + randSuffix()
			_, err := db.NewUser(testCtx(t), req)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), req.Password) {
				t.Fatalf("error leaks the password: %v", err)
			}
			var n int
			if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", "v-test-"+req.UsernameConfig.RoleName[:8]+"%").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d roles left behind after a failed creation", n)
			}
		})
	}
}

func TestNewUserRollbackStatements(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	execSQL(t, a, "CREATE TABLE IF NOT EXISTS rollback_log (who text)")
	// The rollback statement runs after the failed creation was undone; it
	// records the attempt, which is what rollback_statements are for.
	req := newUserReq(createStmt, `SELECT 1/0;`)
	req.UsernameConfig.RoleName = "rb" + randSuffix()[:6]
	req.RollbackStatements = dbplugin.Statements{Commands: []string{`INSERT INTO rollback_log VALUES ('{{name}}'); DROP ROLE IF EXISTS "{{name}}";`}}
	if _, err := db.NewUser(testCtx(t), req); err == nil {
		t.Fatal("creation should fail")
	}
	var n int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM rollback_log WHERE who LIKE $1", "v-test-"+req.UsernameConfig.RoleName+"-%").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rollback statements did not run: n=%d err=%v", n, err)
	}
}

func TestPasswordAuthentication(t *testing.T) {
	needPG(t)
	a := admin(t)
	cases := []struct {
		mode      string
		stored    string // prefix of pg_authid.rolpassword
		plaintext bool   // whether the plaintext may reach the server
	}{
		{"auto", "SCRAM-SHA-256$", false},
		{"scram-sha-256", "SCRAM-SHA-256$", false},
		{"password", "SCRAM-SHA-256$", true},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			db := newDB(t, map[string]interface{}{"password_authentication": tc.mode})
			req := newUserReq(createStmt)
			req.Password = "Zq9-" + randSuffix() + "-plain"
			resp := dbtesting.AssertNewUser(t, db, req)
			assertLogin(t, resp.Username, req.Password)
			var stored string
			if err := a.QueryRow(testCtx(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", resp.Username).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(stored, tc.stored) {
				t.Fatalf("stored password %q…, want prefix %q", stored[:10], tc.stored)
			}
			// Rotate too: the new password must also stay off the wire.
			newPw := "Rt7-" + randSuffix() + "-plain"
			dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: resp.Username, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
			assertLogin(t, resp.Username, newPw)
			if pg.LogFile == "" {
				return
			}
			log, err := pg.ReadLog()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(log, resp.Username) {
				t.Fatalf("server log does not show statements for %q: is log_statement on?", resp.Username)
			}
			leaked := strings.Contains(log, req.Password) || strings.Contains(log, newPw)
			if leaked != tc.plaintext {
				t.Fatalf("plaintext password in server log = %v, want %v", leaked, tc.plaintext)
			}
		})
	}
}

// TestPasswordAuthenticationMD5Server: with password_encryption=md5 for the
// plugin's sessions, auto still sends a SCRAM verifier, on creation and on
// rotation, so no md5 hash (which alone logs in) reaches the server or its
// log; md5 stays available when asked for by name.
func TestPasswordAuthenticationMD5Server(t *testing.T) {
	needPG(t)
	a := admin(t)
	// A role-level password_encryption is what a fresh session of this
	// admin resets to; the pg_hba here is SCRAM-only, so md5 is checked by
	// its stored form.
	execSQL(t, a, `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'md5admin') THEN CREATE ROLE md5admin LOGIN CREATEROLE PASSWORD 'md5admin-pw'; END IF; END $$`)
	execSQL(t, a, `ALTER ROLE md5admin SET password_encryption = 'md5'`)
	stored := func(t *testing.T, user string) string {
		var s string
		if err := a.QueryRow(testCtx(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("auto", func(t *testing.T) {
		db := newDB(t, map[string]interface{}{"username": "md5admin", "password": "md5admin-pw"})
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		if s := stored(t, user); !strings.HasPrefix(s, "SCRAM-SHA-256$") {
			t.Fatalf("auto stored %.3q…, want a SCRAM-SHA-256 verifier", s)
		}
		assertLogin(t, user, req.Password)
		newPw := "Rt8-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
		if s := stored(t, user); !strings.HasPrefix(s, "SCRAM-SHA-256$") {
			t.Fatalf("auto rotation stored %.3q…, want a SCRAM-SHA-256 verifier", s)
		}
		assertLogin(t, user, newPw)
		if log, err := pg.ReadLog(); err == nil {
			for _, pw := range []string{req.Password, newPw} {
				if h, _ := passwordVerifier(passwordAuthMD5, 0, user, pw); strings.Contains(log, h) {
					t.Fatal("the server log holds the md5 hash, which alone logs in")
				}
			}
		}
	})
	t.Run("md5", func(t *testing.T) {
		db := newDB(t, map[string]interface{}{"username": "md5admin", "password": "md5admin-pw", "password_authentication": "md5"})
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		if want, _ := passwordVerifier(passwordAuthMD5, 0, user, req.Password); stored(t, user) != want {
			t.Fatalf("md5 mode stored %.3q…, want the md5 verifier", stored(t, user))
		}
	})
}

// TestSCRAMIterationsFromServer: on PostgreSQL 16+, client-side SCRAM uses
// the server's scram_iterations as a fresh session of the plugin's user has
// it (here a role setting of 8192), not what a previous request SET on a
// pooled connection, and the user logs in with it.
func TestSCRAMIterationsFromServer(t *testing.T) {
	needPG(t)
	if pg.VersionNum < 160000 {
		t.Skipf("scram_iterations is fixed at 4096 before PostgreSQL 16 (server %d)", pg.VersionNum)
	}
	a := admin(t)
	execSQL(t, a, `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iteradmin') THEN CREATE ROLE iteradmin LOGIN CREATEROLE PASSWORD 'iteradmin-pw'; END IF; END $$`)
	execSQL(t, a, `ALTER ROLE iteradmin SET scram_iterations = 8192`)
	iterAdmin := map[string]interface{}{"username": "iteradmin", "password": "iteradmin-pw"}
	assertIterations := func(t *testing.T, db *Postgres) {
		t.Helper()
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		var stored string
		if err := a.QueryRow(testCtx(t), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(stored, "SCRAM-SHA-256$8192:") {
			t.Fatalf("stored verifier %.19q…, want SCRAM-SHA-256$8192:", stored)
		}
		assertLogin(t, user, req.Password)
	}
	for _, mode := range []string{"auto", "scram-sha-256"} {
		t.Run(mode, func(t *testing.T) {
			assertIterations(t, newDB(t, mergeMaps(iterAdmin, map[string]interface{}{"password_authentication": mode})))
		})
	}
	t.Run("first read on a session that SET it", func(t *testing.T) {
		// Without verify_connection the value is read on first use, on a
		// pooled connection a previous request left with another value.
		logger, _ := testLogger(t, hclog.Warn)
		db := newPostgres(logger)
		t.Cleanup(func() { _ = db.Close() })
		cfg := mergeConfig(mergeMaps(iterAdmin, map[string]interface{}{"max_open_connections": 1}))
		if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg}); err != nil {
			t.Fatal(err)
		}
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: "iter-nobody",
			Statements: dbplugin.Statements{Commands: []string{`SET scram_iterations = 1024; DROP ROLE IF EXISTS "{{name}}";`}}})
		var now string
		if err := db.state.Load().pool.QueryRow(testCtx(t), "SELECT current_setting('scram_iterations')").Scan(&now); err != nil || now != "1024" {
			t.Fatalf("the pooled session's scram_iterations = %q (%v), want the 1024 the revocation SET", now, err)
		}
		assertIterations(t, db)
	})
}

// mergeMaps returns the keys of a and then b in a new map.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	m := make(map[string]interface{}, len(a)+len(b))
	for _, x := range []map[string]interface{}{a, b} {
		for k, v := range x {
			m[k] = v
		}
	}
	return m
}

// TestBackslashWithNonStandardStrings: an admin whose sessions default to
// standard_conforming_strings=off must still store a password with a
// backslash exactly (plaintext mode sends it inside '…').
func TestBackslashWithNonStandardStrings(t *testing.T) {
	needPG(t)
	a := admin(t)
	root := "scsoff-" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'scs-pw'`, render.QuoteIdent(root)))
	execSQL(t, a, fmt.Sprintf(`ALTER ROLE %s SET standard_conforming_strings = off`, render.QuoteIdent(root)))
	db := newDB(t, map[string]interface{}{"username": root, "password": "scs-pw", "password_authentication": "password"})
	req := newUserReq(createStmt)
	req.Password = `back\slash\b-` + randSuffix()
	resp := dbtesting.AssertNewUser(t, db, req)
	assertLogin(t, resp.Username, req.Password)
}

func TestNonASCIIPassword(t *testing.T) {
	db := newDB(t, nil)
	req := newUserReq(createStmt)
	// A non-ASCII space and characters NFC and NFKC agree on: pgx's client
	// normalizes with NFC (precis), PostgreSQL with NFKC (SASLprep).
	req.Password = "Pässwörd\u00a0日本-" + randSuffix()
	resp := dbtesting.AssertNewUser(t, db, req)
	assertLogin(t, resp.Username, req.Password)
}

func TestUpdateUser(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)

	t.Run("password and expiration in one request", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		resp := dbtesting.AssertNewUser(t, db, req)
		exp := time.Now().Add(72 * time.Hour).Truncate(time.Second)
		newPw := "New-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{
			Username:   resp.Username,
			Password:   &dbplugin.ChangePassword{NewPassword: newPw},
			Expiration: &dbplugin.ChangeExpiration{NewExpiration: exp},
		})
		assertLogin(t, resp.Username, newPw)
		assertNoLogin(t, resp.Username, req.Password)
		if until := validUntil(t, a, resp.Username); !until.Equal(exp) {
			t.Fatalf("rolvaliduntil = %s, want %s", until, exp)
		}
	})
	t.Run("custom rotation statements", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		resp := dbtesting.AssertNewUser(t, db, req)
		newPw := "Custom-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{
			Username: resp.Username,
			Password: &dbplugin.ChangePassword{NewPassword: newPw, Statements: dbplugin.Statements{Commands: []string{
				`ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'; COMMENT ON ROLE "{{name}}" IS 'rotated';`}}},
		})
		assertLogin(t, resp.Username, newPw)
	})
	t.Run("self-managed password", func(t *testing.T) {
		t.Parallel()
		user, pw := "selfmanaged-"+randSuffix(), "Self-"+randSuffix()
		execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD %s`, render.QuoteIdent(user), render.QuoteLiteral(pw)))
		newPw := "Self2-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, SelfManagedPassword: pw, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
		assertLogin(t, user, newPw)
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: user, SelfManagedPassword: "wrong", Password: &dbplugin.ChangePassword{NewPassword: "whatever-1"}})
		if err == nil {
			t.Fatal("a wrong self-managed password was accepted")
		}
		assertLogin(t, user, newPw)
	})
}

func TestUpdateUserRefusals(t *testing.T) {
	db := newDB(t, nil)
	t.Run("missing user", func(t *testing.T) {
		t.Parallel()
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: "no-such-user-" + randSuffix(), Password: &dbplugin.ChangePassword{NewPassword: "x-pw"}})
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("error = %v, want 'does not exist'", err)
		}
	})
	t.Run("nothing to change", func(t *testing.T) {
		t.Parallel()
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: "whoever"})
		if err == nil || !strings.Contains(err.Error(), "no change requested") {
			t.Fatalf("error = %v", err)
		}
	})
}

// TestRootRotation follows Vault's rotate-root: UpdateUser on the root user,
// then Initialize again with the new password.
func TestRootRotation(t *testing.T) {
	needPG(t)
	a := admin(t)
	root, pw := "rootrot-"+randSuffix(), `R@/#{}%?&'`+randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(root), render.QuoteLiteral(pw)))
	db := newDB(t, map[string]interface{}{"username": root, "password": pw})
	newPw := `N3w@/#{}%?&'` + randSuffix()
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: root, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
	assertNoLogin(t, root, pw)
	cfg := baseConfig()
	cfg["username"], cfg["password"] = root, newPw
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
	req := newUserReq(createStmt)
	resp := dbtesting.AssertNewUser(t, db, req)
	assertLogin(t, resp.Username, req.Password)
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: resp.Username})
	if roleExists(t, a, resp.Username) {
		t.Fatal("role still exists")
	}
}

// TestConcurrentRequests sends many creations that GRANT on the same table
// at once; PostgreSQL answers some with "tuple concurrently updated", which
// the plugin must absorb.
func TestConcurrentRequests(t *testing.T) {
	db := newDB(t, map[string]interface{}{"max_open_connections": 8})
	a := admin(t)
	execSQL(t, a, "CREATE TABLE IF NOT EXISTS concurrent_orders (id int)")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	users := make(chan [2]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newUserReq(createStmt, `GRANT SELECT, INSERT ON concurrent_orders TO "{{name}}";`)
			resp, err := db.NewUser(testCtx(t), req)
			if err != nil {
				errs <- err
				return
			}
			users <- [2]string{resp.Username, req.Password}
		}()
	}
	wg.Wait()
	close(errs)
	close(users)
	for err := range errs {
		t.Errorf("NewUser: %v", err)
	}
	seen := map[string]bool{}
	var all []string
	for u := range users {
		if seen[u[0]] {
			t.Fatalf("duplicate username %q", u[0])
		}
		seen[u[0]] = true
		all = append(all, u[0])
		if err := pg.CanLogin(testCtx(t), u[0], u[1]); err != nil {
			t.Errorf("login %q: %v", u[0], err)
		}
	}
	// Revoke them all at once as well.
	var wg2 sync.WaitGroup
	for _, u := range all {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: u}); err != nil {
				t.Errorf("DeleteUser %q: %v", u, err)
			}
		}()
	}
	wg2.Wait()
	var left int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", all).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d roles left after revocation (err %v)", left, err)
	}
}

func TestContextBoundsCalls(t *testing.T) {
	db := newDB(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req := newUserReq(createStmt, `SELECT pg_sleep(30);`)
	_, err := db.NewUser(ctx, req)
	if err == nil {
		t.Fatal("a 30 s statement finished within a 200 ms context")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("context not expired: %v", ctx.Err())
	}
}

func TestUnknownKeysAreLogged(t *testing.T) {
	needPG(t)
	logger, buf := testLogger(t, hclog.Info)
	db := newPostgres(logger)
	defer db.Close()
	cfg := baseConfig()
	cfg["shiny_new_key"] = "x"
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
	out := buf.String()
	if !strings.Contains(out, "shiny_new_key") || !strings.Contains(out, "[WARN]") {
		t.Fatalf("no warning for the unknown key in the log:\n%s", out)
	}
	if strings.Contains(out, pg.SuperPassword) {
		t.Fatalf("the log holds the root password:\n%s", out)
	}
}

// TestCloseLeavesNoGoroutines checks that Close stops everything the plugin
// started: pools, health checks, per-database pools.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	needPG(t)
	before := runtime.NumGoroutine()
	db := newPostgres(hclog.NewNullLogger())
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: baseConfig(), VerifyConnection: true})
	resp := dbtesting.AssertNewUser(t, db, newUserReq(createStmt))
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: resp.Username})
	if _, err := db.state.Load().databasePool("template1"); err != nil {
		t.Fatal(err)
	}
	dbtesting.AssertClose(t, db)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

func TestNotInitialized(t *testing.T) {
	db := newPostgres(hclog.NewNullLogger())
	if _, err := db.NewUser(context.Background(), newUserReq(createStmt)); err == nil || !strings.Contains(err.Error(), "not initialized") {
		t.Fatalf("error = %v", err)
	}
}

func TestNewSanitizesRootPassword(t *testing.T) {
	needPG(t)
	raw, err := New()
	if err != nil {
		t.Fatal(err)
	}
	db := raw.(dbplugin.Database)
	defer db.Close()
	cfg := baseConfig()
	if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err != nil {
		t.Fatal(err)
	}
	// A statement that echoes the root password back in its error.
	req := newUserReq(fmt.Sprintf(`DO $$ BEGIN RAISE EXCEPTION '%%', %s; END $$;`, render.QuoteLiteral(pg.SuperPassword)))
	_, err = db.NewUser(testCtx(t), req)
	if err == nil || strings.Contains(err.Error(), pg.SuperPassword) || !strings.Contains(err.Error(), "[password]") {
		t.Fatalf("error not sanitized: %v", err)
	}
	v, ok := raw.(logical.PluginVersioner)
	if !ok || !strings.HasPrefix(v.PluginVersion().Version, "v") {
		t.Fatalf("wrapped plugin does not report a v-prefixed version")
	}
}
