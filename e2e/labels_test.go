package e2e

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// roleLabel reads a role's comment as the plugin's JSON label.
func roleLabel(t *testing.T, p *pgxpool.Pool, role string) map[string]string {
	t.Helper()
	comment, _, err := pgtest.RoleComment(ctxT(t), p, role)
	must(t, err)
	label := map[string]string{}
	if err := json.Unmarshal([]byte(comment), &label); err != nil {
		t.Fatalf("role %s: comment %q is not a label: %v", role, comment, err)
	}
	return label
}

// TestLabelsAndReaping: credentials issued through Vault carry the label
// with their Vault role and expiry, and a renewal moves it. A lease Vault
// forgets (its revocation statements fail, then `lease revoke -force`) leaves
// an orphan, which a mount with reap_orphans_after=2s removes within
// seconds, while a live labelled role, an unlabelled role and a role with a
// DBA's comment survive.
func TestLabelsAndReaping(t *testing.T) {
	_, c := devVault(t)
	a := superPool(t)
	cfg := rootConfig(pg.SuperUser, pg.SuperPassword)
	cfg["reap_orphans_after"] = "2s"
	must(t, vaulttest.Configure(c, "database", "reaping", plugin, cfg))
	write(t, c, "database/roles/labelled", map[string]interface{}{
		"db_name": "reaping", "default_ttl": "1h", "creation_statements": []string{creation},
	})
	write(t, c, "database/roles/forgotten", map[string]interface{}{
		"db_name": "reaping", "default_ttl": "2s", "max_ttl": "2s", "creation_statements": []string{creation},
		"revocation_statements": []string{`SELECT * FROM no_such_table_makes_revocation_fail;`},
	})

	live := read(t, c, "database/creds/labelled")
	liveUser, _ := creds(live)
	label := roleLabel(t, a, liveUser)
	if label["managed_by"] != "vault-plugin-database-postgres" || label["vault_role"] != "labelled" || label["display_name"] == "" {
		t.Fatalf("label %v", label)
	}
	expires, err := time.Parse(time.RFC3339, label["expires"])
	if err != nil || expires.Before(time.Now().Add(50*time.Minute)) || expires.After(time.Now().Add(70*time.Minute)) {
		t.Fatalf("label expires %q (%v), want about an hour from now", label["expires"], err)
	}
	if _, err := c.Sys().Renew(live.LeaseID, 7200); err != nil {
		t.Fatal(err)
	}
	if renewed := roleLabel(t, a, liveUser); renewed["expires"] == label["expires"] {
		t.Fatalf("renewal did not move expires (%s)", renewed["expires"])
	}

	unlabelled := "unlabelled-" + strings.ToLower(time.Now().Format("150405.000"))
	commented := "dba-note-" + strings.ToLower(time.Now().Format("150405.000"))
	for _, q := range []string{
		`CREATE ROLE "` + unlabelled + `" LOGIN`,
		`CREATE ROLE "` + commented + `" LOGIN`,
		`COMMENT ON ROLE "` + commented + `" IS 'kept by the DBA: do not touch'`,
	} {
		if _, err := a.Exec(ctxT(t), q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = a.Exec(ctxT(t), `DROP ROLE IF EXISTS "`+unlabelled+`"`)
		_, _ = a.Exec(ctxT(t), `DROP ROLE IF EXISTS "`+commented+`"`)
	})

	orphan := read(t, c, "database/creds/forgotten")
	orphanUser, _ := creds(orphan)
	// Revocation fails, so Vault is told to forget the lease.
	if err := c.Sys().RevokeForce(orphan.LeaseID); err != nil {
		t.Fatalf("lease revoke -force: %v", err)
	}
	if !roleExists(t, a, orphanUser) {
		t.Fatal("the orphan is already gone: the test proves nothing")
	}
	err = pgtest.Poll(ctxT(t), 60*time.Second, 250*time.Millisecond, func() error {
		if roleExists(t, a, orphanUser) {
			return errors.New("orphan still there")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the orphan %s was not reaped within 60s", orphanUser)
	}
	for _, r := range []string{liveUser, unlabelled, commented} {
		if !roleExists(t, a, r) {
			t.Errorf("role %s was reaped, but it is live, unlabelled or a DBA's", r)
		}
	}
}
