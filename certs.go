package postgres

// Client-certificate users (Vault's client_certificate credential type).
// Vault generates the key pair and a certificate whose subject is
// CN=<common_name_template> and calls NewUser with that subject; the plugin
// creates a role named exactly after the CN, with no password. PostgreSQL's
// pg_hba "cert" method then logs a client in as the role its certificate's
// CN names, once the certificate verifies against ssl_ca_file.

import (
	"context"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// certCreationExample is the creation statement the README recommends; the
// group is the one pg_hba admits with "cert".
const certCreationExample = `CREATE ROLE "{{name}}" WITH LOGIN VALID UNTIL '{{expiration}}' IN ROLE vault_cert_users;`

// newCertUser creates a user that logs in with a client certificate: its
// name is the subject's CN, and its creation statements get no password.
func (p *Postgres) newCertUser(ctx context.Context, st *state, req dbplugin.NewUserRequest) (dbplugin.NewUserResponse, error) {
	if !hasStatements(req.Statements.Commands) {
		return dbplugin.NewUserResponse{}, errors.New("the role has no creation_statements: add e.g. " + certCreationExample +
			" (a client_certificate user has no password; the group is the one pg_hba admits with cert)")
	}
	username, err := certUsername(req.Subject)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("client certificate: %w", err)
	}
	if err := st.reservedName(username, "give the certificate another common name"); err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	vals := render.NewValues(username).WithExpiration(req.Expiration)
	sql, err := render.Render(req.Statements.Commands, vals)
	if err != nil {
		if strings.Contains(err.Error(), "{{password}}") {
			return dbplugin.NewUserResponse{}, fmt.Errorf("creation_statements: %w: a client_certificate user logs in with its certificate and has no password; remove PASSWORD '{{password}}' (e.g. %s)", err, certCreationExample)
		}
		return dbplugin.NewUserResponse{}, fmt.Errorf("creation_statements: %w", err)
	}
	// Labelled like any created user, so that an orphan can be reaped.
	if err := p.createLabelled(ctx, st, req, username, sql, vals); err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	p.logger.Debug("created user", "username", username, "credential_type", dbplugin.CredentialTypeClientCertificate.String())
	return dbplugin.NewUserResponse{Username: username}, nil
}

// checkUpdateCredential accepts the credential types UpdateUser serves.
// Vault renews a client_certificate lease with an UpdateUser that names no
// credential type (so password) and carries only an expiration; a password
// change for a certificate user is a mistake worth naming.
func checkUpdateCredential(req dbplugin.UpdateUserRequest) error {
	switch req.CredentialType {
	case dbplugin.CredentialTypePassword:
		return nil
	case dbplugin.CredentialTypeClientCertificate:
		if req.Password != nil {
			return errors.New("a client_certificate user has no password to change: its certificate is its credential; send only a new expiration")
		}
		return nil
	}
	return fmt.Errorf("credential type %q is not supported; use password or client_certificate", req.CredentialType)
}

// certUsername is the role a certificate with this subject logs in as: the
// subject's one CN, exactly, since PostgreSQL's cert authentication compares
// the whole CN with the role name. A CN that cannot be that role name is
// refused rather than mapped, because a mapped name would never match.
func certUsername(subject string) (string, error) {
	attrs, err := parseDN(subject)
	if err != nil {
		return "", err
	}
	var cns []string
	for _, a := range attrs {
		if isCNType(a.typ) {
			cns = append(cns, a.value)
		}
	}
	switch len(cns) {
	case 0:
		return "", fmt.Errorf("the subject %q has no CN; PostgreSQL's cert authentication logs in as the CN, so common_name_template must render one", subject)
	case 1:
	default:
		return "", fmt.Errorf("the subject %q has %d CNs; it needs exactly one, the role name PostgreSQL's cert authentication logs in as", subject, len(cns))
	}
	cn := cns[0]
	switch {
	case cn == "":
		return "", fmt.Errorf("the CN of the subject %q is empty; common_name_template must render a role name", subject)
	case strings.ContainsRune(cn, 0):
		return "", fmt.Errorf("the CN of the subject %q contains a NUL byte, which a PostgreSQL role name cannot hold", subject)
	case !utf8.ValidString(cn):
		return "", fmt.Errorf("the CN of the subject %q is not valid UTF-8", subject)
	case len(cn) > maxIdentifierLength:
		return "", fmt.Errorf("the CN %q is %d bytes; PostgreSQL role names are at most %d bytes and cert authentication compares the whole CN (use truncate %d in common_name_template)",
			cn, len(cn), maxIdentifierLength, maxIdentifierLength)
	}
	if i := strings.IndexFunc(cn, unsafeInName); i >= 0 {
		r, _ := utf8.DecodeRuneInString(cn[i:])
		return "", fmt.Errorf("the CN %q contains the character %q, which the plugin refuses in role names (generated usernames get \"_\" instead, but a certificate's CN must match the role name exactly): change common_name_template", cn, r)
	}
	return cn, nil
}

// isCNType reports whether an attribute type names commonName (2.5.4.3).
func isCNType(typ string) bool {
	return strings.EqualFold(typ, "CN") || strings.EqualFold(typ, "commonName") ||
		typ == "2.5.4.3" || strings.EqualFold(typ, "OID.2.5.4.3")
}

// dnAttribute is one type=value pair of a distinguished name.
type dnAttribute struct{ typ, value string }

// parseDN parses a distinguished name in the string form of RFC 4514, the
// form Vault sends (Go's pkix.Name.String): attributes separated by "," or
// "+" (multi-valued RDNs), values with "\" escaping a character or giving a
// byte as two hex digits, or "#" and the hex of the value's BER encoding.
// Spaces around separators are ignored, as RFC 2253 readers do; a value's
// own leading and trailing spaces are escaped.
func parseDN(dn string) ([]dnAttribute, error) {
	if strings.TrimSpace(dn) == "" {
		return nil, nil
	}
	var attrs []dnAttribute
	for i := 0; ; {
		eq := strings.IndexByte(dn[i:], '=')
		if eq < 0 {
			return nil, fmt.Errorf("the subject %q is not a distinguished name: %q has no \"=\"", dn, dn[i:])
		}
		typ := strings.TrimSpace(dn[i : i+eq])
		if typ == "" || strings.ContainsAny(typ, ",+\\") {
			return nil, fmt.Errorf("the subject %q is not a distinguished name: %q is not an attribute type", dn, typ)
		}
		value, next, err := parseDNValue(dn, i+eq+1)
		if err != nil {
			return nil, fmt.Errorf("the subject %q: the value of %s %w", dn, typ, err)
		}
		attrs = append(attrs, dnAttribute{typ: typ, value: value})
		if next == len(dn) {
			return attrs, nil
		}
		i = next + 1 // past the separator
	}
}

// parseDNValue reads the value starting at dn[i] and returns it with the
// index of the separator that ends it (len(dn) at the end).
func parseDNValue(dn string, i int) (string, int, error) {
	for i < len(dn) && dn[i] == ' ' {
		i++
	}
	if i < len(dn) && dn[i] == '#' {
		end := i + 1
		for end < len(dn) && dn[end] != ',' && dn[end] != '+' {
			end++
		}
		der, err := hex.DecodeString(strings.TrimRight(dn[i+1:end], " "))
		if err != nil {
			return "", 0, errors.New("starts with # but is not hex")
		}
		var s string
		if rest, err := asn1.Unmarshal(der, &s); err != nil || len(rest) > 0 {
			return "", 0, errors.New("is hex (#) but not the BER encoding of a string")
		}
		return s, end, nil
	}
	var b []byte
	keep := 0 // b's length up to its last escaped or non-space byte
	for ; i < len(dn); i++ {
		c := dn[i]
		switch {
		case c == ',' || c == '+':
			return string(b[:keep]), i, nil
		case c == '\\':
			switch {
			case i+1 >= len(dn):
				return "", 0, errors.New("ends in a backslash")
			case i+2 < len(dn) && isHex(dn[i+1]) && isHex(dn[i+2]):
				h, _ := hex.DecodeString(dn[i+1 : i+3])
				b = append(b, h[0])
				i += 2
			default:
				b = append(b, dn[i+1])
				i++
			}
			keep = len(b)
		default:
			b = append(b, c)
			if c != ' ' {
				keep = len(b)
			}
		}
	}
	return string(b[:keep]), len(dn), nil
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
