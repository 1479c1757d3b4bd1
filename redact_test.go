package postgres

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	const pw = `p'a\ss"w-rd`
	const verifier = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
	cases := []struct {
		name, msg, want string
		secrets         []string
	}{
		{"plain", `invalid input syntax for type integer: "p'a\ss"w-rd"`, `invalid input syntax for type integer: "[redacted]"`, []string{pw}},
		{"quote doubled", `syntax error at or near "'p''a\ss"w-rd'"`, `syntax error at or near "'[redacted]'"`, []string{pw}},
		{"backslash doubled", `near "p'a\\ss"w-rd"`, `near "[redacted]"`, []string{pw}},
		{"E'' as rendered", `near "E'p''a\\ss"w-rd'"`, `near "E'[redacted]'"`, []string{pw}},
		{"E'' with \\'", `near "E'p\'a\\ss"w-rd'"`, `near "E'[redacted]'"`, []string{pw}},
		{"identifier", `role "p'a\ss""w-rd" does not exist`, `role "[redacted]" does not exist`, []string{pw}},
		{"verifier", `invalid input syntax for type integer: "` + verifier + `"`, `invalid input syntax for type integer: "[redacted]"`, []string{pw, verifier}},
		{"every form at once", `a p'a\ss"w-rd b p''a\ss"w-rd c p'a\\ss"w-rd d p''a\\ss"w-rd`, `a [redacted] b [redacted] c [redacted] d [redacted]`, []string{pw}},
		{"short secrets are left", `the value abc is wrong`, `the value abc is wrong`, []string{"abc"}},
		{"empty secret", `nothing to hide`, `nothing to hide`, []string{""}},
		{"no secret in message", `permission denied for table orders`, `permission denied for table orders`, []string{pw, verifier}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := redact(tc.msg, tc.secrets...); got != tc.want {
				t.Fatalf("redact(%q)\n got %q\nwant %q", tc.msg, got, tc.want)
			}
		})
	}
}

// TestRedactServerMessages makes PostgreSQL quote a password in an error,
// in each quoting context a statement can hold it, and checks that the
// error NewUser returns holds none of its forms.
func TestRedactServerMessages(t *testing.T) {
	cases := []struct {
		name, auth, stmt string
	}{
		// A syntax error quotes the token as written: quotes doubled.
		{"standard string token", passwordAuthPassword, `SELECT 1 '{{password}}';`},
		// E'' as rendered: backslashes and quotes doubled.
		{"escape string token", passwordAuthPassword, `SELECT 1 E'{{password}}';`},
		// A cast error quotes the value itself.
		{"value in a cast", passwordAuthPassword, `SELECT '{{password}}'::int;`},
		// With scram the statement holds the verifier, which a cast error quotes.
		{"verifier in a cast", passwordAuthSCRAM, `SELECT '{{password}}'::int;`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newDB(t, map[string]interface{}{"password_authentication": tc.auth})
			req := newUserReq(tc.stmt)
			req.Password = `Aa1'b\c"d-` + randSuffix()
			_, err := db.NewUser(testCtx(t), req)
			if err == nil {
				t.Fatal("the statement was meant to fail")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, f := range secretForms(req.Password) {
				if strings.Contains(msg, f) {
					t.Fatalf("error holds the password as %q: %s", f, msg)
				}
			}
			if strings.Contains(msg, "SCRAM-SHA-256$") {
				t.Fatalf("error holds the verifier: %s", msg)
			}
			if !strings.Contains(msg, "[redacted]") {
				t.Fatalf("the server did not quote the secret, the test proves nothing: %s", msg)
			}
		})
	}
}
