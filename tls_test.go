package postgres

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
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
	needTestCA(t)
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
		{"sslmode that allows no TLS", map[string]interface{}{"connection_url": base(map[string]string{"sslrootcert": ca, "sslmode": "disable"})}, []string{"sslinline", "sslmode=disable"}},
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

func TestInitializeTLS(t *testing.T) {
	needTestCA(t)
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

// initFake runs Initialize (with a connection check) against the fake server.
func initFake(t *testing.T, f *pgtest.FakeServer, password, query string, extra map[string]interface{}) error {
	t.Helper()
	cfg := map[string]interface{}{
		"connection_url": fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres%s", f.Port(), query),
		"username":       "vaultroot",
		"password":       password,
	}
	for k, v := range extra {
		cfg[k] = v
	}
	db := newPostgres(hclog.NewNullLogger())
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := db.Initialize(ctx, dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
	return err
}

// TestCleartextPasswordRefused plays the man in the middle: no TLS, then a
// request for the cleartext password. The root password must not leave.
func TestCleartextPasswordRefused(t *testing.T) {
	for _, query := range []string{"?sslmode=disable", "?sslmode=prefer", "?sslmode=allow", ""} {
		t.Run("sslmode"+strings.TrimPrefix(query, "?sslmode"), func(t *testing.T) {
			t.Parallel()
			f := newFakeServer(t, nil)
			password := "root-pw-" + randSuffix()
			err := initFake(t, f, password, query, nil)
			got, conns := f.Received()
			if err == nil {
				t.Fatal("Initialize succeeded against a server that asked for the cleartext password")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), "allow_cleartext_password") {
				t.Errorf("error does not name allow_cleartext_password: %v", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", f.Port())) {
				t.Errorf("error does not name the host: %v", err)
			}
			if conns == 0 {
				t.Fatal("the client never connected to the fake server: the test proves nothing")
			}
			if strings.Contains(got, password) {
				t.Fatalf("the fake server received the root password")
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
	t.Run("allowed", func(t *testing.T) {
		t.Parallel()
		f := newFakeServer(t, nil)
		password := "root-pw-" + randSuffix()
		err := initFake(t, f, password, "?sslmode=disable", map[string]interface{}{"allow_cleartext_password": true})
		got, _ := f.Received()
		if err == nil {
			t.Fatal("Initialize succeeded though the fake server refused the password")
		}
		if !strings.Contains(got, password) {
			t.Fatalf("with allow_cleartext_password=true the password was not sent (err: %v)", err)
		}
	})
}

// TestTLSRequiredWithCA: with tls_ca or tls_certificate set, a server that
// refuses TLS gets nothing, whatever sslmode says.
func TestTLSRequiredWithCA(t *testing.T) {
	ca, _, _ := unrelatedCert(t)
	cases := []struct {
		name    string
		query   string
		extra   map[string]interface{}
		dsn     bool // keyword/value connection_url instead of a URL
		wantErr []string
	}{
		// prefer and allow keep only their attempts with TLS, as the
		// built-in puts the CA on every attempt.
		{"prefer", "?sslmode=prefer", nil, false, []string{"refused TLS"}},
		{"allow", "?sslmode=allow", nil, false, []string{"refused TLS"}},
		{"disable", "?sslmode=disable", nil, false, []string{"sslmode=disable", "verify-full"}},
		// A missing sslmode means verify-full: the server is asked for TLS and refuses.
		{"missing", "", nil, false, []string{"refused TLS"}},
		{"missing, allow_cleartext_password", "", map[string]interface{}{"allow_cleartext_password": true}, false, []string{"refused TLS"}},
		{"require", "?sslmode=require", nil, false, []string{"refused TLS"}},
		{"keyword/value without sslmode", "", nil, true, []string{"refused TLS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeServer(t, nil)
			password := "root-pw-" + randSuffix()
			extra := map[string]interface{}{"tls_ca": ca}
			for k, v := range tc.extra {
				extra[k] = v
			}
			if tc.dsn {
				extra["connection_url"] = fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres user={{username}} password={{password}}", f.Port())
			}
			err := initFake(t, f, password, tc.query, extra)
			got, _ := f.Received()
			if err == nil {
				t.Fatal("Initialize succeeded without verified TLS")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			if strings.Contains(got, password) {
				t.Fatal("the fake server received the root password")
			}
		})
	}
}

// TestTLSWithCAOnRealServer proves that the inline tls_ca is what verifies
// the server in every verifying sslmode, require included (as libpq's
// verify-ca when a CA is given).
func TestTLSWithCAOnRealServer(t *testing.T) {
	needTestCA(t)
	other, _, _ := unrelatedCert(t)
	for _, mode := range []string{"require", "verify-ca", "verify-full"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=%s", pg.Port, mode)
			db := newDB(t, map[string]interface{}{"connection_url": url, "tls_ca": pg.CAPEM})
			var ssl bool
			if err := db.state.Load().pool.QueryRow(testCtx(t), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Fatalf("connection is not TLS: ssl=%v err=%v", ssl, err)
			}

			wrong := newPostgres(hclog.NewNullLogger())
			defer wrong.Close()
			cfg := baseConfig()
			cfg["connection_url"], cfg["tls_ca"] = url, other
			_, err := wrong.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
			if err == nil {
				t.Fatal("a server certificate from another CA was accepted")
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error does not say the certificate was refused: %v", err)
			}
		})
	}
	t.Run("sslrootcert file does not override tls_ca", func(t *testing.T) {
		t.Parallel()
		// sslrootcert names the right CA, tls_ca a wrong one: tls_ca decides.
		url := fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=verify-ca&sslrootcert=%s", pg.Port, pg.CAFile)
		db := newPostgres(hclog.NewNullLogger())
		defer db.Close()
		cfg := baseConfig()
		cfg["connection_url"], cfg["tls_ca"] = url, other
		if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err == nil {
			t.Fatal("the sslrootcert file verified the server though tls_ca names another CA")
		}
	})
}

// TestPoolConfigTLSRules covers the TLS rule without a server: every
// combination that could go without verified TLS is a configuration error.
func TestPoolConfigTLSRules(t *testing.T) {
	t.Setenv("PGSSLMODE", "") // the cases are about connection_url alone
	t.Setenv("PGSERVICE", "")
	ca, cert, key := unrelatedCert(t)
	const base = "postgres://{{username}}:{{password}}@db.example.com:5432/postgres"
	cases := []struct {
		name    string
		url     string
		extra   map[string]interface{}
		wantErr string // "" means valid
	}{
		{"ca, no sslmode: verify-full", base, map[string]interface{}{"tls_ca": ca}, ""},
		{"ca, require", base + "?sslmode=require", map[string]interface{}{"tls_ca": ca}, ""},
		{"ca, prefer: TLS only", base + "?sslmode=prefer", map[string]interface{}{"tls_ca": ca}, ""},
		{"ca, two hosts, allow: TLS only", "postgres://{{username}}:{{password}}@a:5432,b:5432/postgres?sslmode=allow", map[string]interface{}{"tls_ca": ca}, ""},
		{"ca, keyword/value prefer: TLS only", "host=db.example.com user={{username}} password={{password}} sslmode='prefer'", map[string]interface{}{"tls_ca": ca}, ""},
		{"ca, disable", base + "?sslmode=disable", map[string]interface{}{"tls_ca": ca}, "sslmode=disable"},
		{"ca, keyword/value, sslmode only inside a quoted value", "host=db.example.com user={{username}} password={{password}} application_name='x sslmode=disable'", map[string]interface{}{"tls_ca": ca}, ""},
		{"ca, unix socket", "host=/var/run/postgresql user={{username}} password={{password}}", map[string]interface{}{"tls_ca": ca}, "Unix socket"},
		{"certificate, no CA, require", base + "?sslmode=require", map[string]interface{}{"tls_certificate": cert, "private_key": key}, "does not verify"},
		{"certificate, no CA, verify-full", base + "?sslmode=verify-full", map[string]interface{}{"tls_certificate": cert, "private_key": key}, ""},
		{"certificate, no CA, no sslmode", base, map[string]interface{}{"tls_certificate": cert, "private_key": key}, ""},
		{"no TLS parameters, prefer stays prefer", base + "?sslmode=prefer", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := map[string]interface{}{"connection_url": tc.url, "username": "u", "password": "p"}
			for k, v := range tc.extra {
				raw[k] = v
			}
			c, _, err := parseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			pc, err := c.poolConfig()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.wantsTLS() {
				return
			}
			assertVerifiesServer(t, pc.ConnConfig, strings.Contains(tc.name, "no sslmode"))
		})
	}
}

// assertVerifiesServer checks that every connection attempt of cc (the
// first and each fallback) uses TLS and verifies the server; verifyFull
// also asks for the host name check of verify-full.
func assertVerifiesServer(t *testing.T, cc *pgx.ConnConfig, verifyFull bool) {
	t.Helper()
	for i, tlsCfg := range append([]*tls.Config{cc.TLSConfig}, fallbackTLS(cc.Fallbacks)...) {
		if tlsCfg == nil {
			t.Fatalf("connection %d has no TLS", i)
		}
		if tlsCfg.InsecureSkipVerify && tlsCfg.VerifyPeerCertificate == nil {
			t.Fatalf("connection %d does not verify the server", i)
		}
		if verifyFull && (tlsCfg.InsecureSkipVerify || tlsCfg.ServerName != "db.example.com") {
			t.Fatalf("connection %d without sslmode is not verify-full (host name unchecked)", i)
		}
	}
}

func fallbackTLS(fbs []*pgconn.FallbackConfig) []*tls.Config {
	var out []*tls.Config
	for _, fb := range fbs {
		out = append(out, fb.TLSConfig)
	}
	return out
}

func TestSSLModeSetting(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	t.Setenv("PGSERVICE", "")
	cases := []struct {
		conn string
		mode string
		set  bool
	}{
		{"postgres://u@h/db", "", false},
		{"postgres://u@h/db?sslmode=require", "require", true},
		{"postgresql://u@h/db?application_name=x&sslmode=verify-ca", "verify-ca", true},
		{"host=h user=u", "", false},
		{"host=h sslmode=allow user=u", "allow", true},
		{"host=h  sslmode = 'verify-full' ", "verify-full", true},
		{`host=h password='a\' sslmode=disable' user=u`, "", false},
		{"host=h service=prod", "", true},
	}
	for _, tc := range cases {
		mode, set := sslmodeSetting(tc.conn)
		if mode != tc.mode || set != tc.set {
			t.Errorf("sslmodeSetting(%q) = %q, %v; want %q, %v", tc.conn, mode, set, tc.mode, tc.set)
		}
	}
	for in, want := range map[string]string{
		"postgres://u@h/db":          "postgres://u@h/db?sslmode=verify-full",
		"postgres://u@h/db?x=1":      "postgres://u@h/db?x=1&sslmode=verify-full",
		"postgres://u@h/db?x=1#frag": "postgres://u@h/db?x=1&sslmode=verify-full#frag",
		"host=h user=u":              "host=h user=u sslmode=verify-full",
	} {
		if got := withSSLMode(in, "verify-full"); got != want {
			t.Errorf("withSSLMode(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCleartextGuard feeds backend messages one byte at a time: the guard
// must find the cleartext request however reads split the stream, and stop
// looking once the session is ready.
func TestCleartextGuard(t *testing.T) {
	msg := func(typ byte, body ...byte) []byte {
		out := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
		return append(out, body...)
	}
	authOK := msg('R', 0, 0, 0, 0)
	sasl := msg('R', append([]byte{0, 0, 0, 10}, "SCRAM-SHA-256\x00\x00"...)...)
	cleartext := msg('R', 0, 0, 0, 3)
	param := msg('S', []byte("client_encoding\x00UTF8\x00")...)
	ready := msg('Z', 'I')
	empty := msg('I')
	cases := []struct {
		name    string
		stream  [][]byte
		refused bool
	}{
		{"cleartext first", [][]byte{cleartext}, true},
		{"after another request", [][]byte{sasl, empty, cleartext}, true},
		{"scram then ready", [][]byte{sasl, authOK, param, ready}, false},
		{"after ready it is not authentication", [][]byte{authOK, ready, cleartext}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := &cleartextGuard{r: iotest.OneByteReader(bytes.NewReader(bytes.Join(tc.stream, nil))), addr: "db:5432"}
			_, err := io.ReadAll(g)
			if tc.refused != (err != nil) {
				t.Fatalf("err = %v, want refused=%v", err, tc.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "allow_cleartext_password") {
				t.Fatalf("error does not name allow_cleartext_password: %v", err)
			}
		})
	}
}

// TestCleartextGuardOnCopies: connections opened from copies of the pool
// configuration (execAs for self-managed static roles, pools to other
// databases in revoke.go) carry the same guard.
func TestCleartextGuardOnCopies(t *testing.T) {
	f := newFakeServer(t, nil)
	c, _, err := parseConfig(map[string]interface{}{
		"connection_url": fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", f.Port()),
		"username":       "vaultroot", "password": "root-pw-" + randSuffix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := c.poolConfig()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)

	staticPassword := "static-pw-" + randSuffix()
	cc := pc.ConnConfig.Copy() // as execAs does
	cc.User, cc.Password = "static", staticPassword
	if conn, err := pgx.ConnectConfig(ctx, cc); err == nil {
		conn.Close(ctx)
		t.Fatal("a copied connection configuration answered the cleartext request")
	} else if !strings.Contains(err.Error(), "allow_cleartext_password") {
		t.Errorf("copied connection configuration: error = %v", err)
	}

	other := pc.ConnConfig.Copy() // as connTo does, for another database
	other.Database = "other"
	if conn, err := pgx.ConnectConfig(ctx, other); err == nil {
		conn.Close(ctx)
		t.Fatal("a connection to another database answered the cleartext request")
	} else if !strings.Contains(err.Error(), "allow_cleartext_password") {
		t.Errorf("connection to another database: error = %v", err)
	}

	got, conns := f.Received()
	if conns < 2 {
		t.Fatalf("the fake server saw %d connections, want one from each copy", conns)
	}
	if strings.Contains(got, staticPassword) || strings.Contains(got, c.Password) {
		t.Fatal("the fake server received a password")
	}
}

// TestGuardPassesSCRAMWithoutTLS: the guard reads a real server's SCRAM
// exchange over a connection without TLS and lets it through.
func TestGuardPassesSCRAMWithoutTLS(t *testing.T) {
	needPG(t)
	url := fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", pg.Port)
	db := newDB(t, map[string]interface{}{"connection_url": url})
	var ssl bool
	if err := db.state.Load().pool.QueryRow(testCtx(t), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || ssl {
		t.Fatalf("want a connection without TLS: ssl=%v err=%v", ssl, err)
	}
	req := newUserReq(createStmt)
	resp, err := db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	assertLogin(t, resp.Username, req.Password)
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: resp.Username}); err != nil {
		t.Fatal(err)
	}
}

// TestCleartextPasswordOverUnixSocket: pg_hba's password method (ldap, pam
// and radius alike) asks for the password in the clear. Over a Unix socket
// it crosses no network, and the plugin answers, as libpq and the built-in
// do; over TCP without TLS it still refuses (TestCleartextPasswordRefused).
func TestCleartextPasswordOverUnixSocket(t *testing.T) {
	a := admin(t)
	if pg.DataDir == "" {
		t.Skip("needs the local cluster, whose pg_hba.conf the test edits")
	}
	user, pw := "hbapw_"+randSuffix(), "Pw-"+randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s SUPERUSER LOGIN PASSWORD %s", user, render.QuoteLiteral(pw)))
	hba := filepath.Join(pg.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("local all "+user+" password\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(hba, old, 0o600)
		_, _ = a.Exec(testCtx(t), "SELECT pg_reload_conf()")
		_, _ = a.Exec(testCtx(t), "DROP ROLE IF EXISTS "+user)
	})
	execSQL(t, a, "SELECT pg_reload_conf()")
	db := newPostgres(hclog.NewNullLogger())
	defer db.Close()
	cfg := map[string]interface{}{
		"connection_url": fmt.Sprintf("host=%s port=%d dbname=postgres user={{username}} password={{password}}", filepath.Dir(pg.DataDir), pg.Port),
		"username":       user, "password": pw,
	}
	// pg_reload_conf signals the postmaster, which rereads pg_hba.conf soon after.
	waitFor(t, func() bool {
		_, err = db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
		return err == nil
	})
	var method string
	if err := a.QueryRow(testCtx(t), "SELECT auth_method FROM pg_hba_file_rules WHERE user_name @> ARRAY[$1]", user).Scan(&method); err != nil || method != "password" {
		t.Fatalf("pg_hba.conf has no password line for %s (%q, %v)", user, method, err)
	}
}
