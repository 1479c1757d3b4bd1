package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// TestClientCertificateCredentials: Vault issues a client certificate from a
// CA the server trusts, the plugin creates the role named after its CN, and
// the application connects with the certificate alone, until revocation.
func TestClientCertificateCredentials(t *testing.T) {
	_, c := devVault(t)
	ca, err := pg.ClientCA()
	if err != nil {
		t.Skip(err)
	}
	caKey, err := ca.KeyPEM()
	must(t, err)
	must(t, pg.CreateCertGroup(ctxT(t)))
	a := superPool(t)

	for _, keyType := range []string{"ec", "rsa"} {
		t.Run(keyType, func(t *testing.T) {
			sec, user, certPEM, keyPEM := issueCert(t, c, ca, caKey, keyType)
			var hasPassword bool
			must(t, a.QueryRow(ctxT(t), "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1", user).Scan(&hasPassword))
			if hasPassword {
				t.Error("the certificate user has a password in pg_authid")
			}

			certFile, keyFile, err := pgtest.WriteCertFiles(t.TempDir(), certPEM, keyPEM)
			must(t, err)
			url := pg.CertURL(user, certFile, keyFile, "")
			conn, err := pgx.Connect(ctxT(t), url)
			if err != nil {
				t.Fatalf("connect with the certificate Vault issued: %v", err)
			}
			defer conn.Close(context.Background())
			var current string
			must(t, conn.QueryRow(ctxT(t), "SELECT current_user").Scan(&current))
			if current != user {
				t.Fatalf("logged in as %q, want %q", current, user)
			}
			if err := pg.CanLogin(ctxT(t), user, ""); err == nil {
				t.Error("the certificate user logged in without its certificate")
			}

			before := validUntil(t, a, user)
			if _, err := c.Sys().Renew(sec.LeaseID, 7200); err != nil {
				t.Fatalf("renew: %v", err)
			}
			after := validUntil(t, a, user)
			if !after.After(before) {
				t.Errorf("renewal did not move rolvaliduntil: %s -> %s", before, after)
			}

			must(t, c.Sys().Revoke(sec.LeaseID))
			if roleExists(t, a, user) {
				t.Fatalf("role %q still exists after revocation", user)
			}
			if _, err := conn.Exec(ctxT(t), "SELECT 1"); err == nil {
				t.Error("the session logged in with the certificate survived revocation")
			}
			if c2, err := pgx.Connect(ctxT(t), url); err == nil {
				c2.Close(context.Background())
				t.Error("the certificate still logs in after revocation")
			}
		})
	}
}

// issueCert writes a client_certificate role "cert-KEYTYPE" signed by ca,
// checks that reading it returns the CA's key (as the README warns), and
// issues credentials from it: a username, a certificate and a key of
// keyType, and no password.
func issueCert(t *testing.T, c *api.Client, ca *pgtest.CA, caKey, keyType string) (sec *api.Secret, user, certPEM, keyPEM string) {
	t.Helper()
	role := "cert-" + keyType
	// The API client sends JSON, so credential_config arrives as a map,
	// as `vault write database/roles/NAME - <role.json` does.
	write(t, c, "database/roles/"+role, map[string]interface{}{
		"db_name": "pg", "default_ttl": "1h", "max_ttl": "3h",
		"credential_type": "client_certificate",
		"credential_config": map[string]interface{}{
			"ca_cert":              ca.PEM,
			"ca_private_key":       caKey,
			"key_type":             keyType,
			"common_name_template": `{{ printf "v-%s-%s-%s" (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}`,
		},
		"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN VALID UNTIL '{{expiration}}' IN ROLE ` + pgtest.CertGroup + `;`},
	})
	cfg, _ := read(t, c, "database/roles/"+role).Data["credential_config"].(map[string]interface{})
	if cfg["ca_private_key"] != caKey {
		t.Errorf("reading the role no longer returns credential_config.ca_private_key (update the README's warning); credential_config keys: %v", keys(cfg))
	}
	sec = read(t, c, "database/creds/"+role)
	user, _ = sec.Data["username"].(string)
	certPEM, _ = sec.Data["client_certificate"].(string)
	keyPEM, _ = sec.Data["private_key"].(string)
	if user == "" || certPEM == "" || keyPEM == "" {
		t.Fatalf("creds lack username, client_certificate or private_key: %v", keys(sec.Data))
	}
	if got := fmt.Sprint(sec.Data["private_key_type"]); got != keyType {
		t.Errorf("private_key_type %q, want %q", got, keyType)
	}
	if _, ok := sec.Data["password"]; ok {
		t.Error("client_certificate creds include a password")
	}
	return sec, user, certPEM, keyPEM
}

func keys(m map[string]interface{}) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return strings.Join(ks, ", ")
}
