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
