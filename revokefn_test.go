package postgres

import (
	"fmt"
	"testing"

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
