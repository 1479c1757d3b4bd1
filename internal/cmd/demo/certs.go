package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// certificates shows client-certificate credentials: Vault issues a
// certificate, the application logs in with it and no password, and after
// revocation the same certificate is refused.
func certificates(ctx context.Context, c *api.Client, pg *pgtest.Server, admin *pgxpool.Pool, dir string) error {
	ca, err := pg.ClientCA()
	if err != nil {
		return err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := pg.CreateCertGroup(ctx); err != nil {
		return fmt.Errorf("creating %s: %w", pgtest.CertGroup, err)
	}
	if _, err := c.Logical().Write("database/roles/app-cert", map[string]interface{}{
		"db_name": "pg", "default_ttl": "1h", "credential_type": "client_certificate",
		"credential_config": map[string]interface{}{
			"ca_cert": ca.PEM, "ca_private_key": caKey, "key_type": "ec",
			"common_name_template": `{{ printf "v-%s-%s-%s" (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}`,
		},
		"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN VALID UNTIL '{{expiration}}' IN ROLE ` + pgtest.CertGroup + `; GRANT pg_read_all_data TO "{{name}}";`},
	}); err != nil {
		return fmt.Errorf("creating the certificate role: %w", err)
	}
	sec, err := c.Logical().Read("database/creds/app-cert")
	if err != nil {
		return fmt.Errorf("reading certificate credentials: %w", err)
	}
	user, _ := sec.Data["username"].(string)
	certPEM, _ := sec.Data["client_certificate"].(string)
	keyPEM, _ := sec.Data["private_key"].(string)
	certFile, keyFile, err := pgtest.WriteCertFiles(dir, certPEM, keyPEM)
	if err != nil {
		return err
	}
	session, err := pgx.Connect(ctx, pg.CertURL(user, certFile, keyFile, ""))
	if err != nil {
		return fmt.Errorf("logging in with the certificate: %w", err)
	}
	defer session.Close(context.Background())
	var who string
	var noPassword bool
	if err := session.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		return err
	}
	if err := admin.QueryRow(ctx, "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = $1", user).Scan(&noPassword); err != nil || !noPassword {
		return fmt.Errorf("certificate user %s has a password (%v)", user, err)
	}
	step("vault read database/creds/app-cert → a certificate for CN=%s; logged in with it as %s, no password anywhere (rolpassword is NULL)", user, who)
	if err := c.Sys().Revoke(sec.LeaseID); err != nil {
		return fmt.Errorf("revoking the certificate's lease: %w", err)
	}
	if err := session.Ping(ctx); err == nil {
		return fmt.Errorf("the certificate user's session survived revocation")
	}
	again, err := pgx.Connect(ctx, pg.CertURL(user, certFile, keyFile, ""))
	if err == nil {
		again.Close(context.Background())
		return fmt.Errorf("the certificate still logs in after revocation")
	}
	// The role is gone, so no cert rule matches and the server falls back
	// to asking for a password, which a certificate user has none of.
	step("revoked the certificate's lease: its session was ended, and the certificate is refused (%q)", shortErr(err))
	return nil
}

// shortErr is the server's reason without pgx's connection preamble.
func shortErr(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	return err.Error()
}
