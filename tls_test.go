package postgres

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// inlineURL is a connection_url for user on the test server whose TLS
// parameters are query values, PEMs inline (URL-encoded).
func inlineURL(user string, params map[string]string) string {
	q := url.Values{}
	for k, v := range params {
		q.Set(k, v)
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?%s", user, pg.Port, q.Encode())
}

// assertTLSSession proves the plugin's pooled session is TLS, and that a
// user it creates logs in.
func assertTLSSession(t *testing.T, db *Postgres) {
	t.Helper()
	var ssl bool
	if err := db.state.Load().pool.QueryRow(testCtx(t), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("connection is not TLS: ssl=%v err=%v", ssl, err)
	}
	req := newUserReq(createStmt)
	assertLogin(t, dbtesting.AssertNewUser(t, db, req).Username, req.Password)
}

// TestSSLInline: connection_url with sslinline=true, as Vault's built-in
// plugin takes it, with the PEMs in sslrootcert, sslcert and sslkey (in a
// URL percent-encoded, in a keyword/value string quoted): they verify the
// server and authenticate the client exactly as tls_ca, tls_certificate and
// private_key do.
func TestSSLInline(t *testing.T) {
	needPG(t)
	if pg.CAPEM == "" {
		t.Skip("server has no test CA (PG_URL or Docker)")
	}
	other, otherCert, otherKey := unrelatedCert(t)
	for _, mode := range []string{"verify-full", "verify-ca", "require"} {
		t.Run("URL, "+mode, func(t *testing.T) {
			t.Parallel()
			u := inlineURL("{{username}}:{{password}}", map[string]string{"sslmode": mode, "sslinline": "true", "sslrootcert": pg.CAPEM})
			assertTLSSession(t, newDB(t, map[string]interface{}{"connection_url": u}))
			// The inline CA is what verifies: another one is refused.
			u = inlineURL("{{username}}:{{password}}", map[string]string{"sslmode": mode, "sslinline": "true", "sslrootcert": other})
			wantInitError(t, mergeConfig(map[string]interface{}{"connection_url": u}), "certificate")
		})
	}
	t.Run("keyword/value", func(t *testing.T) {
		t.Parallel()
		// What follows the PEM still counts.
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres user={{username}} password={{password}} sslinline=true sslrootcert='%s' application_name=inline-kv", pg.Port, pg.CAPEM)
		db := newDB(t, map[string]interface{}{"connection_url": dsn})
		assertTLSSession(t, db)
		var app string
		if err := db.state.Load().pool.QueryRow(testCtx(t), "SELECT current_setting('application_name')").Scan(&app); err != nil || app != "inline-kv" {
			t.Fatalf("application_name = %q (%v), want the inline-kv given after the PEM", app, err)
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		t.Parallel()
		execSQL(t, admin(t), `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '`+pgtest.CertUser+`') THEN CREATE ROLE `+pgtest.CertUser+` LOGIN CREATEROLE; END IF; END $$`)
		cert, key, err := pg.ClientCert(pgtest.CertUser)
		if err != nil {
			t.Fatal(err)
		}
		params := map[string]string{"sslmode": "verify-full", "sslinline": "true", "sslrootcert": pg.CAPEM, "sslcert": cert, "sslkey": key}
		cfg := map[string]interface{}{"connection_url": inlineURL("{{username}}", params), "username": pgtest.CertUser, "password": ""}
		assertTLSSession(t, newDB(t, cfg))
		// A certificate the server's CA did not issue is refused.
		params["sslcert"], params["sslkey"] = otherCert, otherKey
		cfg["connection_url"] = inlineURL("{{username}}", params)
		wantInitError(t, cfg, "verifying connection")
	})
	t.Run("sslinline=false reads files", func(t *testing.T) {
		t.Parallel()
		u := inlineURL("{{username}}:{{password}}", map[string]string{"sslmode": "verify-full", "sslinline": "false", "sslrootcert": pg.CAFile})
		assertTLSSession(t, newDB(t, map[string]interface{}{"connection_url": u}))
	})
}

// wantInitError initializes a plugin with cfg and fails unless it fails
// with an error containing want.
func wantInitError(t *testing.T, cfg map[string]interface{}, want string) {
	t.Helper()
	db := newPostgres(hclog.NewNullLogger())
	defer db.Close()
	_, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Initialize error = %v, want one containing %q", err, want)
	}
}

// TestSSLInlineRefusals: inline TLS that cannot work says which parameter
// is wrong, in the operator's words, and never echoes a key.
func TestSSLInlineRefusals(t *testing.T) {
	ca, cert, key := unrelatedCert(t)
	_, _, otherKey := unrelatedCert(t)
	base := func(params map[string]string) string {
		q := url.Values{"sslinline": {"true"}}
		for k, v := range params {
			q.Set(k, v)
		}
		return "postgres://{{username}}:{{password}}@db.example.com:5432/postgres?" + q.Encode()
	}
	cases := []struct {
		name  string
		raw   map[string]interface{}
		wants []string
	}{
		{"sslrootcert and tls_ca", map[string]interface{}{"connection_url": base(map[string]string{"sslrootcert": ca}), "tls_ca": ca}, []string{"sslrootcert", "tls_ca"}},
		{"sslcert and tls_certificate", map[string]interface{}{"connection_url": base(map[string]string{"sslcert": cert, "sslkey": key}), "tls_certificate": cert, "private_key": key}, []string{"sslcert", "tls_certificate"}},
		{"sslrootcert not a PEM", map[string]interface{}{"connection_url": base(map[string]string{"sslrootcert": "/etc/ssl/ca.pem"})}, []string{"sslrootcert", "PEM", "percent-encode"}},
		{"a + left unencoded", map[string]interface{}{"connection_url": strings.ReplaceAll(base(map[string]string{"sslrootcert": ca}), "%2B", "+")}, []string{"sslrootcert"}},
		{"sslcert without sslkey", map[string]interface{}{"connection_url": base(map[string]string{"sslcert": cert})}, []string{"sslcert", "sslkey"}},
		{"key does not match", map[string]interface{}{"connection_url": base(map[string]string{"sslcert": cert, "sslkey": otherKey})}, []string{"sslcert", "sslkey"}},
		{"encrypted key", map[string]interface{}{"connection_url": base(map[string]string{"sslcert": cert, "sslkey": key, "sslpassword": "pw"})}, []string{"sslpassword", "private_key"}},
		{"sslmode that allows no TLS", map[string]interface{}{"connection_url": base(map[string]string{"sslrootcert": ca, "sslmode": "prefer"})}, []string{"sslinline", "sslmode=prefer"}},
		{"client certificate, server not verified", map[string]interface{}{"connection_url": base(map[string]string{"sslcert": cert, "sslkey": key, "sslmode": "require"})}, []string{"sslcert", "sslrootcert"}},
		{"not a boolean", map[string]interface{}{"connection_url": strings.Replace(base(nil), "sslinline=true", "sslinline=yes-please", 1)}, []string{"sslinline"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "a + left unencoded" && !strings.Contains(ca, "+") {
				t.Skip("this CA's PEM has no +")
			}
			tc.raw["username"], tc.raw["password"] = "u", "p"
			c, _, err := parseConfig(tc.raw)
			if err == nil {
				_, err = c.poolConfig()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			for _, k := range []string{key, otherKey} {
				if body := strings.Split(k, "\n")[1]; strings.Contains(err.Error(), body) {
					t.Fatalf("error holds a private key: %v", err)
				}
			}
		})
	}
}

// newFakeTLSServer is the man in the middle with a certificate of its own,
// which sslmode=require and prefer take without checking it.
func newFakeTLSServer(t *testing.T) *pgtest.FakeServer {
	t.Helper()
	_, certPEM, keyPEM := unrelatedCert(t)
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return newFakeServer(t, &cert)
}

// TestCleartextPasswordRefusedOverUnverifiedTLS: sslmode=require (and
// prefer) encrypt without checking who answers, so a man in the middle with
// any certificate is as unproven as one that refuses TLS: the cleartext
// guard keeps the root password from it although the connection is TLS.
func TestCleartextPasswordRefusedOverUnverifiedTLS(t *testing.T) {
	for _, mode := range []string{"require", "prefer"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFakeTLSServer(t)
			password := "root-pw-" + randSuffix()
			db := newPostgres(hclog.NewNullLogger())
			defer db.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := db.Initialize(ctx, dbplugin.InitializeRequest{VerifyConnection: true, Config: map[string]interface{}{
				"connection_url": fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=%s", f.Port(), mode),
				"username":       "vaultroot",
				"password":       password,
			}})
			if err == nil {
				t.Fatal("Initialize succeeded against the fake server")
			}
			select {
			case sent := <-f.Passwords():
				if sent == password {
					t.Fatalf("the root password went in cleartext to a server whose certificate nobody checked (error: %v)", err)
				}
			default:
			}
			if !strings.Contains(err.Error(), "allow_cleartext_password") {
				t.Errorf("error does not name allow_cleartext_password: %v", err)
			}
		})
	}
}
