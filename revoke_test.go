package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// ownedObjects is what a dynamic user creates in the test: a schema, and in
// the shared schema a table, a sequence and a function.
var ownedObjects = []struct{ kind, query string }{
	{"table", `SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'owned_t_' || $2`},
	{"sequence", `SELECT sequenceowner FROM pg_sequences WHERE schemaname = $1 AND sequencename = 'owned_s_' || $2`},
	{"function", `SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = 'owned_f_' || $2`},
	{"schema", `SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'owned_n_' || $2 AND $1 <> ''`},
}

// revokeCase is what the default revocation's scenarios share under one
// admin.
type revokeCase struct {
	adm      revokeAdmin
	a        *pgxpool.Pool
	db       *Postgres
	schema   string
	owner    string   // who is handed what a revoked user owned: the holding role
	creation []string // creation statements: create in schema and database
}

func TestDefaultRevocation(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, adm := range revokeAdmins() {
		t.Run(adm.name, func(t *testing.T) {
			db, schema := adm.newDBAndSchema(t, a, "rev_")
			// A sequence nobody in the test owns or may touch: the built-in's
			// REVOKE ... ON ALL SEQUENCES fails on it for a CREATEROLE admin.
			execSQL(t, a, fmt.Sprintf(`CREATE SEQUENCE %s.foreign_seq`, render.QuoteIdent(schema)))
			rc := revokeCase{adm: adm, a: a, db: db, schema: schema, owner: holdingRole,
				creation: []string{createStmt,
					fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)),
					`GRANT CREATE ON DATABASE postgres TO "{{name}}";`}}
			t.Run("owns table, sequence, function and schema", rc.ownedObjects)
			t.Run("open session running a long query", rc.longQuery)
			t.Run("objects in a second database", rc.secondDatabase)
			t.Run("objects in a database that no longer accepts connections", rc.closedDatabase)
			t.Run("privileges granted by a third role", rc.thirdRoleGrants)
			t.Run("already dropped role", rc.alreadyDropped)
		})
	}
}

func (rc revokeCase) ownedObjects(t *testing.T) {
	req := newUserReq(rc.creation...)
	user := dbtesting.AssertNewUser(t, rc.db, req).Username
	tag, schema := randSuffix(), render.QuoteIdent(rc.schema)
	execSQL(t, connectAs(t, user, req.Password, ""), strings.Join([]string{
		fmt.Sprintf(`CREATE TABLE %s.owned_t_%s (id int)`, schema, tag),
		fmt.Sprintf(`INSERT INTO %s.owned_t_%s VALUES (42)`, schema, tag),
		fmt.Sprintf(`CREATE SEQUENCE %s.owned_s_%s`, schema, tag),
		fmt.Sprintf(`CREATE FUNCTION %s.owned_f_%s() RETURNS int LANGUAGE sql AS 'SELECT 1'`, schema, tag),
		fmt.Sprintf(`CREATE SCHEMA owned_n_%s`, tag),
	}, "; "))
	revokeDropped(t, rc.db, rc.a, user)
	for _, o := range ownedObjects {
		var got string
		if err := rc.a.QueryRow(testCtx(t), o.query, rc.schema, tag).Scan(&got); err != nil {
			t.Fatalf("%s gone after revocation: %v", o.kind, err)
		}
		if got != rc.owner {
			t.Errorf("%s owned by %q, want %q", o.kind, got, rc.owner)
		}
	}
	var v int
	if err := rc.a.QueryRow(testCtx(t), fmt.Sprintf(`SELECT id FROM %s.owned_t_%s`, schema, tag)).Scan(&v); err != nil || v != 42 {
		t.Fatalf("table data lost: %v %v", v, err)
	}
}

func (rc revokeCase) longQuery(t *testing.T) {
	req := newUserReq(rc.creation...)
	user := dbtesting.AssertNewUser(t, rc.db, req).Username
	c, err := pg.Connect(testCtx(t), user, req.Password, "")
	if err != nil {
		t.Fatal(err)
	}
	pid := c.PgConn().PID()
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "SELECT pg_sleep(60)")
		_ = c.Close(context.Background())
		done <- err
	}()
	waitFor(t, func() bool {
		var n int
		_ = rc.a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", int32(pid)).Scan(&n)
		return n == 1
	})
	dbtesting.AssertDeleteUser(t, rc.db, dbplugin.DeleteUserRequest{Username: user})
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the long query finished normally")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the long query is still running after revocation")
	}
	var n int
	if err := rc.a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int32(pid)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("session %d still in pg_stat_activity (n=%d, err=%v)", pid, n, err)
	}
	if roleExists(t, rc.a, user) {
		t.Fatalf("role %q still exists", user)
	}
}

// otherDatabase creates a database the admin may grant CREATE on.
func (rc revokeCase) otherDatabase(t *testing.T, prefix string) string {
	t.Helper()
	dbname := prefix + randSuffix()
	execSQL(t, rc.a, fmt.Sprintf(`CREATE DATABASE %s`, render.QuoteIdent(dbname)))
	if rc.adm.user != "" {
		execSQL(t, rc.a, fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s WITH GRANT OPTION`, render.QuoteIdent(dbname), render.QuoteIdent(rc.adm.user)))
	}
	return dbname
}

func (rc revokeCase) secondDatabase(t *testing.T) {
	dbname := rc.otherDatabase(t, "rev2_")
	stmts := append(append([]string{}, rc.creation...), fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO "{{name}}";`, render.QuoteIdent(dbname)))
	req := newUserReq(stmts...)
	user := dbtesting.AssertNewUser(t, rc.db, req).Username
	execSQL(t, connectAs(t, user, req.Password, dbname), strings.Join([]string{
		`CREATE SCHEMA elsewhere`,
		`CREATE TABLE elsewhere.t (id int)`,
		`INSERT INTO elsewhere.t VALUES (7)`,
	}, "; "))
	revokeDropped(t, rc.db, rc.a, user)
	other := connectAs(t, pg.SuperUser, pg.SuperPassword, dbname)
	var got string
	var v int
	if err := other.QueryRow(testCtx(t), `SELECT tableowner FROM pg_tables WHERE schemaname = 'elsewhere' AND tablename = 't'`).Scan(&got); err != nil || got != rc.owner {
		t.Fatalf("table in %s owned by %q (%v), want %q", dbname, got, err, rc.owner)
	}
	if err := other.QueryRow(testCtx(t), `SELECT id FROM elsewhere.t`).Scan(&v); err != nil || v != 7 {
		t.Fatalf("data in %s lost: %v %v", dbname, v, err)
	}
}

func (rc revokeCase) closedDatabase(t *testing.T) {
	dbname := rc.otherDatabase(t, "revclosed_")
	group := "grp-" + randSuffix()
	execSQL(t, rc.a, fmt.Sprintf(`CREATE ROLE %s`, render.QuoteIdent(group)))
	if rc.adm.user != "" {
		execSQL(t, rc.a, fmt.Sprintf(`GRANT %s TO %s WITH ADMIN OPTION`, render.QuoteIdent(group), render.QuoteIdent(rc.adm.user)))
	}
	stmts := append(append([]string{}, rc.creation...),
		fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO "{{name}}";`, render.QuoteIdent(dbname)),
		fmt.Sprintf(`GRANT %s TO "{{name}}";`, render.QuoteIdent(group)))
	req := newUserReq(stmts...)
	user := dbtesting.AssertNewUser(t, rc.db, req).Username
	execSQL(t, connectAs(t, user, req.Password, dbname), `CREATE SCHEMA mine; CREATE TABLE mine.kept (id int)`)
	execSQL(t, rc.a, fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS false`, render.QuoteIdent(dbname)))
	// Revocation cannot reach that database: it must still finish,
	// leaving the role unable to log in and in no group.
	dbtesting.AssertDeleteUser(t, rc.db, dbplugin.DeleteUserRequest{Username: user})
	if !roleExists(t, rc.a, user) {
		t.Fatal("role dropped although it still owns a table elsewhere")
	}
	assertRevoked(t, rc.a, user, req.Password)
}

func (rc revokeCase) thirdRoleGrants(t *testing.T) {
	third := newThirdRole(t, rc.a, rc.schema)
	req := newUserReq(rc.creation...)
	user := dbtesting.AssertNewUser(t, rc.db, req).Username
	third.grantTo(t, rc.a, user)
	dbtesting.AssertDeleteUser(t, rc.db, dbplugin.DeleteUserRequest{Username: user})
	assertRevoked(t, rc.a, user, req.Password)
	if got := !roleExists(t, rc.a, user); got != rc.adm.thirdRoleDrops {
		t.Fatalf("role dropped = %v, want %v", got, rc.adm.thirdRoleDrops)
	}
	var n int
	if err := rc.a.QueryRow(testCtx(t), `SELECT count(*) FROM `+third.table()).Scan(&n); err != nil {
		t.Fatalf("third role's table gone: %v", err)
	}
}

func (rc revokeCase) alreadyDropped(t *testing.T) {
	req := newUserReq(createStmt)
	user := dbtesting.AssertNewUser(t, rc.db, req).Username
	execSQL(t, rc.a, fmt.Sprintf(`DROP ROLE %s`, render.QuoteIdent(user)))
	dbtesting.AssertDeleteUser(t, rc.db, dbplugin.DeleteUserRequest{Username: user})
	dbtesting.AssertDeleteUser(t, rc.db, dbplugin.DeleteUserRequest{Username: user, Statements: dbplugin.Statements{
		Commands: []string{`REVOKE ALL ON SCHEMA public FROM "{{name}}"; DROP ROLE "{{name}}";`}}})
}

func TestCustomRevocation(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	t.Run("runs atomically", func(t *testing.T) {
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user, Statements: dbplugin.Statements{
			Commands: []string{`DROP ROLE "{{name}}";`, `SELECT * FROM no_such_table_for_revoke;`}}})
		if err == nil || !strings.Contains(err.Error(), "no_such_table_for_revoke") {
			t.Fatalf("error = %v", err)
		}
		if !roleExists(t, a, user) {
			t.Fatal("a failed custom revocation dropped the role anyway: it is not atomic")
		}
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user, Statements: dbplugin.Statements{
			Commands: []string{`DO $$ BEGIN EXECUTE format('DROP ROLE %I', '{{name}}'); END $$;`}}})
		if roleExists(t, a, user) {
			t.Fatal("role still exists")
		}
	})
}

func TestRevocationGuards(t *testing.T) {
	needPG(t)
	a := admin(t)
	t.Run("the connection's own user", func(t *testing.T) {
		root := "selfrevoke-" + randSuffix()
		execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'self-pw'`, render.QuoteIdent(root)))
		db := newDB(t, map[string]interface{}{"username": root, "password": "self-pw"})
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: root})
		if err == nil || !strings.Contains(err.Error(), "refusing to revoke the user Vault connects as") {
			t.Fatalf("error = %v", err)
		}
		assertLogin(t, root, "self-pw")
	})
	t.Run("reassign_owned_to missing at configuration", func(t *testing.T) {
		db := newPostgres(hclog.NewNullLogger())
		defer db.Close()
		cfg := baseConfig()
		cfg["reassign_owned_to"] = "nobody-" + randSuffix()
		_, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
		if err == nil || !strings.Contains(err.Error(), "reassign_owned_to") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("reassign_owned_to dropped later", func(t *testing.T) {
		keeper := "gone-keeper-" + randSuffix()
		execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s`, render.QuoteIdent(keeper)))
		db := newDB(t, map[string]interface{}{"reassign_owned_to": keeper})
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		execSQL(t, a, fmt.Sprintf(`DROP ROLE %s`, render.QuoteIdent(keeper)))
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
		if err == nil || !strings.Contains(err.Error(), "reassign_owned_to") {
			t.Fatalf("error = %v", err)
		}
		// Nothing was changed: the user still works until the config is fixed.
		assertLogin(t, user, req.Password)
	})
}

func TestTerminateSessionsOff(t *testing.T) {
	db := newDB(t, map[string]interface{}{"terminate_sessions": "false"})
	a := admin(t)
	req := newUserReq(createStmt)
	user := dbtesting.AssertNewUser(t, db, req).Username
	c := connectAs(t, user, req.Password, "")
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	// PostgreSQL lets the role go while its session lives on: exactly what
	// terminate_sessions (on by default) prevents.
	if roleExists(t, a, user) {
		t.Fatal("role still exists")
	}
	var one int
	if err := c.QueryRow(testCtx(t), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("with terminate_sessions=false the session was ended anyway: %v", err)
	}
}

func TestReassignOwnedTo(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := "keeper-" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s`, render.QuoteIdent(keeper)))
	db := newDB(t, map[string]interface{}{"reassign_owned_to": keeper})
	user, _, tbl, c := userOwningTable(t, db, "kept_")
	c.Close(context.Background())
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	var owner string
	if err := a.QueryRow(testCtx(t), "SELECT tableowner FROM pg_tables WHERE tablename = $1", tbl).Scan(&owner); err != nil || owner != keeper {
		t.Fatalf("owner = %q (%v), want %q", owner, err, keeper)
	}
}

// TestRevocationKeepsNoConnectionToOtherDatabases: a hand-over in another
// database leaves no session of the plugin's there, which would make CREATE
// DATABASE from it (as a template) and DROP DATABASE fail for everyone.
func TestRevocationKeepsNoConnectionToOtherDatabases(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	dbname, copied := "rev3_"+randSuffix(), "rev3_copy_"+randSuffix()
	execSQL(t, a, "CREATE DATABASE "+render.QuoteIdent(dbname))
	t.Cleanup(func() {
		for _, d := range []string{copied, dbname} {
			_, _ = a.Exec(context.Background(), "DROP DATABASE IF EXISTS "+render.QuoteIdent(d)+" WITH (FORCE)")
		}
	})
	req := newUserReq(createStmt, fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO "{{name}}";`, render.QuoteIdent(dbname)))
	user := dbtesting.AssertNewUser(t, db, req).Username
	c := connectAs(t, user, req.Password, dbname)
	execSQL(t, c, "CREATE SCHEMA mine; CREATE TABLE mine.t (id int)")
	_ = c.Close(testCtx(t))
	revokeDropped(t, db, a, user)
	if _, err := a.Exec(testCtx(t), fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", render.QuoteIdent(copied), render.QuoteIdent(dbname))); err != nil {
		t.Errorf("CREATE DATABASE from the database the revocation handed objects over in: %v", err)
	}
	if _, err := a.Exec(testCtx(t), "DROP DATABASE "+render.QuoteIdent(dbname)); err != nil {
		t.Errorf("DROP DATABASE of the database the revocation handed objects over in: %v", err)
	}
}

// TestRevocationInAnotherDatabaseMustGoThrough: when the hand-over in
// another database the user owns objects in is held back by a lock, the
// revocation fails (Vault retries) instead of reporting success with the
// user's code live there; meanwhile its SECURITY DEFINER function there runs
// as its caller (the disarming committed there first).
func TestRevocationInAnotherDatabaseMustGoThrough(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	db2 := "rv2_" + randSuffix()
	execSQL(t, l.a, "CREATE DATABASE "+render.QuoteIdent(db2))
	t.Cleanup(func() {
		_, _ = l.a.Exec(context.Background(), "DROP DATABASE IF EXISTS "+render.QuoteIdent(db2)+" WITH (FORCE)")
	})
	execSQL(t, l.a, fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", render.QuoteIdent(db2), render.QuoteIdent(l.user)))
	sup2 := connectAs(t, pg.SuperUser, pg.SuperPassword, db2)
	execSQL(t, sup2, fmt.Sprintf(`CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data'); GRANT SELECT ON public.secret TO %s`, render.QuoteIdent(l.user)))
	u2 := connectAs(t, l.user, l.password, db2)
	execSQL(t, u2, fmt.Sprintf(`CREATE SCHEMA mine; GRANT USAGE ON SCHEMA mine TO %[1]s;
CREATE TABLE mine.held (x int); GRANT SELECT ON mine.held TO %[1]s;
CREATE FUNCTION mine.peek() RETURNS text SECURITY DEFINER LANGUAGE sql AS 'SELECT s FROM public.secret'`, render.QuoteIdent(l.acct)))
	_ = u2.Close(testCtx(t))
	locker := connectAs(t, l.acct, l.acctPassword, db2)
	execSQL(t, locker, "BEGIN; LOCK TABLE mine.held IN ACCESS SHARE MODE")
	_, err := l.db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: l.user})
	t.Logf("DeleteUser: %v", err)
	if err == nil || !strings.Contains(err.Error(), db2) {
		t.Errorf("DeleteUser while the hand-over in %s is held back: error = %v, want one naming that database", db2, err)
	}
	var got string
	if err := connectAs(t, l.acct, l.acctPassword, db2).QueryRow(testCtx(t), "SELECT mine.peek()").Scan(&got); err == nil {
		t.Errorf("while the hand-over in %s is held back, %s reads %q through the user's SECURITY DEFINER function", db2, l.acct, got)
	}
	assertNoLogin(t, l.user, l.password)
	execSQL(t, locker, "ROLLBACK")
	revokeDropped(t, l.db, l.a, l.user)
}

// TestCustomRevocationFailingOnAnotherObject: revocation_statements whose
// transaction fails with "does not exist" (42704) about another object (a
// group a DBA dropped) rolled back, and the user is still there: the
// revocation fails, so Vault keeps the lease and retries, as with the
// built-in. Only a user that is gone counts as revoked.
func TestCustomRevocationFailingOnAnotherObject(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	req := newUserReq(createStmt)
	user := dbtesting.AssertNewUser(t, db, req).Username
	t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user, Statements: dbplugin.Statements{Commands: []string{
		`REVOKE "app_readers_dropped_by_dba" FROM "{{name}}"; DROP ROLE "{{name}}";`}}})
	if err == nil || !strings.Contains(err.Error(), "app_readers_dropped_by_dba") {
		t.Errorf("error = %v, want the failure naming the missing group", err)
	}
	if !roleExists(t, a, user) {
		t.Fatal("the statements rolled back, yet the user is gone")
	}
}

// TestRevocationInAnotherDatabaseUnderRepeatableRead: the hand-over in
// another database sets read committed for its transactions; nothing before
// it in its query may take a snapshot, or a database whose
// default_transaction_isolation is repeatable read refuses the setting and
// every revocation fails.
func TestRevocationInAnotherDatabaseUnderRepeatableRead(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	dbname, _ := isolatedDB(t)
	execSQL(t, a, "ALTER DATABASE "+render.QuoteIdent(dbname)+" SET default_transaction_isolation = 'repeatable read'")
	req := newUserReq(createStmt, fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO "{{name}}";`, render.QuoteIdent(dbname)))
	user := dbtesting.AssertNewUser(t, db, req).Username
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
	c := connectAs(t, user, req.Password, dbname)
	execSQL(t, c, "CREATE SCHEMA mine; CREATE TABLE mine.t (id int)")
	_ = c.Close(testCtx(t))
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser of a user with objects in %s (default_transaction_isolation = repeatable read): %v", dbname, err)
	}
	if roleExists(t, a, user) {
		t.Fatal("role still exists")
	}
}
