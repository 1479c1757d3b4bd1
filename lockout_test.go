package postgres

// Nothing a user holds stalls its own lock-out: no advisory key, no open
// transaction, no prepared transaction, no reconnecting client, and no
// number of stuck revocations keeps the plugin from blocking logins or from
// serving credential requests.
//
// Unless its comment says otherwise, each test here failed on the code
// before revocations stopped taking advisory locks (0fd987e). Where that
// code waited for ever, the test bounds the wait (stallBound), so that it
// fails instead of hanging.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// The keys the old code locked: per role (pg_authid's oid as namespace) in
// both revocation blocks, and the reaper's, taken once per pass.
const (
	roleKeySQL   = `SELECT pg_advisory_lock(1260, hashtext(%s))`
	reaperKeySQL = `SELECT pg_advisory_lock(hashtextextended('vault-plugin-database-postgres/reaper', 0))`
)

// loginUser creates a plain user and returns its name and password.
func loginUser(t *testing.T, db *Postgres, stmts ...string) (user, password string) {
	t.Helper()
	req := newUserReq(append([]string{createStmt}, stmts...)...)
	return dbtesting.AssertNewUser(t, db, req).Username, req.Password
}

// TestLockoutIgnoresTheRoleKey: a login holding the advisory key the old
// revocation waited for (session-level, for the whole test) does not stall
// DeleteUser, whether the login is the user's own or another role's.
func TestLockoutIgnoresTheRoleKey(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	for _, holder := range []string{"the user", "another login"} {
		t.Run(holder, func(t *testing.T) {
			t.Parallel()
			user, password := loginUser(t, db)
			as, asPW := user, password
			if holder == "another login" {
				as, asPW = loginUser(t, db)
			}
			execSQL(t, connectAs(t, as, asPW, ""), fmt.Sprintf(roleKeySQL, render.QuoteLiteral(user)))
			revokeDropped(t, db, a, user)
		})
	}
}

// TestLockoutReaperIgnoresAdvisoryKeys: a login holding the old reaper key
// does not switch the orphan reaper off, and one holding an orphan's role
// key does not stall a pass. Not parallel: a pass reaps every orphan of the
// cluster.
func TestLockoutReaperIgnoresAdvisoryKeys(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "reapkeeper", "")
	db, logs := newReaperDB(t, map[string]interface{}{"reassign_owned_to": keeper, "reap_orphans_after": "1s"}, 24*time.Hour, true)
	for _, key := range []string{"the reaper's key", "the orphan's role key"} {
		t.Run(key, func(t *testing.T) {
			orphan := orphanUser(t, db, time.Now().Add(-time.Hour))
			holder, holderPW := loginUser(t, db) // a live lease
			c := connectAs(t, holder, holderPW, "")
			if key == "the reaper's key" {
				execSQL(t, c, reaperKeySQL)
			} else {
				execSQL(t, c, fmt.Sprintf(roleKeySQL, render.QuoteLiteral(orphan)))
			}
			res, err := reapPass(boundedCtx(t, stallBound), db)
			if err != nil || res.reaped < 1 || res.failed != 0 {
				t.Fatalf("pass while a login holds %s: %+v, %v; want the orphan reaped", key, res, err)
			}
			if roleExists(t, a, orphan) {
				t.Fatalf("orphan %q survived a pass while a login holds %s; pass %+v", orphan, key, res)
			}
			if strings.Contains(logs.String(), "[WARN]") {
				t.Fatalf("warnings:\n%s", logs)
			}
		})
	}
}

// withoutHoldingRole renames the holding role away until the test ends, so
// that the next hand-over makes it. At the end, what the new one received
// goes back to the old one, which gets its name back. Only for tests that
// are not parallel: every revocation of the others would make it too.
func withoutHoldingRole(t *testing.T, a *pgxpool.Pool) {
	t.Helper()
	if !roleExists(t, a, holdingRole) {
		return
	}
	old := holdingRole + "_" + randSuffix()
	execSQL(t, a, fmt.Sprintf("ALTER ROLE %s RENAME TO %s", holdingRole, old))
	t.Cleanup(func() {
		if roleExists(t, a, holdingRole) {
			execSQL(t, a, fmt.Sprintf("REASSIGN OWNED BY %s TO %s; DROP OWNED BY %s; DROP ROLE %s", holdingRole, old, holdingRole, holdingRole))
		}
		execSQL(t, a, fmt.Sprintf("ALTER ROLE %s RENAME TO %s", old, holdingRole))
	})
}

// TestLockoutFirstHandOverHoldsUpNoOther: while the revocation that makes
// the holding role waits for a lock on its user's table (lock_timeout 0),
// the revocation of another user, whose objects nobody holds, finishes.
// Not parallel (withoutHoldingRole). It passed on 0fd987e, which had no
// holding role, and fails from e09a34e on: hand_over.sql creates the role
// in the transaction that then waits, and the other revocation's CREATE
// ROLE waits for that transaction to end.
func TestLockoutFirstHandOverHoldsUpNoOther(t *testing.T) {
	needPG(t)
	a := admin(t)
	withoutHoldingRole(t, a)
	db := newDB(t, map[string]interface{}{"lock_timeout": "0s"})
	stuck, _, table, _ := userOwningTable(t, db, "first_")
	other, _, _, _ := userOwningTable(t, db, "first_")
	commit := holdTables(t, table)
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		_, err := db.DeleteUser(ctx, dbplugin.DeleteUserRequest{Username: stuck})
		done <- err
	}()
	t.Cleanup(func() {
		commit()
		if err := <-done; err != nil {
			t.Errorf("the revocation held up by the table lock, once it was released: %v", err)
		}
		// A revocation cut short leaves the user's privileges (CREATE on
		// public, which takes public off the plugin's search_path).
		if _, err := db.DeleteUser(context.Background(), dbplugin.DeleteUserRequest{Username: other}); err != nil {
			t.Errorf("revoking %q again: %v", other, err)
		}
	})
	lockWaiter(t, a, table, 0)
	if _, err := db.DeleteUser(boundedCtx(t, 10*time.Second), dbplugin.DeleteUserRequest{Username: other}); err != nil {
		t.Fatalf("revoking %q while the revocation of %q, which makes the holding role, waits for a lock on %s: %v", other, stuck, table, err)
	}
	if roleExists(t, a, other) {
		t.Fatalf("role %q survived DeleteUser", other)
	}
}

// TestLockoutStuckRevocationsLeaveAConnection: with lock_timeout 0 (waits
// without bound) and four pooled connections, four revocations stuck behind
// locks on their users' tables leave a connection for NewUser; once the
// locks go, every revocation finishes. The objects go to an existing role:
// the holding role made on first need would keep the revocations waiting
// for each other's (TestLockoutFirstHandOverHoldsUpNoOther).
func TestLockoutStuckRevocationsLeaveAConnection(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "stuckkeeper", "")
	t.Cleanup(func() { execSQL(t, a, "DROP OWNED BY "+render.QuoteIdent(keeper)) })
	db := newDB(t, map[string]interface{}{"max_open_connections": 4, "lock_timeout": "0s", "reassign_owned_to": keeper})
	var users, tables []string
	for i := 0; i < 4; i++ {
		user, _, table, _ := userOwningTable(t, db, "stuck_")
		users, tables = append(users, user), append(tables, table)
	}
	commit := holdTables(t, tables...)
	ctx := testCtx(t)
	errs := make(chan error, len(users))
	for _, user := range users {
		go func() {
			_, err := db.DeleteUser(ctx, dbplugin.DeleteUserRequest{Username: user})
			errs <- err
		}()
	}
	waitFor(t, func() bool { return lockWaiters(t, a, tables) >= 3 })
	req := newUserReq(createStmt)
	resp, err := db.NewUser(boundedCtx(t, 10*time.Second), req)
	if err != nil {
		stuck := lockWaiters(t, a, tables)
		commit()
		t.Fatalf("NewUser while %d revocations wait for locks: %v", stuck, err)
	}
	t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(resp.Username)) })
	assertLogin(t, resp.Username, req.Password)
	commit()
	for range users {
		if err := <-errs; err != nil {
			t.Errorf("a revocation, once the locks were released: %v", err)
		}
	}
	for _, user := range users {
		if roleExists(t, a, user) {
			t.Errorf("role %q survived its revocation", user)
		}
	}
}

// TestLockoutEndsTheUsersOpenRoleChange: the user's own open transaction
// holding its pg_authid row (ALTER ROLE CURRENT_USER PASSWORD, left open)
// does not stop the lock-out: the session is ended and the role dropped.
func TestLockoutEndsTheUsersOpenRoleChange(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	user, password := loginUser(t, db)
	c := connectAs(t, user, password, "")
	execSQL(t, c, "BEGIN; ALTER ROLE CURRENT_USER PASSWORD 'changed-in-an-open-tx'")
	_, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user})
	if err != nil {
		t.Errorf("DeleteUser while the user's open transaction holds its role row: %v", err)
		if strings.Contains(err.Error(), "logins are blocked") && pg.CanLogin(testCtx(t), user, password) == nil {
			t.Errorf("the error says logins are blocked, yet %q still logs in", user)
		}
		t.FailNow()
	}
	if roleExists(t, a, user) {
		t.Fatalf("role %q survived DeleteUser", user)
	}
	if c.Ping(testCtx(t)) == nil {
		t.Fatal("the session with the open transaction survived the revocation")
	}
}

// TestLockoutErrorSaysWhetherLoginsAreBlocked: when NOLOGIN cannot commit
// (another role's open transaction holds the user's pg_authid row, which
// the plugin must not end), the error does not claim logins are blocked,
// the user can still log in, and the error says so. Once the row is free
// the revocation finishes.
func TestLockoutErrorSaysWhetherLoginsAreBlocked(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	user, password := loginUser(t, db)
	holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	execSQL(t, holder, fmt.Sprintf("BEGIN; ALTER ROLE %s VALID UNTIL 'infinity'", render.QuoteIdent(user)))
	_, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user})
	if err == nil {
		t.Fatal("DeleteUser succeeded while a superuser's open transaction holds the user's role row")
	}
	t.Log(err)
	if strings.Contains(err.Error(), "logins are blocked") {
		t.Errorf("the error claims logins are blocked: %v", err)
	}
	if lerr := pg.CanLogin(testCtx(t), user, password); lerr != nil {
		t.Fatalf("NOLOGIN could not commit, yet the user cannot log in: %v", lerr)
	}
	if !strings.Contains(err.Error(), "logins could not be blocked") {
		t.Errorf("the user can still log in, and the error does not say so: %v", err)
	}
	execSQL(t, holder, "ROLLBACK")
	revokeDropped(t, db, a, user)
}

// needPrepared skips unless the server allows prepared transactions
// (internal/pgtest's local cluster does; PostgreSQL's default is 0).
func needPrepared(t *testing.T, a *pgxpool.Pool) {
	t.Helper()
	var n int
	if err := a.QueryRow(testCtx(t), "SELECT current_setting('max_prepared_transactions')::int").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Skip("max_prepared_transactions is 0 on this server")
	}
}

// prepareAs leaves a prepared transaction of the session's user, running
// stmts in it, and rolls it back when the test ends if it is still there.
func prepareAs(t *testing.T, c *pgx.Conn, stmts ...string) (gid string) {
	t.Helper()
	gid = "pgvault-test-" + randSuffix()
	database := c.Config().Database
	t.Cleanup(func() { _ = superRollback(database, gid) })
	execSQL(t, c, strings.Join(append(append([]string{"BEGIN"}, stmts...), "PREPARE TRANSACTION "+render.QuoteLiteral(gid)), "; "))
	return gid
}

// superRollback rolls back a prepared transaction as the superuser, from
// its database (ROLLBACK PREPARED refuses to act from another).
func superRollback(database, gid string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pg.Connect(ctx, pg.SuperUser, pg.SuperPassword, database)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "ROLLBACK PREPARED "+render.QuoteLiteral(gid))
	return err
}

// assertPreparedRolledBack checks gid is no longer prepared and the plugin
// warned about it by name.
func assertPreparedRolledBack(t *testing.T, a *pgxpool.Pool, logs *logBuffer, gid string) {
	t.Helper()
	var n int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("prepared transaction %s is still there", gid)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "[WARN]") && strings.Contains(line, "prepared transaction") && strings.Contains(line, gid) {
			return
		}
	}
	t.Errorf("no warning names the prepared transaction %s:\n%s", gid, logs)
}

// preparedCases are prepared transactions a user can leave in the way of
// its revocation: statements run as the user in schema, given the name of a
// table it owns there.
var preparedCases = []struct {
	name  string
	stmts func(table string) []string
}{
	{"a lock on its table", func(table string) []string { return []string{"INSERT INTO " + table + " VALUES (1)"} }},
	{"its role row", func(string) []string { return []string{"ALTER ROLE CURRENT_USER PASSWORD 'changed-in-a-prepared-tx'"} }},
}

// loggedDBAndSchema is adm.newDBAndSchema with the plugin's log kept.
func loggedDBAndSchema(t *testing.T, a *pgxpool.Pool, adm revokeAdmin, prefix string, extra map[string]interface{}) (*Postgres, *logBuffer, string) {
	t.Helper()
	schema := prefix + randSuffix()
	execSQL(t, a, "CREATE SCHEMA "+render.QuoteIdent(schema))
	t.Cleanup(func() { execSQL(t, a, "DROP SCHEMA IF EXISTS "+render.QuoteIdent(schema)+" CASCADE") })
	if adm.user != "" {
		adm.setup(t, a, adm.user, schema)
		extra["username"], extra["password"] = adm.user, "limited-pw"
	}
	db, logs := newReaperDB(t, extra, 24*time.Hour, true)
	return db, logs, schema
}

// TestLockoutRollsBackPreparedTransactions: a prepared transaction of the
// user that holds a lock on its table, or its role row, is rolled back by
// the revocation, which warns naming it and drops the role; a CREATEROLE
// admin does so too. The CREATEROLE admin's "its role row" case fails as of
// e09a34e: revoke_login.sql makes the admin a member of the user in the
// transaction the prepared transaction's error aborts, so rollbackPrepared
// cannot SET ROLE to the user.
func TestLockoutRollsBackPreparedTransactions(t *testing.T) {
	needPG(t)
	a := admin(t)
	needPrepared(t, a)
	ensureHoldingRole(t, a)
	for _, adm := range revokeAdmins() {
		t.Run(adm.name, func(t *testing.T) {
			t.Parallel()
			db, logs, schema := loggedDBAndSchema(t, a, adm, "prep_", map[string]interface{}{"lock_timeout": "500ms"})
			for _, pc := range preparedCases {
				t.Run(pc.name, func(t *testing.T) {
					user, password := loginUser(t, db, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)))
					table := render.QuoteIdent(schema) + ".prep_" + randSuffix()
					c := connectAs(t, user, password, "")
					execSQL(t, c, "CREATE TABLE "+table+" (id int)")
					gid := prepareAs(t, c, pc.stmts(table)...)
					revokeDropped(t, db, a, user)
					assertPreparedRolledBack(t, a, logs, gid)
					var n int
					if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 0 {
						t.Errorf("the user's table after revocation: %d rows (%v), want it kept, empty", n, err)
					}
				})
			}
		})
	}
}

// TestLockoutNamesPreparedTransactionItCannotRollBack: a CREATEROLE admin
// that cannot reach the user's prepared transaction (it is in a database
// the admin may not connect to) fails with an error that names the gid and
// the statement a superuser can run, and does not claim logins are
// blocked; once the transaction is gone, the revocation finishes.
func TestLockoutNamesPreparedTransactionItCannotRollBack(t *testing.T) {
	needPG(t)
	a := admin(t)
	needPrepared(t, a)
	db, _, _ := loggedDBAndSchema(t, a, revokeAdmins()[1], "prepdb_", map[string]interface{}{})
	user, password := loginUser(t, db)
	other := "prepdb_" + randSuffix()
	execSQL(t, a, "CREATE DATABASE "+other)
	t.Cleanup(func() { execSQL(t, a, "DROP DATABASE "+other+" WITH (FORCE)") })
	execSQL(t, a, fmt.Sprintf("REVOKE CONNECT ON DATABASE %s FROM PUBLIC; GRANT CONNECT ON DATABASE %s TO %s", other, other, render.QuoteIdent(user)))
	gid := prepareAs(t, connectAs(t, user, password, other), "ALTER ROLE CURRENT_USER PASSWORD 'changed-in-a-prepared-tx'")
	// A privilege the admin could not revoke would leave the role disabled
	// rather than dropped at the end.
	execSQL(t, a, fmt.Sprintf("REVOKE CONNECT ON DATABASE %s FROM %s", other, render.QuoteIdent(user)))
	_, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user})
	if err == nil {
		t.Fatal("DeleteUser succeeded although the admin cannot reach the user's prepared transaction")
	}
	t.Log(err)
	msg := err.Error()
	if !strings.Contains(msg, render.QuoteLiteral(gid)) || !strings.Contains(msg, "a superuser can run ROLLBACK PREPARED") {
		t.Errorf("the error does not name gid %s and the superuser's ROLLBACK PREPARED: %v", gid, err)
	}
	if strings.Contains(msg, "logins are blocked") {
		t.Errorf("the error claims logins are blocked: %v", err)
	}
	if lerr := pg.CanLogin(testCtx(t), user, password); lerr != nil {
		t.Errorf("NOLOGIN could not commit, yet the user cannot log in: %v", lerr)
	}
	if err := superRollback(other, gid); err != nil {
		t.Fatal(err)
	}
	revokeDropped(t, db, a, user)
}

// richUser is a user with what the lock-out's first transaction disarms:
// a table, a view others may read, a SECURITY DEFINER function and an open
// session; with grants, also a group and a member (granted by the test's
// superuser, which a CREATEROLE admin on 16+ could not undo).
func richUser(t *testing.T, db *Postgres, a *pgxpool.Pool, grants bool) string {
	t.Helper()
	stmts := []string{`GRANT CREATE ON SCHEMA public TO "{{name}}";`}
	if grants {
		stmts = append(stmts, `GRANT pg_read_all_settings TO "{{name}}";`)
	}
	user, password := loginUser(t, db, stmts...)
	tag := randSuffix()
	c := connectAs(t, user, password, "")
	execSQL(t, c, fmt.Sprintf(`CREATE TABLE public.rich_t_%[1]s (id int);
		CREATE VIEW public.rich_v_%[1]s AS SELECT id FROM public.rich_t_%[1]s;
		GRANT SELECT ON public.rich_v_%[1]s TO PUBLIC;
		CREATE FUNCTION public.rich_f_%[1]s() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'`, tag))
	t.Cleanup(func() {
		execSQL(t, a, fmt.Sprintf("DROP VIEW IF EXISTS public.rich_v_%s; DROP TABLE IF EXISTS public.rich_t_%s; DROP FUNCTION IF EXISTS public.rich_f_%s()", tag, tag, tag))
	})
	if grants {
		member := plainRole(t, a, "richmember", "")
		execSQL(t, a, fmt.Sprintf("GRANT %s TO %s", render.QuoteIdent(user), render.QuoteIdent(member)))
	}
	return user
}

// deleteAtOnce runs n DeleteUsers of user at the same time and returns
// their errors joined.
func deleteAtOnce(ctx context.Context, db *Postgres, user string, n int) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = db.DeleteUser(ctx, dbplugin.DeleteUserRequest{Username: user})
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// TestConcurrentRevocationsOfOneUser: no lock serialises the revocations
// of one user any more; two at once, and eight or ten at once for a few
// users, as a superuser and as a CREATEROLE admin, all succeed and the role
// is gone. It passed on 0fd987e too, where an advisory lock made them take
// turns: it guards the path without one, where every step of the first
// transaction (NOLOGIN and the disarming of memberships, members, views and
// SECURITY DEFINER) runs concurrently.
func TestConcurrentRevocationsOfOneUser(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, adm := range revokeAdmins() {
		t.Run(adm.name, func(t *testing.T) {
			t.Parallel()
			db, _ := adm.newDBAndSchema(t, a, "conc_")
			if adm.user != "" {
				// Taken back at the end: while any other role may create in
				// public, the plugin leaves public out of its search_path,
				// which later tests' unqualified names rely on.
				grant := "CREATE ON SCHEMA public TO " + render.QuoteIdent(adm.user)
				execSQL(t, a, "GRANT "+grant+" WITH GRANT OPTION")
				t.Cleanup(func() { execSQL(t, a, "REVOKE "+strings.Replace(grant, " TO ", " FROM ", 1)+" CASCADE") })
			}
			for _, n := range []int{2, 8, 10, 10} {
				user := richUser(t, db, a, adm.user == "")
				if err := deleteAtOnce(boundedCtx(t, stallBound), db, user, n); err != nil {
					t.Fatalf("%d revocations of %q at once: %v", n, user, err)
				}
				if roleExists(t, a, user) {
					t.Fatalf("role %q survived %d revocations at once", user, n)
				}
			}
		})
	}
}

// TestLockoutEndsClientsReconnectingWithTheRoleKey: clients that log in as
// the user in a loop, each session taking the old role key, do not hold
// off DeleteUser; afterwards their logins fail and no session of the role
// remains.
func TestLockoutEndsClientsReconnectingWithTheRoleKey(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	user, password := loginUser(t, db)
	oid := roleOID(t, a, user)
	r := startReconnectors(t, 4, user, password, fmt.Sprintf(roleKeySQL, render.QuoteLiteral(user)))
	waitFor(t, func() bool { return sessionsOfRole(t, a, oid) >= 2 })
	revokeDropped(t, db, a, user)
	assertNoSessionSurvives(t, a, r, oid, user, password)
}

// TestLockoutUsersOpenTransactionKeepsNothingArmed: the user's own open
// transaction, which altered its SECURITY DEFINER function and its view
// (their catalog rows are then locked), does not keep them armed: the
// first step ends the user's sessions that hold a transaction and disarms
// them, while the hand-over is held back as after it went through.
func TestLockoutUsersOpenTransactionKeepsNothingArmed(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	l.definerAccess(t)
	execSQL(t, l.c, fmt.Sprintf(`CREATE TABLE public.held (x int);
CREATE VIEW public.secret_view AS SELECT s FROM public.secret;
GRANT SELECT ON public.held, public.secret_view TO %s;`, render.QuoteIdent(l.acct)))
	execSQL(t, l.c, `BEGIN; ALTER FUNCTION public.run(text) COST 7; ALTER VIEW public.secret_view SET (security_barrier = false)`)
	// One revocation, held back (a second would find the rows free: the
	// first ended the session).
	execSQL(t, l.asAcct(t), "BEGIN; LOCK TABLE public.held IN ACCESS SHARE MODE")
	_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
	if err == nil || !roleExists(t, l.a, l.user) {
		t.Fatalf("the hand-over was not held back (%v): the test proves nothing", err)
	}
	var definer, viewGranted bool
	if err := l.a.QueryRow(testCtx(t), `SELECT (SELECT prosecdef FROM pg_proc WHERE oid = 'public.run(text)'::regprocedure),
		has_table_privilege($1, 'public.secret_view', 'SELECT')`, l.acct).Scan(&definer, &viewGranted); err != nil {
		t.Fatal(err)
	}
	if definer || viewGranted {
		t.Errorf("with the user's open transaction on their rows, the revocation left its function SECURITY DEFINER (%v) and its view readable by %s (%v)", definer, l.acct, viewGranted)
	}
	l.assertNoDefinerAccess(t, false, "after the user's open transaction held its rows")
}

// TestLockoutMembershipRowHeldOpen: an open transaction that holds the
// row of one of the user's group memberships (the user's own, with ADMIN
// OPTION; or another admin of the group's) does not keep the user's
// sessions alive, and an error never says they ended when they did not.
// The user's own is ended, and the revocation goes through; another role's
// holds at most the DROP ROLE back, and the error says so.
func TestLockoutMembershipRowHeldOpen(t *testing.T) {
	a := admin(t)
	for _, who := range []string{"the user itself", "another admin of the group"} {
		t.Run(who, func(t *testing.T) {
			t.Parallel()
			grp := plainRole(t, a, "grp-", "")
			db := newDB(t, map[string]interface{}{"lock_timeout": "300ms"})
			grant := fmt.Sprintf(`GRANT %s TO "{{name}}"`, render.QuoteIdent(grp))
			if who == "the user itself" {
				grant += " WITH ADMIN OPTION"
			}
			user, password := loginUser(t, db, grant)
			c := connectAs(t, user, password, "")
			var holder *pgx.Conn
			if who == "the user itself" {
				execSQL(t, c, "BEGIN; REVOKE ADMIN OPTION FOR "+render.QuoteIdent(grp)+" FROM CURRENT_USER")
			} else {
				acct, pw := attackerAccount(t, a)
				execSQL(t, a, fmt.Sprintf("GRANT %s TO %s WITH ADMIN OPTION", render.QuoteIdent(grp), render.QuoteIdent(acct)))
				holder = connectAs(t, acct, pw, "")
				execSQL(t, holder, fmt.Sprintf("BEGIN; GRANT %s TO %s WITH ADMIN OPTION", render.QuoteIdent(grp), render.QuoteIdent(user)))
			}
			oid := roleOID(t, a, user)
			_, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user})
			t.Logf("DeleteUser: %v", err)
			if n := sessionsOfRole(t, a, oid); n > 0 {
				t.Errorf("%d session(s) of the user still run after DeleteUser (error: %v)", n, err)
			}
			if lerr := pg.CanLogin(testCtx(t), user, password); lerr == nil {
				t.Errorf("the user still logs in after DeleteUser (error: %v)", err)
			}
			if holder == nil {
				if err != nil || roleExists(t, a, user) {
					t.Fatalf("the user's own open transaction held its revocation back: %v", err)
				}
				return
			}
			// Up to 15 the open GRANT updates the membership's row, which DROP
			// ROLE then waits for; from 16 it is a row of its own, a grant by
			// another grantor, and the drop may go through.
			if err != nil && !strings.Contains(err.Error(), "lock on the role") {
				t.Errorf("DeleteUser while another role's transaction holds the user's membership: error = %v, want success or one saying a lock on the role holds the drop back", err)
			}
			execSQL(t, holder, "ROLLBACK")
			revokeDropped(t, db, a, user)
		})
	}
}

// TestLockoutDropHeldBackByALockOnTheRole: any login may take a lock on
// the user's role (an open ALTER DEFAULT PRIVILEGES … TO it, or GRANT … TO
// it) that holds DROP ROLE back. Logins are blocked and the sessions ended
// all the same; the error says that the role, not one of its objects, is
// locked; and the revocation goes through once the lock is gone.
func TestLockoutDropHeldBackByALockOnTheRole(t *testing.T) {
	a := admin(t)
	db := newDB(t, map[string]interface{}{"lock_timeout": "300ms"})
	user, password := loginUser(t, db)
	c := connectAs(t, user, password, "")
	acct, pw := attackerAccount(t, a)
	holder := connectAs(t, acct, pw, "")
	execSQL(t, holder, "BEGIN; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "+render.QuoteIdent(user))
	oid := roleOID(t, a, user)
	_, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user})
	t.Logf("DeleteUser: %v", err)
	if err == nil {
		t.Fatal("DeleteUser succeeded while another session holds a lock on the role: the test proves nothing")
	}
	if !strings.Contains(err.Error(), "lock on the role") || strings.Contains(err.Error(), "one of its objects") {
		t.Errorf("error = %v, want one saying a lock on the role (not on one of its objects) holds the drop back", err)
	}
	if n := sessionsOfRole(t, a, oid); n > 0 || c.Ping(testCtx(t)) == nil {
		t.Errorf("the user's sessions still run (%d)", n)
	}
	assertNoLogin(t, user, password)
	execSQL(t, holder, "ROLLBACK")
	revokeDropped(t, db, a, user)
}

// TestLockoutOthersCatalogUpdatesCannotUndoNologin: another login that
// keeps updating the catalog rows the disarming must change (its own table
// it gave the user a privilege on, the user's view), in short transactions,
// makes those statements fail with "tuple concurrently updated"; NOLOGIN is
// committed before any of them runs, so it always holds.
func TestLockoutOthersCatalogUpdatesCannotUndoNologin(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.a, fmt.Sprintf(`CREATE TABLE public.shared (x int); ALTER TABLE public.shared OWNER TO %s`, render.QuoteIdent(l.acct)))
	execSQL(t, l.asAcct(t), fmt.Sprintf(`GRANT SELECT ON public.shared TO %s`, render.QuoteIdent(l.user)))
	execSQL(t, l.c, fmt.Sprintf(`CREATE VIEW public.v AS SELECT 1 AS x; GRANT SELECT ON public.v TO %s`, render.QuoteIdent(l.acct)))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range []struct {
		conn  *pgx.Conn
		table string
	}{{l.asAcct(t), "public.shared"}, {l.c, "public.v"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				op := "GRANT INSERT ON " + c.table + " TO PUBLIC"
				if i%2 == 1 {
					op = "REVOKE INSERT ON " + c.table + " FROM PUBLIC"
				}
				if _, err := c.conn.Exec(context.Background(), "BEGIN; "+op+"; SELECT pg_sleep(0.05); COMMIT"); err != nil && c.conn.IsClosed() {
					return // the revocation ended the user's session
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	_, err := l.db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: l.user})
	t.Logf("DeleteUser: %v", err)
	if lerr := pg.CanLogin(testCtx(t), l.user, l.password); lerr == nil {
		t.Errorf("after DeleteUser (%v) the user still logs in", err)
	}
}

// TestLockoutOthersOpenGrantsDoNotDelayNologin: another login's open
// transaction on the catalog rows of a dozen tables the user was given
// privileges on holds up the disarming, which gives up within seconds; logins
// are blocked long before, and an error says only what happened.
func TestLockoutOthersOpenGrantsDoNotDelayNologin(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	const n = 12
	var own, give, hold strings.Builder
	hold.WriteString("BEGIN;")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&own, "CREATE TABLE public.g%d (x int); ALTER TABLE public.g%d OWNER TO %s;", i, i, render.QuoteIdent(l.acct))
		fmt.Fprintf(&give, "GRANT SELECT ON public.g%d TO %s;", i, render.QuoteIdent(l.user))
		fmt.Fprintf(&hold, "GRANT INSERT ON public.g%d TO PUBLIC;", i)
	}
	execSQL(t, l.a, own.String())
	holder := l.asAcct(t)
	execSQL(t, holder, give.String())
	execSQL(t, holder, hold.String())
	done := make(chan error, 1)
	go func() {
		_, err := l.db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: l.user})
		done <- err
	}()
	waitFor(t, func() bool { return pg.CanLogin(testCtx(t), l.user, l.password) != nil })
	err := <-done
	t.Logf("DeleteUser: %v", err)
	if err != nil && strings.Contains(err.Error(), "deadline") {
		t.Errorf("the revocation ran into its deadline instead of giving up on the held rows: %v", err)
	}
	execSQL(t, holder, "ROLLBACK")
	revokeDropped(t, l.db, l.a, l.user)
}

// TestLockoutUsersOwnRowsCannotUseUpTheDisarmingsTime: a user that holds
// the catalog rows of many of its SECURITY DEFINER functions in an open
// transaction, so that the disarming spends its few seconds waiting on
// them, still has that session ended and every one of them disarmed before
// the hand-over is held back.
func TestLockoutUsersOwnRowsCannotUseUpTheDisarmingsTime(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	l.definerAccess(t)
	var decoys, alters strings.Builder
	for i := 0; i < 17; i++ {
		fmt.Fprintf(&decoys, "CREATE FUNCTION public.d%d() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1';\n", i)
		fmt.Fprintf(&alters, "ALTER FUNCTION public.d%d() COST 7;\n", i)
	}
	execSQL(t, l.c, decoys.String()+"CREATE TABLE public.held (x int); GRANT SELECT ON public.held TO "+render.QuoteIdent(l.acct))
	execSQL(t, l.c, "BEGIN; "+alters.String()+"ALTER FUNCTION public.run(text) COST 7")
	execSQL(t, l.asAcct(t), "BEGIN; LOCK TABLE public.held IN ACCESS SHARE MODE")
	_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
	if err == nil || !roleExists(t, l.a, l.user) {
		t.Fatalf("the hand-over was not held back (%v): the test proves nothing", err)
	}
	var armed int
	if err := l.a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_proc WHERE proowner = (SELECT oid FROM pg_roles WHERE rolname = $1) AND prosecdef", l.user).Scan(&armed); err != nil {
		t.Fatal(err)
	}
	if armed > 0 {
		t.Errorf("after one revocation held back by a lock, %d of the user's functions are still SECURITY DEFINER", armed)
	}
	l.assertNoDefinerAccess(t, false, "after the user held its functions' rows")
}

// TestLockoutErrorAfterAnEarlierPass: when an earlier revocation blocked
// logins and another role's transaction now holds the user's role row, the
// error says that logins stay blocked, not that nothing was changed.
func TestLockoutErrorAfterAnEarlierPass(t *testing.T) {
	a := admin(t)
	db := newDB(t, nil)
	user, _ := loginUser(t, db)
	execSQL(t, a, "ALTER ROLE "+render.QuoteIdent(user)+" NOLOGIN") // as an earlier pass did
	holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	execSQL(t, holder, "BEGIN; ALTER ROLE "+render.QuoteIdent(user)+" VALID UNTIL 'infinity'")
	_, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user})
	execSQL(t, holder, "ROLLBACK")
	t.Logf("DeleteUser: %v", err)
	if err == nil {
		t.Fatal("DeleteUser succeeded while another role's transaction holds the user's role row: the test proves nothing")
	}
	if strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "logins stay blocked") {
		t.Errorf("error = %v, want one saying logins stay blocked", err)
	}
	revokeDropped(t, db, a, user)
}

// plantPasswordToucher makes the user's SECURITY DEFINER function that sets
// the user's password (to what it is): any login that calls it in a
// transaction holds the user's row in pg_authid from a session that is not
// the user's.
func plantPasswordToucher(t *testing.T, l *attackLab) {
	t.Helper()
	execSQL(t, l.c, fmt.Sprintf(`CREATE FUNCTION public.touch() RETURNS void SECURITY DEFINER LANGUAGE plpgsql AS $f$
BEGIN EXECUTE pg_catalog.format('ALTER ROLE CURRENT_USER PASSWORD %%L', %s); END $f$`, render.QuoteLiteral(l.password)))
}

// TestLockoutEndsAnotherLoginHoldingTheRoleRow: another login that holds
// the user's role row open through the user's own SECURITY DEFINER function
// does not keep NOLOGIN from committing: a superuser admin finds the
// transaction by the row's xmax and ends its backend.
func TestLockoutEndsAnotherLoginHoldingTheRoleRow(t *testing.T) {
	l := newAttackLab(t, nil)
	plantPasswordToucher(t, l)
	holder := l.asAcct(t)
	execSQL(t, holder, "BEGIN; SELECT public.touch()")
	revokeDropped(t, l.db, l.a, l.user)
	if holder.Ping(testCtx(t)) == nil {
		t.Error("the session that held the user's role row is still open")
	}
}

// TestLockoutRollsBackAnotherLoginsPreparedTransactionOnTheRoleRow: the
// same, with the transaction prepared (its owner is the other login, and
// no session is left to end): a superuser admin rolls it back.
func TestLockoutRollsBackAnotherLoginsPreparedTransactionOnTheRoleRow(t *testing.T) {
	l := newAttackLab(t, nil)
	needPrepared(t, l.a)
	plantPasswordToucher(t, l)
	holder := l.asAcct(t)
	gid := "g" + randSuffix()
	execSQL(t, holder, "BEGIN; SELECT public.touch(); PREPARE TRANSACTION "+render.QuoteLiteral(gid))
	t.Cleanup(func() { _, _ = l.a.Exec(context.Background(), "ROLLBACK PREPARED "+render.QuoteLiteral(gid)) })
	_ = holder.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	var left bool
	if err := l.a.QueryRow(testCtx(t), "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = $1)", gid).Scan(&left); err != nil || left {
		t.Errorf("the prepared transaction that held the user's role row is still there (%v)", err)
	}
}

// TestConcurrentRevocationsOfAUserWithObjectsElsewhere: ten revocations at
// once of a user that owns a table in another database all succeed: one
// that finds the role gone while it hands over there (another revocation
// finished it) counts it as revoked.
func TestConcurrentRevocationsOfAUserWithObjectsElsewhere(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	dbname, _ := isolatedDB(t)
	for round := 0; round < 5; round++ {
		user, password := loginUser(t, db, fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO "{{name}}";`, render.QuoteIdent(dbname)))
		c := connectAs(t, user, password, dbname)
		execSQL(t, c, fmt.Sprintf("CREATE SCHEMA s_%[1]s; CREATE TABLE s_%[1]s.t (id int)", randSuffix()))
		_ = c.Close(testCtx(t))
		if err := deleteAtOnce(boundedCtx(t, stallBound), db, user, 10); err != nil {
			t.Fatalf("10 revocations of %q at once: %v", user, err)
		}
		if roleExists(t, a, user) {
			t.Fatalf("role %q survived", user)
		}
	}
}

// TestLockoutOpenGrantOnAGrantedObjectIsNamed: the role's statements grant
// SELECT on a table to each user. Another user runs GRANT … TO PUBLIC on it
// without a grant option and leaves its transaction open: PostgreSQL only
// warns, but keeps the table's catalog row locked, and the victim's hand-over
// (DROP OWNED revokes its privilege in that row) waits for it. The revocation
// fails within lock_timeout, logins stay blocked, and the error names what
// holds it: the row of something the user was granted, not one of its
// objects (the user owns none).
func TestLockoutOpenGrantOnAGrantedObjectIsNamed(t *testing.T) {
	dbname, a := isolatedDB(t)
	execSQL(t, a, "CREATE TABLE public.app_data (x int)")
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname), "lock_timeout": "500ms"})
	stmts := []string{createStmt, `GRANT SELECT ON public.app_data TO "{{name}}";`}
	attackerReq := newUserReq(stmts...)
	attacker := dbtesting.AssertNewUser(t, db, attackerReq).Username
	victimReq := newUserReq(stmts...)
	victim := dbtesting.AssertNewUser(t, db, victimReq).Username
	c := connectAs(t, attacker, attackerReq.Password, dbname)
	execSQL(t, c, "BEGIN")
	execSQL(t, c, "GRANT SELECT ON public.app_data TO PUBLIC") // WARNING: no privileges were granted
	defer func() { _, _ = c.Exec(testCtx(t), "ROLLBACK") }()
	_, err := db.DeleteUser(boundedCtx(t, 30*time.Second), dbplugin.DeleteUserRequest{Username: victim})
	if err == nil {
		t.Fatal("the revocation succeeded while another session held the row of the victim's privilege")
	}
	if !strings.Contains(err.Error(), "something it was granted") || !errors.Is(err, errHandOverLocked) {
		t.Errorf("error = %v, want one that says logins are blocked and names the row of something the user was granted", err)
	}
	assertNoLogin(t, victim, victimReq.Password)
}

// TestLockoutMemberGrantedInAnOpenTransactionIsRemoved: a member of the
// user with ADMIN OPTION (on 14 the user could make one itself) opens a
// transaction that grants the user to another login and leaves it open
// while the user is revoked. The first step lists the user's members in its
// snapshot, where that grant does not show yet. When the role is then only
// disabled (a CREATEROLE admin, a privilege a third role gave it), the grant
// committed afterwards would leave a member acting as the revoked role for
// ever: revocation waits for such transactions and removes the members
// again, or fails naming one it may not remove.
func TestLockoutMemberGrantedInAnOpenTransactionIsRemoved(t *testing.T) {
	a := admin(t)
	db, schema := revokeAdmins()[1].newDBAndSchema(t, a, "member_")
	assertMemberGrantedDuringRevocationRemoved(t, a, db, schema)
}

// assertMemberGrantedDuringRevocationRemoved revokes, on db (a CREATEROLE
// admin's, so that the role is only disabled: a third role gave it a
// privilege), a user that acct holds WITH ADMIN OPTION, while acct's open
// transaction grants the user to acct2 and commits during the revocation.
// The revocation must leave acct2 no member, or fail naming it (from 16 a
// CREATEROLE admin may not remove a grant acct made).
func assertMemberGrantedDuringRevocationRemoved(t *testing.T, a *pgxpool.Pool, db *Postgres, schema string) {
	t.Helper()
	third := newThirdRole(t, a, "public")
	acct, acctPW := attackerAccount(t, a)
	acct2, _ := attackerAccount(t, a)
	user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE ON SCHEMA %s TO "{{name}}"; GRANT "{{name}}" TO %s WITH ADMIN OPTION;`,
		render.QuoteIdent(schema), render.QuoteIdent(acct)))).Username
	t.Cleanup(func() {
		execSQL(t, a, "DO $$ BEGIN IF pg_catalog.to_regrole("+render.QuoteLiteral(render.QuoteIdent(user))+") IS NOT NULL THEN DROP OWNED BY "+render.QuoteIdent(user)+"; DROP ROLE "+render.QuoteIdent(user)+"; END IF; END $$")
	})
	third.grantTo(t, a, user)
	ac := connectAs(t, acct, acctPW, "")
	execSQL(t, ac, "BEGIN")
	execSQL(t, ac, fmt.Sprintf("GRANT %s TO %s", render.QuoteIdent(user), render.QuoteIdent(acct2)))
	done := make(chan error, 1)
	go func() {
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
		done <- err
	}()
	// The grant commits while the revocation runs.
	time.Sleep(300 * time.Millisecond)
	execSQL(t, ac, "COMMIT")
	if err := <-done; err != nil {
		if !strings.Contains(err.Error(), acct2) {
			t.Fatalf("DeleteUser: %v", err)
		}
		t.Logf("DeleteUser failed, naming the member it cannot remove: %v", err)
		return
	}
	var member bool
	if err := a.QueryRow(testCtx(t), "SELECT pg_has_role($1, $2, 'MEMBER')", acct2, user).Scan(&member); err != nil {
		t.Fatal(err)
	}
	if member {
		t.Fatalf("DeleteUser(%s) succeeded, yet %s, granted it in a transaction open during the revocation, is a member", user, acct2)
	}
}

// TestLockoutNamesOthersPreparedTransactionOnWhatTheUserOwns: a prepared
// transaction's owner is the role current at PREPARE, so a user that sets
// its role to a group it was given, locks its own table and prepares leaves
// a prepared transaction that is not its own by name. The hand-over waits
// for its lock every time: the revocation fails naming it (it may be
// another member's work, so it is not rolled back).
func TestLockoutNamesOthersPreparedTransactionOnWhatTheUserOwns(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	var maxPrepared int
	if err := l.a.QueryRow(testCtx(t), "SELECT current_setting('max_prepared_transactions')::int").Scan(&maxPrepared); err != nil || maxPrepared == 0 {
		t.Skipf("max_prepared_transactions is 0 (%v)", err)
	}
	group := "readers_" + randSuffix()
	execSQL(t, l.a, fmt.Sprintf("CREATE ROLE %s NOLOGIN; GRANT %s TO %s", render.QuoteIdent(group), render.QuoteIdent(group), render.QuoteIdent(l.user)))
	gid := "hold_" + randSuffix()
	t.Cleanup(func() {
		_, _ = l.a.Exec(context.Background(), "ROLLBACK PREPARED "+render.QuoteLiteral(gid))
		_, _ = l.a.Exec(context.Background(), "DROP OWNED BY "+render.QuoteIdent(group)+"; DROP ROLE IF EXISTS "+render.QuoteIdent(group))
	})
	execSQL(t, l.c, fmt.Sprintf("CREATE TABLE public.held (x int); GRANT SELECT ON public.held TO %s", render.QuoteIdent(group)))
	for _, stmt := range []string{"BEGIN", "SET ROLE " + render.QuoteIdent(group), "LOCK TABLE public.held IN ACCESS SHARE MODE",
		"PREPARE TRANSACTION " + render.QuoteLiteral(gid)} {
		execSQL(t, l.c, stmt)
	}
	_ = l.c.Close(testCtx(t))
	_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
	if err == nil || !strings.Contains(err.Error(), gid) || !strings.Contains(err.Error(), group) {
		t.Fatalf("DeleteUser = %v, want an error naming the prepared transaction %s of %s that holds the user's table", err, gid, group)
	}
	assertNoLogin(t, l.user, l.password)
}

// TestLockoutDisabledRoleNotHeldUpByAReaderOfMemberships: a revocation
// that can only disable the role waits for transactions changing
// memberships, not for a login that merely read pg_auth_members (an idle
// reporting transaction, psql's \du in an open one) and keeps its
// transaction open.
func TestLockoutDisabledRoleNotHeldUpByAReaderOfMemberships(t *testing.T) {
	db, a, schema, third := disabledLab(t)
	user, password := disabledUser(t, db, a, schema, third)
	acct, acctPW := attackerAccount(t, a)
	ac := connectAs(t, acct, acctPW, "")
	execSQL(t, ac, "BEGIN")
	execSQL(t, ac, "SELECT count(*) FROM pg_catalog.pg_auth_members") // reads only
	for attempt := 1; attempt <= 2; attempt++ {
		if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
			t.Errorf("DeleteUser attempt %d, while another login only holds a read of pg_auth_members open: %v", attempt, err)
		}
	}
	assertNoLogin(t, user, password)
}

// TestLockoutDisabledRoleNotHeldUpByTheUsersPreparedRead: the user
// leaves a prepared transaction that read pg_auth_members; it never ends by
// itself, and must not hold off a revocation that can only disable the
// role.
func TestLockoutDisabledRoleNotHeldUpByTheUsersPreparedRead(t *testing.T) {
	db, a, schema, third := disabledLab(t)
	needPrepared(t, a)
	user, password := disabledUser(t, db, a, schema, third)
	c := connectAs(t, user, password, "")
	prepareAs(t, c, "SELECT count(*) FROM pg_catalog.pg_auth_members")
	_ = c.Close(testCtx(t))
	for attempt := 1; attempt <= 2; attempt++ {
		if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
			t.Errorf("DeleteUser attempt %d, with the user's own prepared transaction that read pg_auth_members: %v", attempt, err)
		}
	}
}

// TestLockoutConcurrentDisabledRevocationsDoNotWaitForEachOther: every
// revocation transaction holds a lock on pg_auth_members (it reads it to
// list memberships; a CREATEROLE admin also GRANTs itself the role); a
// revocation that ends in "disabled" must not wait for the others in
// progress. Here B's
// hand-over waits ~1 s for an application's lock on its table (well within
// lock_timeout); A, a plain disabled user revoked meanwhile, captures B's
// transaction, B then captures A's, and A fails with PV003 after 2 s
// though nothing ever changed a membership of A.
func TestLockoutConcurrentDisabledRevocationsDoNotWaitForEachOther(t *testing.T) {
	a := admin(t)
	adm := revokeAdmins()[1]
	db, schema := adm.newDBAndSchema(t, a, "s5_")
	// B gets a schema (and a third role) of its own, so that the two
	// revocations share no catalog row that would serialise them.
	schemaB := "s5b_" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", render.QuoteIdent(schemaB), render.QuoteIdent(adm.user)))
	third, thirdB := newThirdRole(t, a, schema), newThirdRole(t, a, schemaB)
	userA, _ := disabledUser(t, db, a, schema, third)
	reqB := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schemaB)))
	userB := dbtesting.AssertNewUser(t, db, reqB).Username
	t.Cleanup(func() {
		execSQL(t, a, "DO $$ BEGIN IF pg_catalog.to_regrole("+render.QuoteLiteral(render.QuoteIdent(userB))+") IS NOT NULL THEN DROP OWNED BY "+render.QuoteIdent(userB)+"; DROP ROLE "+render.QuoteIdent(userB)+"; END IF; END $$")
	})
	thirdB.grantTo(t, a, userB)
	table := render.QuoteIdent(schemaB) + ".b_t"
	cb := connectAs(t, userB, reqB.Password, "")
	execSQL(t, cb, "CREATE TABLE "+table+" (id int)")
	_ = cb.Close(testCtx(t))
	app := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	execSQL(t, app, "BEGIN; LOCK TABLE "+table+" IN ACCESS SHARE MODE")

	errB := make(chan error, 1)
	go func() {
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: userB})
		errB <- err
	}()
	lockWaiterOn(t, a, table)
	errA := make(chan error, 1)
	go func() {
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: userA})
		errA <- err
	}()
	time.Sleep(800 * time.Millisecond)
	execSQL(t, app, "COMMIT")
	if err := <-errA; err != nil {
		t.Errorf("DeleteUser(A), run while another user's revocation was in progress: %v", err)
	}
	if err := <-errB; err != nil {
		t.Errorf("DeleteUser(B): %v", err)
	}
}

// TestLockoutMemberGrantedInAnOpenTransactionIsRemovedUnderRepeatableRead is
// TestLockoutMemberGrantedInAnOpenTransactionIsRemoved with the admin's
// default_transaction_isolation at repeatable read (a DBA's ALTER ROLE …
// SET, or the cluster's default; RESET ALL gives it back to every batch).
// The disabled role's block waits for the granting transaction and then
// looks for the members again, which sees the member that committed
// meanwhile only if the revocation's transactions read committed: they say
// so themselves.
func TestLockoutMemberGrantedInAnOpenTransactionIsRemovedUnderRepeatableRead(t *testing.T) {
	a := admin(t)
	adm := revokeAdmins()[1]
	schema := "rr_" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE SCHEMA %s`, render.QuoteIdent(schema)))
	adm.setup(t, a, adm.user, schema)
	execSQL(t, a, fmt.Sprintf(`ALTER ROLE %s SET default_transaction_isolation = 'repeatable read'`, render.QuoteIdent(adm.user)))
	t.Cleanup(func() {
		execSQL(t, a, fmt.Sprintf(`ALTER ROLE %s RESET default_transaction_isolation`, render.QuoteIdent(adm.user)))
	})
	// The plugin's sessions start after the setting: newDBAndSchema's
	// would not have it.
	db := newDB(t, map[string]interface{}{"username": adm.user, "password": "limited-pw"})
	assertMemberGrantedDuringRevocationRemoved(t, a, db, schema)
}

// TestLockoutDisabledRoleNamesAPreparedMembershipChange: the user, under a
// group role it was given that administers another role, grants that role
// in a transaction it prepares: a membership change that never ends by
// itself, and not the user's own by its owner. A revocation that can only
// disable the role fails (Vault retries) and names it, with its gid and
// owner, for a superuser to end.
func TestLockoutDisabledRoleNamesAPreparedMembershipChange(t *testing.T) {
	db, a, schema, third := disabledLab(t)
	needPrepared(t, a)
	user, password := disabledUser(t, db, a, schema, third)
	group, other := "grp_"+randSuffix(), "other_"+randSuffix()
	acct2, _ := attackerAccount(t, a)
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %[1]s NOLOGIN; CREATE ROLE %[2]s NOLOGIN; GRANT %[2]s TO %[1]s WITH ADMIN OPTION; GRANT %[1]s TO %[3]s",
		render.QuoteIdent(group), render.QuoteIdent(other), render.QuoteIdent(user)))
	t.Cleanup(func() {
		execSQL(t, a, fmt.Sprintf("DROP ROLE IF EXISTS %s; DROP ROLE IF EXISTS %s", render.QuoteIdent(other), render.QuoteIdent(group)))
	})
	c := connectAs(t, user, password, "")
	gid := prepareAs(t, c, "SET ROLE "+render.QuoteIdent(group), fmt.Sprintf("GRANT %s TO %s", render.QuoteIdent(other), render.QuoteIdent(acct2)))
	_ = c.Close(testCtx(t))
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
	if err == nil || !strings.Contains(err.Error(), gid) || !strings.Contains(err.Error(), group) {
		t.Fatalf("DeleteUser = %v, want an error naming the prepared transaction %s of %s", err, gid, group)
	}
	assertNoLogin(t, user, password)
}
