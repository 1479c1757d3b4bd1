package postgres

// Initialize: the configuration is decoded, validated and returned as
// given; mistakes get one clear error each.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/hashicorp/vault/sdk/logical"
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
	// Drop-in: what the built-in accepts.
	{"negative max_idle_connections (the built-in: no idle connections)", configWith(map[string]interface{}{"max_idle_connections": -1}), ""},
	{"pgx v4 parameters in connection_url", func() map[string]interface{} {
		return mergeConfig(map[string]interface{}{"connection_url": pg.TemplateURL("") + "&prefer_simple_protocol=true&statement_cache_mode=describe&statement_cache_capacity=0&min_read_buffer_size=8192"})
	}, ""},
	{"auth_type cert (the built-in: username and password as usual)", configWith(map[string]interface{}{"auth_type": "cert"}), ""},
	{"service_account_json without gcp_iam (the built-in ignores it)", configWith(map[string]interface{}{"service_account_json": `{"type":"service_account"}`}), ""},
	{"gcp iam with a service account", configWith(map[string]interface{}{"auth_type": "gcp_iam", "service_account_json": `{"type":"service_account"}`}), `auth_type "gcp_iam" is not supported`},
	{"{{password}} outside the password of connection_url", func() map[string]interface{} {
		return mergeConfig(map[string]interface{}{"connection_url": pg.TemplateURL("") + "&application_name=x-{{password}}"})
	}, "{{password}} may stand only"},
	{"disable_escaping, the operator escaping the password", func() map[string]interface{} {
		return mergeConfig(map[string]interface{}{"disable_escaping": true, "password": url.PathEscape(pg.SuperPassword)})
	}, ""},
	{"self_managed connection", configWith(map[string]interface{}{"self_managed": true}), "self_managed=true"},
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

func TestPoolSizeBeyondInt32(t *testing.T) {
	for _, key := range []string{"max_open_connections", "max_idle_connections"} {
		for _, v := range []interface{}{float64(3000000000), "3000000000", 1 << 32} {
			t.Run(fmt.Sprintf("%s=%v", key, v), func(t *testing.T) {
				raw := map[string]interface{}{"connection_url": "postgres://{{username}}:{{password}}@localhost/postgres", "username": "u", "password": "p"}
				raw[key] = v
				_, _, err := parseConfig(raw)
				if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "2147483647") {
					t.Fatalf("error = %v, want one naming %s and its limit", err, key)
				}
			})
		}
	}
}

// TestConnectionURLUsernameOutsideTheUser: {{username}} is filled wherever
// connection_url holds it, as the built-in fills it: a database named after
// the user (postgres://{{username}}:{{password}}@host/{{username}}, the
// layout of several hosted services) and a parameter's value.
func TestConnectionURLUsernameOutsideTheUser(t *testing.T) {
	needPG(t)
	a := admin(t)
	var exists bool
	if err := a.QueryRow(testCtx(t), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", pg.SuperUser).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		execSQL(t, a, "CREATE DATABASE "+render.QuoteIdent(pg.SuperUser))
		t.Cleanup(func() { execSQL(t, a, "DROP DATABASE "+render.QuoteIdent(pg.SuperUser)+" WITH (FORCE)") })
	}
	app := "app-" + randSuffix()
	for name, url := range map[string]string{
		"URL path":      strings.Replace(pg.TemplateURL(""), "/"+pg.Database+"?", "/{{username}}?", 1) + "&application_name=" + app + "-url-{{username}}",
		"keyword/value": fmt.Sprintf("host=%s port=%d dbname={{username}} user={{username}} password={{password}} sslmode=%s sslrootcert=%s application_name=%s-kv-{{username}}", pg.Host, pg.Port, pg.SSLMode, pg.CAFile, app),
	} {
		t.Run(name, func(t *testing.T) {
			db := newPostgres(hclog.NewNullLogger())
			defer db.Close()
			cfg := mergeConfig(map[string]interface{}{"connection_url": url})
			if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err != nil {
				t.Fatalf("Initialize: %v", err)
			}
			prefix := app + "-" + map[string]string{"URL path": "url", "keyword/value": "kv"}[name] + "-"
			var got string
			err := a.QueryRow(testCtx(t), "SELECT datname || ' ' || application_name FROM pg_stat_activity WHERE starts_with(application_name, $1) LIMIT 1",
				prefix).Scan(&got)
			if err != nil {
				t.Fatalf("no session of the plugin found: %v", err)
			}
			if want := pg.SuperUser + " " + prefix + pg.SuperUser; got != want {
				t.Fatalf("database and application_name = %q, want %q", got, want)
			}
		})
	}
}

// TestPasswordOnlyAsThePasswordWithDisableEscaping: with disable_escaping
// the values are spliced into connection_url before it is parsed; the
// {{password}} placement rule holds all the same, so the root password never
// becomes a setting every login can read (application_name).
func TestPasswordOnlyAsThePasswordWithDisableEscaping(t *testing.T) {
	c := &config{ConnectionURL: "postgres://{{username}}:{{password}}@localhost:5432/db?application_name={{password}}",
		Username: "vault", Password: "root-secret", DisableEscaping: true}
	if pc, err := c.poolConfig(); err == nil || !strings.Contains(err.Error(), "{{password}} may stand only") {
		t.Fatalf("poolConfig = %v; application_name would be the root password (%v)", err, pc != nil)
	}
	// A % before it, which a password starting with two hex digits
	// completes to an escape.
	c.ConnectionURL, c.Password = "postgres://{{username}}:{{password}}@localhost:5432/db?application_name=%{{password}}", "41root-secret"
	if pc, err := c.poolConfig(); err == nil {
		t.Fatalf("poolConfig accepted {{password}} after a %%: application_name=%q", pc.ConnConfig.RuntimeParams["application_name"])
	}
}
