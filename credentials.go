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
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/hashicorp/vault/sdk/helper/template"
	"golang.org/x/text/unicode/norm"
)

// defaultUsernameTemplate is the built-in plugin's default, so that switching
// plugin_name does not change the shape of generated names.
const defaultUsernameTemplate = `{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}`

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
	if err := checkUsername(safeUsername(name)); err != nil {
		return template.StringTemplate{}, fmt.Errorf("username_template: %w", err)
	}
	return up, nil
}

// safeUsername maps every character that could end a quoting context in
// SQL — " ' \ $ and control characters (line breaks included) — to "_". The
// display name in a username comes from the Vault token, which whoever logs
// in can often shape (OIDC claims, userpass names); the renderer already
// escapes values for their context, and this keeps a generated name harmless
// even in a statement that pastes it where no escaping can reach (a string
// built with || inside EXECUTE).
func safeUsername(name string) string {
	if strings.IndexFunc(name, unsafeInName) < 0 {
		return name
	}
	return strings.Map(func(r rune) rune {
		if unsafeInName(r) {
			return '_'
		}
		return r
	}, name)
}

func unsafeInName(r rune) bool {
	switch r {
	case '"', '\'', '\\', '$', utf8.RuneError:
		return true
	}
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
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
// never reaches the server, its logs or the network. auto is SCRAM-SHA-256,
// whatever the server's password_encryption says: every supported server
// (14+) stores a SCRAM verifier it is given, and an md5 line in pg_hba.conf
// authenticates a SCRAM-stored user with SCRAM. An md5 verifier is the one
// form that logs in by itself (md5 authentication only proves knowledge of
// the hash), so it is sent only when md5 is asked for by name.
// iterations is the SCRAM iteration count (the server's scram_iterations).
func passwordVerifier(mode string, iterations int, username, password string) (string, error) {
	switch mode {
	case passwordAuthPassword:
		return password, nil
	case passwordAuthMD5:
		sum := md5.Sum([]byte(password + username))
		return "md5" + hex.EncodeToString(sum[:]), nil
	case passwordAuthAuto, passwordAuthSCRAM:
		return scramSHA256Verifier(password, iterations)
	default:
		return "", fmt.Errorf("unknown password_authentication %q", mode)
	}
}

// defaultSCRAMIterations is PostgreSQL's default scram_iterations, and the
// fixed count before PostgreSQL 16 made it a setting.
const defaultSCRAMIterations = 4096

// scramSHA256Verifier computes the SCRAM-SHA-256 secret in the form
// PostgreSQL stores in pg_authid.rolpassword (RFC 5802, RFC 7677), with
// the given iteration count (defaultSCRAMIterations if not positive).
func scramSHA256Verifier(password string, iterations int) (string, error) {
	if iterations <= 0 {
		iterations = defaultSCRAMIterations
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
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
