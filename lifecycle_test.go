package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// waitSessions waits until at most max sessions of app remain; closed
// connections take a moment to leave pg_stat_activity.
func waitSessions(t testing.TB, a *pgxpool.Pool, app string, max int) {
	t.Helper()
	err := pgtest.Poll(testCtx(t), 20*time.Second, 50*time.Millisecond, func() error {
		if n := sessionsOf(t, a, app); n > max {
			return fmt.Errorf("%d sessions of %s are still open, want at most %d", n, app, max)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitBlocked waits until a session whose query contains marker, or whose
// application_name is marker, waits on a lock.
func waitBlocked(t testing.TB, a *pgxpool.Pool, marker string) {
	t.Helper()
	err := pgtest.Poll(testCtx(t), 30*time.Second, 20*time.Millisecond, func() error {
		var n int
		if err := a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND (strpos(query, $1) > 0 OR application_name = $1) AND pid <> pg_backend_pid()`, marker).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no session is waiting on the lock yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// closeAsync closes db in the background (it must not wait for requests in
// flight, but if it does the test must not deadlock) and returns once the
// plugin has let go of its state: new requests are refused from then on.
func closeAsync(t testing.TB, db *Postgres) <-chan error {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	err := pgtest.Poll(testCtx(t), 30*time.Second, 5*time.Millisecond, func() error {
		if db.state.Load() != nil {
			return errors.New("Close has not retired the state yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return closed
}

// TestReinitializeDuringRequests re-initializes the plugin (same
// configuration, as Vault does on a config write or reload) again and again
// while requests run: none may fail, and every retired pool is closed.
func TestReinitializeDuringRequests(t *testing.T) {
	needPG(t)
	a := admin(t)
	app := "lc-reinit-" + randSuffix()
	extra := appConfig(app)
	db := newDB(t, extra)
	cfg := baseConfig()
	for k, v := range extra {
		cfg[k] = v
	}

	const workers, reinits = 6, 25
	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	var requests atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Run until the re-initializations are over, and at least a few rounds.
			for i := 0; i < 3 || !done.Load(); i++ {
				req := newUserReq(createStmt)
				resp, err := db.NewUser(testCtx(t), req)
				if err != nil {
					errs <- fmt.Errorf("NewUser: %w", err)
					return
				}
				if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: resp.Username}); err != nil {
					errs <- fmt.Errorf("DeleteUser %s: %w", resp.Username, err)
					return
				}
				requests.Add(2)
			}
		}()
	}
	for i := 0; i < reinits; i++ {
		if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err != nil {
			t.Errorf("Initialize %d: %v", i, err)
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d requests during %d re-initializations", requests.Load(), reinits)
	// Every retired state closed its pool once its last request ended: only
	// the current pool's connections remain.
	waitSessions(t, a, app, defaultMaxOpenConnections)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	waitSessions(t, a, app, 0)
}

// TestCloseDuringRequest closes the plugin while a creation waits on a lock:
// the creation still finishes, then the pool closes.
func TestCloseDuringRequest(t *testing.T) {
	needPG(t)
	a := admin(t)
	app := "lc-close-" + randSuffix()
	db := newDB(t, appConfig(app))

	lock, err := a.Acquire(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	key := time.Now().UnixNano()
	if _, err := lock.Exec(testCtx(t), "SELECT pg_advisory_lock($1)", key); err != nil {
		t.Fatal(err)
	}
	req := newUserReq(createStmt, fmt.Sprintf("SELECT pg_advisory_xact_lock(%d);", key))
	type result struct {
		resp dbplugin.NewUserResponse
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := db.NewUser(testCtx(t), req)
		res <- result{resp, err}
	}()
	// By application: the query text pg_stat_activity keeps (1 kB) ends
	// within the plugin's transaction settings.
	waitBlocked(t, a, app)
	closed := closeAsync(t, db)
	if _, err := db.NewUser(testCtx(t), newUserReq(createStmt)); err == nil || !strings.Contains(err.Error(), "not initialized") {
		t.Fatalf("a request after Close: error = %v, want not initialized", err)
	}
	if _, err := lock.Exec(testCtx(t), "SELECT pg_advisory_unlock($1)", key); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("the request in flight during Close failed: %v", r.err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(r.resp.Username)) })
	assertLogin(t, r.resp.Username, req.Password)
	waitSessions(t, a, app, 0)
}

// TestOtherDatabaseRevocationDuringClose closes the plugin while a
// revocation is held up before it reaches the user's objects in another
// database: it finishes there, and leaves no session behind.
func TestOtherDatabaseRevocationDuringClose(t *testing.T) {
	needPG(t)
	a := admin(t)
	app := "lc-dbpool-" + randSuffix()
	dbname := "lc_other_" + randSuffix()
	execSQL(t, a, "CREATE DATABASE "+render.QuoteIdent(dbname))
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP DATABASE IF EXISTS "+render.QuoteIdent(dbname)+" WITH (FORCE)")
	})
	db := newDB(t, appConfig(app))
	req := newUserReq(createStmt)
	resp := dbtesting.AssertNewUser(t, db, req)
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(resp.Username)) })
	other, err := pg.Connect(testCtx(t), pg.SuperUser, pg.SuperPassword, dbname)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(testCtx(t), "CREATE TABLE kept (id int); ALTER TABLE kept OWNER TO "+render.QuoteIdent(resp.Username)); err != nil {
		t.Fatal(err)
	}

	// An uncommitted change to the role holds its pg_authid row: the
	// revocation waits at its first ALTER ROLE.
	tx, err := a.Begin(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(testCtx(t), "ALTER ROLE "+render.QuoteIdent(resp.Username)+" CONNECTION LIMIT 7"); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: resp.Username})
		res <- err
	}()
	waitBlocked(t, a, app)
	closed := closeAsync(t, db)
	if err := tx.Rollback(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("revocation in flight during Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if roleExists(t, a, resp.Username) {
		t.Fatal("role still exists")
	}
	var owner string
	if err := other.QueryRow(testCtx(t), "SELECT tableowner FROM pg_tables WHERE tablename = 'kept'").Scan(&owner); err != nil {
		t.Fatalf("the table in the other database is gone: %v", err)
	}
	// The revocation reached the other database on a connection opened
	// after Close, and closed it.
	waitSessions(t, a, app, 0)
}

// TestConcurrentRequests sends many creations that GRANT on the same table
// at once; PostgreSQL answers some with "tuple concurrently updated", which
// the plugin must absorb.
func TestConcurrentRequests(t *testing.T) {
	db := newDB(t, map[string]interface{}{"max_open_connections": 8})
	a := admin(t)
	execSQL(t, a, "CREATE TABLE IF NOT EXISTS concurrent_orders (id int)")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	users := make(chan [2]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newUserReq(createStmt, `GRANT SELECT, INSERT ON concurrent_orders TO "{{name}}";`)
			resp, err := db.NewUser(testCtx(t), req)
			if err != nil {
				errs <- err
				return
			}
			users <- [2]string{resp.Username, req.Password}
		}()
	}
	wg.Wait()
	close(errs)
	close(users)
	for err := range errs {
		t.Errorf("NewUser: %v", err)
	}
	seen := map[string]bool{}
	var all []string
	for u := range users {
		if seen[u[0]] {
			t.Fatalf("duplicate username %q", u[0])
		}
		seen[u[0]] = true
		all = append(all, u[0])
		if err := pg.CanLogin(testCtx(t), u[0], u[1]); err != nil {
			t.Errorf("login %q: %v", u[0], err)
		}
	}
	// Revoke them all at once as well.
	var wg2 sync.WaitGroup
	for _, u := range all {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: u}); err != nil {
				t.Errorf("DeleteUser %q: %v", u, err)
			}
		}()
	}
	wg2.Wait()
	var left int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", all).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d roles left after revocation (err %v)", left, err)
	}
}

func TestContextBoundsCalls(t *testing.T) {
	db := newDB(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req := newUserReq(createStmt, `SELECT pg_sleep(30);`)
	_, err := db.NewUser(ctx, req)
	if err == nil {
		t.Fatal("a 30 s statement finished within a 200 ms context")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("context not expired: %v", ctx.Err())
	}
}

// TestCloseLeavesNoGoroutines checks that Close stops everything the plugin
// started: pools and their health checks.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	needPG(t)
	before := runtime.NumGoroutine()
	db := newPostgres(hclog.NewNullLogger())
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: baseConfig(), VerifyConnection: true})
	resp := dbtesting.AssertNewUser(t, db, newUserReq(createStmt))
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: resp.Username})
	dbtesting.AssertClose(t, db)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}
