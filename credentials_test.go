package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestRenderSQL(t *testing.T) {
	v := newTemplateValues(`app"user'x`).withPassword(`p'w"$$;--`).withExpiration(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	cases := []struct {
		name, in, want, wantErr string
	}{
		{"identifier context", `CREATE ROLE "{{name}}";`, `CREATE ROLE "app""user'x";`, ""},
		{"username alias", `DROP ROLE "{{username}}";`, `DROP ROLE "app""user'x";`, ""},
		{"literal context", `PASSWORD '{{password}}'`, `PASSWORD 'p''w"$$;--'`, ""},
		{"escape-string literal", `E'{{password}}\n'`, `E'p''w"$$;--\n'`, ""},
		{"unicode-escape literal doubles backslashes", `U&'{{name}}'`, `U&'app"user''x'`, ""},
		{"bare name is quoted", `CREATE ROLE {{name}}`, `CREATE ROLE "app""user'x"`, ""},
		{"bare password is a literal", `PASSWORD {{password}}`, `PASSWORD 'p''w"$$;--'`, ""},
		{"expiration", `VALID UNTIL '{{expiration}}'`, `VALID UNTIL '2030-01-02 03:04:05+0000'`, ""},
		{"spaces inside braces", `"{{ name }}"`, `"app""user'x"`, ""},
		{"comments are left alone", "-- {{password}}\n/* {{password}} /* nested */ */ SELECT 1", "-- {{password}}\n/* {{password}} /* nested */ */ SELECT 1", ""},
		{"literal in a comment does not open a quote", "-- it's\n'{{name}}'", "-- it's\n'app\"user''x'", ""},
		{"doubled quotes stay inside the literal", `'a''{{name}}'`, `'a''app"user''x'`, ""},
		{"dollar body rendered as SQL", `DO $fn$ BEGIN EXECUTE 'x' || '{{name}}'; END $fn$`, `DO $fn$ BEGIN EXECUTE 'x' || 'app"user''x'; END $fn$`, ""},
		{"value may not close its dollar body", `DO $$ BEGIN PERFORM '{{password}}'; END $$`, "", "end the dollar-quoted body"},
		{"positional parameters are not dollar tags", `SELECT $1, '{{name}}'`, `SELECT $1, 'app"user''x'`, ""},
		{"unknown placeholder", `{{nope}}`, "", "unknown placeholder"},
		{"array literals are not placeholders", `SELECT '{{1,2},{3,4}}'::int[], '{{1}}'::int[]`, `SELECT '{{1,2},{3,4}}'::int[], '{{1}}'::int[]`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderSQL(tc.in, v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), v.Password) {
					t.Fatalf("error leaks the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRenderMissingValues(t *testing.T) {
	_, err := renderSQL(`ALTER ROLE "{{name}}" PASSWORD '{{password}}'`, newTemplateValues("u"))
	if err == nil || !strings.Contains(err.Error(), "{{password}} is not available") {
		t.Fatalf("error = %v", err)
	}
}

func TestRenderStatementsJoinsAfterComments(t *testing.T) {
	got, err := renderStatements([]string{"SELECT 1 -- trailing comment", "", "SELECT 2"}, newTemplateValues("u"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "-- trailing comment\n;") || !strings.Contains(got, "SELECT 2\n;") {
		t.Fatalf("statements joined badly: %q", got)
	}
}

// TestSCRAMVerifier recomputes the stored and server keys from the salt.
func TestSCRAMVerifier(t *testing.T) {
	v, err := scramSHA256Verifier("pencil")
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
	if v2, _ := scramSHA256Verifier("pencil"); v2 == v {
		t.Fatal("salt is not random")
	}
}

func TestPasswordVerifierModes(t *testing.T) {
	if got, _ := passwordVerifier("password", "", "u", "pw"); got != "pw" {
		t.Fatalf("password mode changed the password: %q", got)
	}
	// md5(password || username), as PostgreSQL stores it (printf secretpostgres | md5sum).
	if got, _ := passwordVerifier("auto", "md5", "postgres", "secret"); got != "md553f48b7c4b76a86ce72276c5755f217d" {
		t.Fatalf("md5 verifier = %q", got)
	}
	if got, _ := passwordVerifier("auto", "scram-sha-256", "u", "pw"); !strings.HasPrefix(got, "SCRAM-SHA-256$4096:") {
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
	if c.MaxOpenConnections != 9 || c.MaxConnectionLifetime != 90*time.Second || c.PasswordAuthentication != "auto" || !*c.TerminateSessions {
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

func TestParseTextArray(t *testing.T) {
	got := parseTextArray(`{a,"b c","d\"e"}`)
	if strings.Join(got, "|") != `a|b c|d"e` {
		t.Fatalf("got %q", got)
	}
	if len(parseTextArray("{}")) != 0 {
		t.Fatal("empty array")
	}
}
