package postgres

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/hashicorp/vault/sdk/helper/template"
	"github.com/jackc/pgx/v5"
	"golang.org/x/text/unicode/norm"
)

// defaultUsernameTemplate is the built-in plugin's default, so that switching
// plugin_name does not change the shape of generated names.
const defaultUsernameTemplate = `{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}`

// expirationFormat is how {{expiration}} is rendered, as the built-in does: a
// timestamp with zone that PostgreSQL parses in VALID UNTIL.
const expirationFormat = "2006-01-02 15:04:05-0700"

// maxIdentifierLength is PostgreSQL's NAMEDATALEN-1; longer names are silently
// truncated by the server, which would make the returned username wrong.
const maxIdentifierLength = 63

// Password authentication modes (password_authentication).
const (
	passwordAuthAuto     = "auto"
	passwordAuthPassword = "password"
	passwordAuthSCRAM    = "scram-sha-256"
	passwordAuthMD5      = "md5"
)

// newUsernameTemplate parses tmpl and renders one name to prove it works, so a
// broken template is reported at configuration time rather than on the first
// credential request.
func newUsernameTemplate(tmpl string) (template.StringTemplate, error) {
	if tmpl == "" {
		tmpl = defaultUsernameTemplate
	}
	up, err := template.NewTemplate(template.Template(tmpl))
	if err != nil {
		return template.StringTemplate{}, fmt.Errorf("username_template: %w", err)
	}
	name, err := up.Generate(dbplugin.UsernameMetadata{DisplayName: "token", RoleName: "role"})
	if err != nil {
		return template.StringTemplate{}, fmt.Errorf("username_template: rendering a test name: %w", err)
	}
	if err := checkUsername(name); err != nil {
		return template.StringTemplate{}, fmt.Errorf("username_template: %w", err)
	}
	return up, nil
}

func checkUsername(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("renders an empty username")
	case len(name) > maxIdentifierLength:
		return fmt.Errorf("renders a %d-byte username %q; PostgreSQL allows at most %d bytes (use truncate 63)", len(name), name, maxIdentifierLength)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("renders a username with a NUL byte")
	}
	return nil
}

// passwordVerifier returns what goes into {{password}}: the password itself for
// "password", otherwise a verifier the server stores as is, so the plaintext
// never reaches the server, its logs or the network.
func passwordVerifier(mode, serverEncryption, username, password string) (string, error) {
	if mode == passwordAuthAuto {
		mode = passwordAuthSCRAM
		if serverEncryption == "md5" {
			mode = passwordAuthMD5
		}
	}
	switch mode {
	case passwordAuthPassword:
		return password, nil
	case passwordAuthMD5:
		sum := md5.Sum([]byte(password + username))
		return "md5" + hex.EncodeToString(sum[:]), nil
	case passwordAuthSCRAM:
		return scramSHA256Verifier(password)
	default:
		return "", fmt.Errorf("unknown password_authentication %q", mode)
	}
}

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// scramSHA256Verifier computes the SCRAM-SHA-256 secret in the form
// PostgreSQL stores in pg_authid.rolpassword (RFC 5802, RFC 7677).
func scramSHA256Verifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, scramIterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// saslPrep normalizes a password the way PostgreSQL's pg_saslprep does before
// hashing: non-ASCII spaces become spaces, "mapped to nothing" characters go,
// the rest is NFKC-normalized. Like the server, a password that is not valid
// UTF-8 or holds prohibited characters is used as raw bytes.
func saslPrep(password string) string {
	ascii := true
	for i := 0; i < len(password); i++ {
		if password[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii || !utf8.ValidString(password) {
		return password
	}
	var b strings.Builder
	for _, r := range password {
		switch {
		case r == '\u00AD' || r == '\u034F' || r == '\u1806' || (r >= '\u180B' && r <= '\u180D') ||
			r == '\u200B' || r == '\u200C' || r == '\u200D' || r == '\u2060' ||
			(r >= '\uFE00' && r <= '\uFE0F') || r == '\uFEFF':
			continue // RFC 3454 B.1: mapped to nothing
		case r != ' ' && unicode.Is(unicode.Zs, r):
			b.WriteRune(' ') // C.1.2: non-ASCII space
		default:
			b.WriteRune(r)
		}
	}
	out := norm.NFKC.String(b.String())
	for _, r := range out {
		if unicode.IsControl(r) || unicode.Is(unicode.Co, r) || unicode.Is(unicode.Cs, r) || r == '\uFFFD' {
			return password
		}
	}
	return out
}

// templateValues are the values a statement can refer to.
type templateValues struct {
	Username   string
	Password   string // already in the form to send (verifier or plaintext)
	Expiration string
	hasPass    bool
	hasExp     bool
}

func newTemplateValues(username string) templateValues {
	return templateValues{Username: username}
}

func (v templateValues) withPassword(p string) templateValues {
	v.Password, v.hasPass = p, true
	return v
}

func (v templateValues) withExpiration(t time.Time) templateValues {
	v.Expiration, v.hasExp = t.Format(expirationFormat), true
	return v
}

// lookup returns the value for a placeholder name and whether it is a
// username (quoted as an identifier when it stands bare in the SQL).
func (v templateValues) lookup(name string) (val string, ident bool, err error) {
	switch name {
	case "name", "username":
		return v.Username, true, nil
	case "password":
		if !v.hasPass {
			return "", false, fmt.Errorf("{{password}} is not available in this statement")
		}
		return v.Password, false, nil
	case "expiration":
		if !v.hasExp {
			return "", false, fmt.Errorf("{{expiration}} is not available in this statement")
		}
		return v.Expiration, false, nil
	}
	return "", false, fmt.Errorf("unknown placeholder {{%s}} (use {{name}}, {{username}}, {{password}} or {{expiration}})", name)
}

// renderStatements renders every statement and joins them into one SQL text
// that is sent in a single simple-protocol Exec: PostgreSQL runs it as one
// implicit transaction, so the request is atomic and costs one round trip.
// Statements are never split: DO blocks, function bodies and semicolons in
// literals reach the server exactly as written.
func renderStatements(stmts []string, v templateValues) (string, error) {
	var b strings.Builder
	for i, s := range stmts {
		if strings.TrimSpace(s) == "" {
			continue
		}
		out, err := renderSQL(s, v)
		if err != nil {
			return "", fmt.Errorf("statement %d: %w", i+1, err)
		}
		// The newline ends a trailing -- comment before the separator.
		b.WriteString(out)
		b.WriteString("\n;\n")
	}
	return b.String(), nil
}

// renderSQL substitutes {{placeholders}} in one piece of SQL, escaping each
// value for the quoting context it appears in: inside "…" as an identifier,
// inside '…' or E'…' as a literal, bare as a quoted identifier (names) or
// literal (other values). Dollar-quoted bodies (DO $$ … $$, function bodies)
// are rendered recursively as SQL, and a value may never contain the tag
// that would close its body. Placeholders in comments are left alone.
func renderSQL(sql string, v templateValues) (string, error) {
	return renderIn(sql, v, nil)
}

func renderIn(sql string, v templateValues, closers []string) (string, error) {
	var b strings.Builder
	b.Grow(len(sql) + 64)
	emit := func(val string) error {
		for _, c := range closers {
			if strings.Contains(val, c) {
				return fmt.Errorf("a value contains %q, which would end the dollar-quoted body it is rendered into; use another dollar-quote tag", c)
			}
		}
		b.WriteString(val)
		return nil
	}
	// placeholder reports the name of a {{…}} placeholder at sql[i:], and its length.
	placeholder := func(i int) (string, int) {
		if !strings.HasPrefix(sql[i:], "{{") {
			return "", 0
		}
		end := strings.Index(sql[i+2:], "}}")
		if end < 0 {
			return "", 0
		}
		// Only identifier-like names are placeholders: '{{1,2},{3,4}}' is
		// an array literal, while a misspelt {{nmae}} is an error.
		name := strings.TrimSpace(sql[i+2 : i+2+end])
		if !isPlaceholderName(name) {
			return "", 0
		}
		return name, end + 4
	}

	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				end = len(sql) - i
			}
			b.WriteString(sql[i : i+end])
			i += end
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			end := blockCommentEnd(sql, i)
			b.WriteString(sql[i:end])
			i = end
		case c == '\'' || c == '"':
			escapeStr := c == '\'' && i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdentChar(sql[i-2]))
			// U&'…' and U&"…" treat a backslash as the start of a Unicode
			// escape; a doubled one stands for itself.
			unicodeStr := i > 1 && sql[i-1] == '&' && (sql[i-2] == 'U' || sql[i-2] == 'u') && (i < 3 || !isIdentChar(sql[i-3]))
			b.WriteByte(c)
			i++
			for i < len(sql) {
				if name, n := placeholder(i); n > 0 {
					val, _, err := v.lookup(name)
					if err != nil {
						return "", err
					}
					if escapeStr || unicodeStr {
						val = strings.ReplaceAll(val, `\`, `\\`)
					}
					if c == '"' {
						val = strings.ReplaceAll(val, `"`, `""`)
					} else {
						val = strings.ReplaceAll(val, `'`, `''`)
					}
					if err := emit(val); err != nil {
						return "", err
					}
					i += n
					continue
				}
				if escapeStr && sql[i] == '\\' && i+1 < len(sql) {
					b.WriteString(sql[i : i+2])
					i += 2
					continue
				}
				if sql[i] == c {
					if i+1 < len(sql) && sql[i+1] == c { // doubled quote
						b.WriteString(sql[i : i+2])
						i += 2
						continue
					}
					b.WriteByte(c)
					i++
					break
				}
				b.WriteByte(sql[i])
				i++
			}
		case c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
			tag, ok := dollarTag(sql[i:])
			if !ok {
				b.WriteByte(c)
				i++
				continue
			}
			bodyStart := i + len(tag)
			end := strings.Index(sql[bodyStart:], tag)
			if end < 0 { // unterminated: leave the rest to the server's error
				b.WriteString(sql[i:])
				i = len(sql)
				continue
			}
			inner, err := renderIn(sql[bodyStart:bodyStart+end], v, append(closers[:len(closers):len(closers)], tag))
			if err != nil {
				return "", err
			}
			b.WriteString(tag)
			b.WriteString(inner)
			b.WriteString(tag)
			i = bodyStart + end + len(tag)
		case c == '{':
			name, n := placeholder(i)
			if n == 0 {
				b.WriteByte(c)
				i++
				continue
			}
			val, ident, err := v.lookup(name)
			if err != nil {
				return "", err
			}
			if ident {
				val = pgx.Identifier{val}.Sanitize()
			} else {
				val = quoteLiteral(val)
			}
			if err := emit(val); err != nil {
				return "", err
			}
			i += n
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

func isPlaceholderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')) {
			return false
		}
	}
	return true
}

// dollarTag returns the opening tag ($$ or $name$) at the start of s.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		ch := s[j]
		if ch == '$' {
			return s[:j+1], true
		}
		if !(ch == '_' || ch >= 0x80 || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (j > 1 && ch >= '0' && ch <= '9')) {
			return "", false
		}
	}
	return "", false
}

func blockCommentEnd(s string, i int) int {
	depth := 0
	for j := i; j < len(s)-1; j++ {
		switch {
		case s[j] == '/' && s[j+1] == '*':
			depth++
			j++
		case s[j] == '*' && s[j+1] == '/':
			depth--
			j++
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(s)
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// quoteLiteral quotes s as a standard-conforming SQL string literal.
func quoteLiteral(s string) string {
	if strings.Contains(s, `\`) {
		// E'' makes the meaning independent of standard_conforming_strings.
		return `E'` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `''`) + `'`
	}
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// quoteIdent quotes a role or database name for SQL text.
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
