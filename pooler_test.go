package postgres

// The plugin behind PgBouncer, in session and in transaction pooling, with
// PgBouncer's default settings (pgtest.StartPgBouncer): every request goes
// through it, and every check is made from outside, directly on the server
// and through PgBouncer.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// poolModes are the PgBouncer pool modes the plugin must work behind.
// (Statement pooling refuses multi-statement transactions, which every
// request is.)
var poolModes = []string{"session", "transaction"}

// startBouncer starts a PgBouncer of its own for the test in front of pg,
// with settings added to its configuration.
func startBouncer(t *testing.T, mode string, settings ...string) *pgtest.Pooler {
	t.Helper()
	needPG(t)
	b, err := pgtest.StartPgBouncer(testCtx(t), pg, mode, settings...)
	if errors.Is(err, pgtest.ErrNoPgBouncer) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := b.ReadLog()
			t.Logf("pgbouncer log:\n%s", log)
		}
		_ = b.Stop()
	})
	return b
}

// eachPoolMode runs f as a parallel subtest per pool mode, each with its own
// PgBouncer.
func eachPoolMode(t *testing.T, f func(t *testing.T, b *pgtest.Pooler)) {
	t.Helper()
	for _, mode := range poolModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f(t, startBouncer(t, mode))
		})
	}
}

// throughBouncer is extra with the connection_url pointing at b.
func throughBouncer(b *pgtest.Pooler, extra map[string]interface{}) map[string]interface{} {
	cfg := map[string]interface{}{"connection_url": b.TemplateURL("")}
	for k, v := range extra {
		cfg[k] = v
	}
	return cfg
}

// newPooledDB is newDB (Initialize with verify_connection) through b.
func newPooledDB(t *testing.T, b *pgtest.Pooler, extra map[string]interface{}) *Postgres {
	t.Helper()
	return newDB(t, throughBouncer(b, extra))
}

// connectThrough opens a session through b as user, closed when the test
// ends.
func connectThrough(t *testing.T, b *pgtest.Pooler, user, password string) *pgx.Conn {
	t.Helper()
	c, err := b.Connect(testCtx(t), user, password, "")
	if err != nil {
		t.Fatalf("connect as %q through pgbouncer: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// assertLoginBoth proves the password works directly and through b, and a
// wrong one fails both ways.
func assertLoginBoth(t *testing.T, b *pgtest.Pooler, user, password string) {
	t.Helper()
	assertLogin(t, user, password)
	if err := b.CanLogin(testCtx(t), user, password); err != nil {
		t.Fatalf("login as %q through pgbouncer with the returned password failed: %v", user, err)
	}
	if err := b.CanLogin(testCtx(t), user, password+"x"); err == nil {
		t.Fatalf("login as %q through pgbouncer with a wrong password succeeded", user)
	}
}

// assertNoLoginBoth proves password no longer works, directly or through b.
func assertNoLoginBoth(t *testing.T, b *pgtest.Pooler, user, password string) {
	t.Helper()
	assertNoLogin(t, user, password)
	if err := b.CanLogin(testCtx(t), user, password); err == nil {
		t.Fatalf("login as %q through pgbouncer still works", user)
	}
}

// TestPoolerNewUser: Initialize (verify_connection) and a dynamic user's
// whole life through PgBouncer, by two plugin instances in turn (two mounts
// or two Vault nodes on one database): in transaction pooling they share
// PgBouncer's server sessions. The users did not exist when PgBouncer
// started: their logins through PgBouncer work by auth_query alone.
func TestPoolerNewUser(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		dbs := []*Postgres{newPooledDB(t, b, nil), newPooledDB(t, b, nil)}
		for round := range 2 {
			for i, db := range dbs {
				req := newUserReq(createStmt)
				resp, err := db.NewUser(testCtx(t), req)
				if err != nil {
					t.Fatalf("round %d, instance %d: NewUser: %v", round+1, i+1, err)
				}
				assertLoginBoth(t, b, resp.Username, req.Password)
				if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: resp.Username}); err != nil {
					t.Fatalf("round %d, instance %d: DeleteUser: %v", round+1, i+1, err)
				}
				if roleExists(t, a, resp.Username) {
					t.Fatalf("round %d, instance %d: role %q still exists after DeleteUser", round+1, i+1, resp.Username)
				}
				assertNoLoginBoth(t, b, resp.Username, req.Password)
			}
		}
	})
}

// TestPoolerPgpool: the same life of a dynamic user through pgpool-II, which
// pools sessions and, knowing no password of a dynamic user, asks the
// plugin for it in cleartext over verified TLS (pgtest.StartPgpool).
func TestPoolerPgpool(t *testing.T) {
	needPG(t)
	a := admin(t)
	p, err := pgtest.StartPgpool(testCtx(t), pg)
	if errors.Is(err, pgtest.ErrNoPgpool) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := p.ReadLog()
			t.Logf("pgpool log:\n%s", log)
		}
		_ = p.Stop()
	})
	db := newPooledDB(t, p, nil)
	req := newUserReq(createStmt)
	user := dbtesting.AssertNewUser(t, db, req).Username
	assertLoginBoth(t, p, user, req.Password)
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	if roleExists(t, a, user) {
		t.Fatalf("role %q still exists after DeleteUser", user)
	}
	assertNoLoginBoth(t, p, user, req.Password)
}

// TestPoolerExpiredUser: a user whose VALID UNTIL has passed is refused
// through PgBouncer although PgBouncer still holds a server session logged
// in as it. PgBouncer does not check VALID UNTIL, and PostgreSQL checks it
// only at login: the auth_query's lookup (pgtest's, as the README's) has
// to leave expired roles out.
func TestPoolerExpiredUser(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		db := newPooledDB(t, b, nil)
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
		assertLoginBoth(t, b, user, req.Password)
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user,
			Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(-time.Minute)}})
		if n := sessionsOfRole(t, a, roleOID(t, a, user)); n == 0 {
			t.Fatal("pgbouncer holds no server session of the user: the test proves nothing")
		}
		assertNoLoginBoth(t, b, user, req.Password)
	})
}

// TestPoolerConcurrentRequests: 20 creations at once, each logging in
// through PgBouncer with its password, then 20 revocations at once; none
// may fail and no role may be left.
func TestPoolerConcurrentRequests(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		db := newPooledDB(t, b, nil)
		const n = 20
		users := make([]string, n)
		runConcurrently(t, n, func(i int) error {
			req := newUserReq(createStmt)
			resp, err := db.NewUser(testCtx(t), req)
			if err != nil {
				return fmt.Errorf("NewUser: %w", err)
			}
			users[i] = resp.Username
			if err := b.CanLogin(testCtx(t), resp.Username, req.Password); err != nil {
				return fmt.Errorf("login as %q through pgbouncer: %w", resp.Username, err)
			}
			return nil
		})
		runConcurrently(t, n, func(i int) error {
			if users[i] == "" {
				return nil
			}
			if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: users[i]}); err != nil {
				return fmt.Errorf("DeleteUser %q: %w", users[i], err)
			}
			return nil
		})
		var left int
		if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", users).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d roles left after revocation (err %v)", left, err)
		}
	})
}

// runConcurrently runs f(0) … f(n-1) at once and reports every error.
func runConcurrently(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestPoolerStaticRotation: a static role's password changed through
// PgBouncer works through PgBouncer at once, and the old one is refused.
func TestPoolerStaticRotation(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		db := newPooledDB(t, b, nil)
		user, pw := "pooled-static-"+randSuffix(), "Static-"+randSuffix()
		execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", render.QuoteIdent(user), render.QuoteLiteral(pw)))
		t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
		// A pooled server connection as the user, opened with the old
		// password, must not let the old password back in.
		assertLoginBoth(t, b, user, pw)
		newPw := "Static2-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
		assertLoginBoth(t, b, user, newPw)
		assertNoLoginBoth(t, b, user, pw)
	})
}

// TestPoolerRootRotation follows Vault's rotate-root through PgBouncer:
// UpdateUser on the plugin's own user, then Initialize with the new
// password. PgBouncer holds server connections logged in with the old
// password; the old password must still be refused, and the new one must
// work even where PgBouncer has to open new server connections.
func TestPoolerRootRotation(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		root, pw := "pooled-root-"+randSuffix(), `R@/#{}%?&'`+randSuffix()
		execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s", render.QuoteIdent(root), render.QuoteLiteral(pw)))
		t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(root)) })
		db := newPooledDB(t, b, map[string]interface{}{"username": root, "password": pw})
		newPw := `N3w@/#{}%?&'` + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: root, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
		assertNoLoginBoth(t, b, root, pw)
		// No server connection logged in with the old password is left.
		oid := roleOID(t, a, root)
		execSQL(t, a, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = $1", oid)
		waitFor(t, func() bool { return sessionsOfRole(t, a, oid) == 0 })
		assertLoginBoth(t, b, root, newPw)
		cfg := mergeConfig(throughBouncer(b, map[string]interface{}{"username": root, "password": newPw}))
		dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		assertLoginBoth(t, b, user, req.Password)
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
		if roleExists(t, a, user) {
			t.Fatalf("role %q still exists after DeleteUser", user)
		}
	})
}

// TestPoolerRevocationEndsSessions: a user with two sessions through
// PgBouncer, one idle and one inside a transaction, is revoked through
// PgBouncer. Its server sessions end, neither client session can run
// anything afterwards (in transaction pooling the idle one stays connected
// to PgBouncer, but PgBouncer can no longer log in as the user), and the
// role is gone.
func TestPoolerRevocationEndsSessions(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		db := newPooledDB(t, b, nil)
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		oid := roleOID(t, a, user)
		idle, inTx := connectThrough(t, b, user, req.Password), connectThrough(t, b, user, req.Password)
		if _, err := idle.Exec(testCtx(t), "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := inTx.Exec(testCtx(t), "BEGIN; SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if n := sessionsOfRole(t, a, oid); n == 0 {
			t.Fatal("the user has no server session: the test proves nothing")
		}
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
		if n := sessionsOfRole(t, a, oid); n != 0 {
			t.Fatalf("%d server session(s) of %q alive after DeleteUser", n, user)
		}
		for name, c := range map[string]*pgx.Conn{"idle": idle, "in a transaction": inTx} {
			// In transaction pooling the idle session is still connected
			// to PgBouncer, which holds its next query while it retries
			// logging in as the dropped role (server_login_retry) and
			// ends it at query_wait_timeout (120 s by default): it never
			// runs, and a few seconds show that.
			ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
			_, err := c.Exec(ctx, "SELECT 1")
			cancel()
			if err == nil {
				t.Errorf("the user's %s session through pgbouncer still runs queries", name)
			}
		}
		if roleExists(t, a, user) {
			t.Fatalf("role %q still exists after DeleteUser", user)
		}
		assertNoLoginBoth(t, b, user, req.Password)
	})
}

// TestPoolerLockTimeoutBoundsRevocation: a long transaction holds a lock on
// a table the user owns. Through PgBouncer too the revocation must give up
// after lock_timeout (errHandOverLocked) instead of queueing behind it:
// lock_timeout has to reach the server session the revocation runs on,
// whichever one PgBouncer picks. Access is gone meanwhile; once the lock is
// released a second attempt drops the user and keeps the table.
func TestPoolerLockTimeoutBoundsRevocation(t *testing.T) {
	a := admin(t)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		db := newPooledDB(t, b, map[string]interface{}{"lock_timeout": "200ms"})
		req := newUserReq(createStmt, `GRANT CREATE ON SCHEMA public TO "{{name}}";`)
		user := dbtesting.AssertNewUser(t, db, req).Username
		tbl := "pooled_locked_" + randSuffix()
		c := connectThrough(t, b, user, req.Password)
		if _, err := c.Exec(testCtx(t), fmt.Sprintf("CREATE TABLE public.%s (id int); INSERT INTO public.%[1]s VALUES (1)", tbl)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS public."+tbl) })
		holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
		if _, err := holder.Exec(testCtx(t), fmt.Sprintf("BEGIN; SELECT * FROM public.%s", tbl)); err != nil {
			t.Fatal(err)
		}
		// Bounded well beyond lock_timeout, so a revocation that queues
		// fails here for what it is, not at the test's own deadline.
		ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
		defer cancel()
		_, err := db.DeleteUser(ctx, dbplugin.DeleteUserRequest{Username: user})
		if !errors.Is(err, errHandOverLocked) {
			t.Fatalf("revocation behind a lock: error = %v, want errHandOverLocked (%q)", err, errHandOverLocked)
		}
		assertNoLoginBoth(t, b, user, req.Password)
		if _, err := holder.Exec(testCtx(t), "COMMIT"); err != nil {
			t.Fatal(err)
		}
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
		var owner string
		var n int
		if err := a.QueryRow(testCtx(t), fmt.Sprintf("SELECT (SELECT tableowner FROM pg_tables WHERE tablename = $1), (SELECT count(*) FROM public.%s)", tbl), tbl).Scan(&owner, &n); err != nil || n != 1 || owner != holdingRole {
			t.Fatalf("table after revocation: owner %q rows %d (%v); want kept, owned by %q", owner, n, err, holdingRole)
		}
	})
}

// TestPoolerReaper: the orphan reaper revokes an expired labelled role
// through PgBouncer, also right after a request left SET ROLE on its server
// session (the pass may run on it: the plugin's own pooled session, or in
// transaction pooling any), and leaves no lock behind on a pooled server
// session. Not parallel: roles are cluster-wide, so a pass would reap the
// orphans of a test beside it.
func TestPoolerReaper(t *testing.T) {
	a := admin(t)
	other := plainRole(t, a, "pooled-other", "")
	cases := []struct {
		name string
		dirt []string
	}{
		{"clean session", nil},
		{"session left with SET ROLE", []string{"SET ROLE " + render.QuoteIdent(other) + ";"}},
	}
	for _, mode := range poolModes {
		t.Run(mode, func(t *testing.T) {
			b := startBouncer(t, mode)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					db, _ := newReaperDB(t, throughBouncer(b, map[string]interface{}{"reap_orphans_after": "1h"}), 24*time.Hour, true)
					orphan := orphanUser(t, db, time.Now().Add(-2*time.Hour), c.dirt...)
					res := reapNow(t, db)
					if res.reaped < 1 || res.failed != 0 || res.beyond != 0 {
						t.Fatalf("pass = %+v, want the orphan reaped, nothing beyond reach or failed", res)
					}
					if roleExists(t, a, orphan) {
						t.Fatalf("orphan %q survived the pass", orphan)
					}
					assertNoSessionLockLeft(t, a)
				})
			}
		})
	}
}

// assertNoSessionLockLeft fails when an idle session (so one outside any
// transaction) holds an advisory lock: a session-level lock taken on a
// server session that PgBouncer keeps and hands to others is never
// released.
func assertNoSessionLockLeft(t *testing.T, a *pgxpool.Pool) {
	t.Helper()
	var n int
	if err := a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND s.state = 'idle'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d advisory lock(s) held by idle sessions after the pass", n)
	}
}

// TestPoolerSessionStateDoesNotLeak: creation statements that end with SET
// ROLE, SET SESSION AUTHORIZATION, another search_path or other settings
// leave them on the server session PgBouncer keeps. The next request on it
// must run as the configured user with the plugin's settings: the same
// plugin's next request, and in transaction pooling, where server sessions
// are shared between clients, another plugin instance's (its Initialize
// included: it reads server settings there).
func TestPoolerSessionStateDoesNotLeak(t *testing.T) {
	a := admin(t)
	other := "pooled-other-" + randSuffix()
	execSQL(t, a, "CREATE ROLE "+render.QuoteIdent(other))
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(other)) })
	probe := newSessionProbe(t, a)
	eachPoolMode(t, func(t *testing.T, b *pgtest.Pooler) {
		// Not parallel: one request at a time keeps PgBouncer at one
		// server session, so each request lands on the dirty one.
		for name, dirt := range sessionDirt(other) {
			t.Run(name, func(t *testing.T) {
				one := map[string]interface{}{"max_open_connections": 1}
				db := newPooledDB(t, b, one)
				dirty := dbtesting.AssertNewUser(t, db, newUserReq(append([]string{createStmt, probe.record}, dirt...)...))
				t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(dirty.Username)) })
				_, _, _, _, dirtyPID := probe.read(t, a, dirty.Username)
				next := map[string]*Postgres{"the same plugin": db}
				if b.PoolMode == "transaction" {
					next["another plugin instance"] = newPooledDB(t, b, one)
				}
				for who, db := range next {
					assertCleanSession(t, a, b, db, probe, dirtyPID, who)
				}
			})
		}
	})
}

// assertCleanSession creates a user with db on the server session dirtyPID
// was left dirty on and checks what its statements saw, and that its
// password works.
func assertCleanSession(t *testing.T, a *pgxpool.Pool, b *pgtest.Pooler, db *Postgres, probe sessionProbe, dirtyPID int, who string) {
	t.Helper()
	// A clean session's own path (the probe reads the copy the plugin
	// keeps of it).
	defaultPath := sessionPathOf(t, a)
	req := newUserReq(createStmt, probe.record)
	req.Password = `Aa1\'b\\c` + randSuffix()
	resp, err := db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatalf("%s: NewUser after the dirty request: %v", who, err)
	}
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(resp.Username)) })
	cu, su, scs, sp, pid := probe.read(t, a, resp.Username)
	if pid != dirtyPID {
		t.Fatalf("%s: the request ran on another server session (pid %d, not %d): the test proves nothing", who, pid, dirtyPID)
	}
	if cu != pg.SuperUser || su != pg.SuperUser || scs != "on" || sp != defaultPath {
		t.Fatalf("%s: the next request saw current_user=%q session_user=%q standard_conforming_strings=%q search_path=%q; want %q, %q, on, %q",
			who, cu, su, scs, sp, pg.SuperUser, pg.SuperUser, defaultPath)
	}
	var verifier string
	if err := a.QueryRow(testCtx(t), "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = $1", resp.Username).Scan(&verifier); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("%s: the next request stored the password as %.14q…, want a SCRAM verifier", who, verifier)
	}
	assertLoginBoth(t, b, resp.Username, req.Password)
}

// TestPoolerCreationLostReply cuts the plugin's connection while its
// creation statements wait for a lock, so that the server session that got
// them still runs. Before running the creation again on a fresh connection
// the plugin must end that session and wait for it (endSession), or both may
// create the user: the first commits when the lock is released, and the
// second fails with "already exists" although the user exists with the
// returned password. Behind a pooler the pid the plugin's connection
// reports (BackendKeyData) is the pooler's, not the server session's.
// Directly, without a pooler, is the control case.
func TestPoolerCreationLostReply(t *testing.T) {
	needPG(t)
	for _, mode := range append([]string{"direct"}, poolModes...) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var fp *pgtest.Proxy
			var connURL string
			if mode == "direct" {
				fp = newPGProxy(t)
				connURL = proxyURL(fp)
			} else {
				b := startBouncer(t, mode)
				fp = newProxy(t, net.JoinHostPort(b.Host, strconv.Itoa(b.Port)))
				through := *b
				through.Port = fp.Port()
				connURL = through.TemplateURL("")
			}
			db := newDB(t, map[string]interface{}{"connection_url": connURL})
			assertCreationSurvivesLostReply(t, db, fp)
		})
	}
}

// assertCreationSurvivesLostReply runs a creation that first waits for an
// advisory lock the test holds, cuts every connection through fp once the
// server session waits, releases the lock once a second session (the
// plugin's new attempt) waits too or the creation has returned, and checks
// that the creation succeeded with a password that works.
func assertCreationSurvivesLostReply(t *testing.T, db *Postgres, fp *pgtest.Proxy) {
	t.Helper()
	a := admin(t)
	key := int32(time.Now().UnixNano() & 0x7fffffff)
	holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	if _, err := holder.Exec(testCtx(t), "SELECT pg_advisory_lock(4242, $1)", key); err != nil {
		t.Fatal(err)
	}
	req := newUserReq(fmt.Sprintf("SELECT pg_advisory_xact_lock(4242, %d);", key), createStmt)
	// A role name of its own, so that the users a failed creation leaves
	// behind (it reports no name) are found and dropped.
	req.UsernameConfig.RoleName = fmt.Sprintf("lr%06d", key%1000000)
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), `DO $$ DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-test-`+req.UsernameConfig.RoleName+`-%' LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END $$`)
	})
	res, user := newUserInBackground(t, db, req)
	first := waitLockWaiter(t, a, key, 0, res)
	fp.KillAll()
	waitLockWaiter(t, a, key, first, res)
	if _, err := holder.Exec(testCtx(t), "SELECT pg_advisory_unlock(4242, $1)", key); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("NewUser after its connection was lost: %v", err)
	}
	assertLogin(t, *user, req.Password)
}

// waitLockWaiter waits until a session other than not waits for the
// advisory lock (4242, key) and returns its pid; 0 when the creation
// (res) returned first, whose result stays in res.
func waitLockWaiter(t *testing.T, a *pgxpool.Pool, key int32, not int, res chan error) int {
	t.Helper()
	var pid int
	err := pgtest.Poll(testCtx(t), 30*time.Second, 20*time.Millisecond, func() error {
		if len(res) > 0 {
			return nil
		}
		err := a.QueryRow(testCtx(t), `SELECT coalesce(max(pid), 0) FROM pg_locks WHERE locktype = 'advisory'
			AND classid = 4242 AND objid = $1 AND objsubid = 2 AND NOT granted AND pid <> $2`, int64(uint32(key)), not).Scan(&pid)
		if err == nil && pid == 0 {
			err = errors.New("no session waits for the lock yet")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestPoolerPluginQueriesResolveNothingFromASessionsPath: behind a
// transaction-pooling PgBouncer, the reset after a failed batch is a
// transaction of its own and may reach another server session than the one
// the batch left with the search_path its COMMIT made final (round robin
// here, so that the order is certain; with the default, another client may
// take the dirty session in between). The plugin's own one-statement
// queries (the role check after "does not exist") may then run on it: they
// name pg_catalog's operators, so the = a dynamic user planted in public
// does not run as the admin.
func TestPoolerPluginQueriesResolveNothingFromASessionsPath(t *testing.T) {
	a := admin(t)
	b := startBouncer(t, "transaction", "server_round_robin = 1")
	acct, acctPW := attackerAccount(t, a)
	execSQL(t, a, "GRANT CREATE ON SCHEMA public TO "+render.QuoteIdent(acct))
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP OPERATOR IF EXISTS public.= (name, name); DROP FUNCTION IF EXISTS public.name_eq(name, name); REVOKE CREATE ON SCHEMA public FROM "+render.QuoteIdent(acct))
	})
	ac := connectAs(t, acct, acctPW, "")
	execSQL(t, ac, fmt.Sprintf(`
CREATE FUNCTION public.name_eq(a name, b name) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	%s
	RETURN a OPERATOR(pg_catalog.=) b;
END $f$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.name_eq);`, escalate(acct)))
	// Two idle server sessions in PgBouncer's pool.
	c1, c2 := connectThrough(t, b, pg.SuperUser, pg.SuperPassword), connectThrough(t, b, pg.SuperUser, pg.SuperPassword)
	execSQL(t, c1, "BEGIN")
	execSQL(t, c2, "BEGIN")
	execSQL(t, c1, "COMMIT")
	execSQL(t, c2, "COMMIT")
	db := newPooledDB(t, b, map[string]interface{}{"max_open_connections": 1})
	user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt)).Username
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user,
		Statements: dbplugin.Statements{Commands: []string{`SET search_path = public, pg_catalog; COMMIT; REVOKE "no_such_role_x" FROM "{{name}}";`}}})
	t.Logf("DeleteUser: %v", err)
	if isSuper(t, a, acct) {
		t.Fatalf("a plugin query ran the = operator planted in public on the server session a failed batch left with search_path = public, pg_catalog: %s is now a superuser", acct)
	}
}
