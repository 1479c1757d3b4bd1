package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// TestRevocationRunsAsSessionFunctions: a revocation leaves its two blocks
// as temporary functions of the plugin's session, and nowhere else (pg_temp
// is that session's alone). (Other tests' sessions may hold theirs: all of
// them must be temporary.)
func TestRevocationRunsAsSessionFunctions(t *testing.T) {
	needPG(t)
	a := admin(t)
	app := "fn-" + randSuffix()
	cfg := appConfig(app)
	cfg["max_open_connections"] = 2
	db := newDB(t, cfg)
	for i := 0; i < 3; i++ {
		user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt)).Username
		revokeDropped(t, db, a, user)
	}
	var fns, temp int
	err := a.QueryRow(testCtx(t), `SELECT count(*), count(*) FILTER (WHERE n.nspname LIKE 'pg_temp%')
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname LIKE 'pgvault_revoke_%'`).Scan(&fns, &temp)
	if err != nil {
		t.Fatal(err)
	}
	if fns == 0 || fns != temp {
		t.Fatalf("revocation functions: %d, of which %d temporary; want some, all temporary", fns, temp)
	}
}

// TestRevocationWithoutTemporaryObjects: where the admin may not create
// temporary objects (REVOKE TEMPORARY ON DATABASE … FROM PUBLIC), the
// revocation runs its blocks as DO statements, and the user is still gone.
func TestRevocationWithoutTemporaryObjects(t *testing.T) {
	needPG(t)
	dbname, a := isolatedDB(t)
	admin := "notemp-" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'notemp-pw'", render.QuoteIdent(admin)))
	shareHoldingRole(t, a, admin)
	execSQL(t, a, fmt.Sprintf("REVOKE TEMPORARY ON DATABASE %s FROM PUBLIC", render.QuoteIdent(dbname)))
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname), "username": admin, "password": "notemp-pw"})
	for i := 0; i < 2; i++ {
		user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt)).Username
		if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
			t.Fatalf("revocation without TEMPORARY: %v", err)
		}
		if roleExists(t, a, user) {
			t.Fatalf("%s survived the revocation", user)
		}
	}
}

// TestRevocationDisarmTakesBackEveryKindOfPrivilege runs the disarming step
// without its catch-all (which keeps a failure from stopping a revocation,
// and so would hide one) for a user given a privilege on every kind of
// object it handles, and checks that it fails nowhere and leaves none.
func TestRevocationDisarmTakesBackEveryKindOfPrivilege(t *testing.T) {
	needPG(t)
	dbname, a := isolatedDB(t)
	user := plainRole(t, a, "disarmed", "")
	u := render.QuoteIdent(user)
	execSQL(t, a, fmt.Sprintf(`CREATE SCHEMA s; CREATE TABLE s.t (id int, c int); CREATE SEQUENCE s.q; CREATE FUNCTION s.f() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE TYPE s.ty AS (x int); CREATE DOMAIN s.dom AS int; CREATE FOREIGN DATA WRAPPER w; CREATE SERVER srv FOREIGN DATA WRAPPER w;
SELECT lo_create(4242);
GRANT USAGE ON SCHEMA s TO %[1]s; GRANT SELECT ON s.t TO %[1]s; GRANT UPDATE (c) ON s.t TO %[1]s; GRANT USAGE ON SEQUENCE s.q TO %[1]s;
GRANT EXECUTE ON FUNCTION s.f() TO %[1]s; GRANT USAGE ON TYPE s.ty TO %[1]s; GRANT USAGE ON DOMAIN s.dom TO %[1]s;
GRANT USAGE ON FOREIGN DATA WRAPPER w TO %[1]s; GRANT USAGE ON FOREIGN SERVER srv TO %[1]s; GRANT SELECT ON LARGE OBJECT 4242 TO %[1]s;
GRANT USAGE ON LANGUAGE plpgsql TO %[1]s; GRANT TEMPORARY ON DATABASE %[2]s TO %[1]s; GRANT CREATE ON TABLESPACE pg_default TO %[1]s`, u, render.QuoteIdent(dbname)))
	t.Cleanup(func() { execSQL(t, admin(t), "REVOKE ALL ON TABLESPACE pg_default FROM "+u) })
	body, err := revokeDisarmSQL.fill(map[string]string{"role": render.QuoteLiteral(user)})
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndex(body, "EXCEPTION WHEN OTHERS THEN")
	if i < 0 {
		t.Fatal("revoke_disarm.sql has no catch-all to take off: the test needs updating")
	}
	execSQL(t, a, revokeTxSettings(time.Second)+"DO "+render.DollarQuote(body[:i]+"END"))
	var left []string
	if err := a.QueryRow(testCtx(t), `SELECT coalesce(array_agg(pg_describe_object(classid, objid, objsubid)), '{}') FROM pg_shdepend
		WHERE refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1) AND deptype = 'a'`, user).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("the disarming left the user privileges on %v", left)
	}
}
