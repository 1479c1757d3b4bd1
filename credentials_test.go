package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
)

// TestSCRAMVerifier recomputes the stored and server keys from the salt.
func TestSCRAMVerifier(t *testing.T) {
	v, err := scramSHA256Verifier("pencil", 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.FieldsFunc(v, func(r rune) bool { return r == '$' || r == ':' })
	if len(parts) != 5 || parts[0] != "SCRAM-SHA-256" || parts[1] != "4096" {
		t.Fatalf("bad verifier shape %q", v)
	}
	salt, _ := base64.StdEncoding.DecodeString(parts[2])
	salted, _ := pbkdf2.Key(sha256.New, "pencil", salt, 4096, 32)
	mac := hmac.New(sha256.New, salted)
	mac.Write([]byte("Client Key"))
	stored := sha256.Sum256(mac.Sum(nil))
	if parts[3] != base64.StdEncoding.EncodeToString(stored[:]) {
		t.Fatal("stored key mismatch")
	}
	if v2, _ := scramSHA256Verifier("pencil", 0); v2 == v {
		t.Fatal("salt is not random")
	}
}

func TestPasswordVerifierModes(t *testing.T) {
	if got, _ := passwordVerifier("password", 0, "u", "pw"); got != "pw" {
		t.Fatalf("password mode changed the password: %q", got)
	}
	// md5(password || username), as PostgreSQL stores it (printf secretpostgres | md5sum).
	if got, _ := passwordVerifier("md5", 0, "postgres", "secret"); got != "md553f48b7c4b76a86ce72276c5755f217d" {
		t.Fatalf("md5 verifier = %q", got)
	}
	if got, _ := passwordVerifier("auto", 0, "u", "pw"); !strings.HasPrefix(got, "SCRAM-SHA-256$4096:") {
		t.Fatalf("auto did not pick SCRAM: %q", got)
	}
}

func TestSASLPrep(t *testing.T) {
	cases := map[string]string{
		"plain-ascii":      "plain-ascii",
		"a\u00a0b":         "a b",              // non-ASCII space
		"a\u00adb":         "ab",               // mapped to nothing
		"\ufb01x":          "fix",              // NFKC
		"bad\u0007control": "bad\u0007control", // ASCII: untouched
		"ctl\u0085\u00e9":  "ctl\u0085\u00e9",  // prohibited: raw
	}
	for in, want := range cases {
		if got := saslPrep(in); got != want {
			t.Errorf("saslPrep(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, unknown, err := parseConfig(map[string]interface{}{
		"connection_url": "postgres://{{username}}:{{password}}@localhost/db", "username": "u", "password": "p",
		"max_open_connections": "9", "max_connection_lifetime": float64(90), "brand_new_vault_key": 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxOpenConnections != 9 || c.MaxConnectionLifetime != 90*time.Second || c.PasswordAuthentication != "auto" || !c.TerminateSessions {
		t.Fatalf("decoded %+v", c)
	}
	if len(unknown) != 1 || unknown[0] != "brand_new_vault_key" {
		t.Fatalf("unknown = %v", unknown)
	}
	errs := []struct {
		raw  map[string]interface{}
		want string
	}{
		{map[string]interface{}{}, "connection_url is required"},
		{map[string]interface{}{"connection_url": "x", "auth_type": "gcp_iam"}, "not supported"},
		{map[string]interface{}{"connection_url": "x", "max_open_connections": "many"}, "max_open_connections"},
	}
	for _, e := range errs {
		if _, _, err := parseConfig(e.raw); err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("parseConfig(%v) error = %v, want %q", e.raw, err, e.want)
		}
	}
}

// TestPoolConfigKeepsCredentialsOutOfText proves special characters in the
// root credentials survive URL and keyword/value forms without escaping
// mistakes, and that a parse error does not echo the URL.
func TestPoolConfigKeepsCredentialsOutOfText(t *testing.T) {
	pw := `p@ss/#{}%?&'w "x`
	for _, url := range []string{
		"postgres://{{username}}:{{password}}@db.example:5433/app?sslmode=disable",
		"host=db.example port=5433 dbname=app user={{username}} password={{password}} sslmode=disable",
	} {
		c := &config{ConnectionURL: url, Username: "ad@min", Password: pw, MaxOpenConnections: 4}
		pc, err := c.poolConfig()
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if pc.ConnConfig.User != "ad@min" || pc.ConnConfig.Password != pw || pc.ConnConfig.Port != 5433 {
			t.Fatalf("%s: user %q password %q port %d", url, pc.ConnConfig.User, pc.ConnConfig.Password, pc.ConnConfig.Port)
		}
	}
	c := &config{ConnectionURL: "postgres://u:" + pw + "@[bad", Password: pw}
	if _, err := c.poolConfig(); err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("error = %v", err)
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
		// pooled connection left with another value.
		logger, _ := testLogger(t, hclog.Warn)
		db := newPostgres(logger)
		t.Cleanup(func() { _ = db.Close() })
		cfg := mergeConfig(mergeMaps(iterAdmin, map[string]interface{}{"max_open_connections": 1}))
		if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg}); err != nil {
			t.Fatal(err)
		}
		// (The plugin's own batches reset the session at their end; a
		// server session another client of a pooler left is like this.)
		if _, err := db.state.Load().pool.Exec(testCtx(t), "SET scram_iterations = 1024"); err != nil {
			t.Fatal(err)
		}
		var now string
		if err := db.state.Load().pool.QueryRow(testCtx(t), "SELECT current_setting('scram_iterations')").Scan(&now); err != nil || now != "1024" {
			t.Fatalf("the pooled session's scram_iterations = %q (%v), want the 1024 the revocation SET", now, err)
		}
		assertIterations(t, db)
	})
}
