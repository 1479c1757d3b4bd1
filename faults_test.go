package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// TestStalePooledConnections: after every pooled connection dies under the
// plugin, the next requests succeed, each op after a fresh kill.
func TestStalePooledConnections(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, tc := range []struct {
		name string
		kill func(p *pgtest.Proxy, app string)
	}{
		{"server restarted (every connection closed)", func(p *pgtest.Proxy, _ string) { p.KillAll() }},
		{"pg_terminate_backend on every plugin connection", func(_ *pgtest.Proxy, app string) {
			execSQL(t, a, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app)
			waitFor(t, func() bool { return sessionsOf(t, a, app) == 0 })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPGProxy(t)
			app := "pgvault-fault-" + randSuffix()
			db := newDB(t, map[string]interface{}{"connection_url": proxyURL(p) + "&application_name=" + app, "max_open_connections": 2})
			cycleOn(t, db, pg, admin(t))
			// Kill before each operation, so that each meets a dead
			// connection that was used less than a second ago (pgxpool
			// pings only connections idle for longer).
			req := newUserReq(createStmt)
			tc.kill(p, app)
			user := dbtesting.AssertNewUser(t, db, req).Username
			tc.kill(p, app)
			dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user,
				Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(time.Hour)}})
			tc.kill(p, app)
			newPw := "Rot-" + randSuffix()
			dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user,
				Password: &dbplugin.ChangePassword{NewPassword: newPw}})
			assertLogin(t, user, newPw)
			tc.kill(p, app)
			dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
			if roleExists(t, a, user) {
				t.Fatal("role survived revocation")
			}
		})
	}
}

// TestDatabaseDown: requests fail within their deadline with an error that
// names the host and the cause, and service resumes by itself.
func TestDatabaseDown(t *testing.T) {
	p := newPGProxy(t)
	db := newDB(t, map[string]interface{}{"connection_url": proxyURL(p)})
	cycleOn(t, db, pg, admin(t))
	p.Down()
	p.KillAll()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := newUserReq(createStmt)
	_, err := db.NewUser(ctx, req)
	if err == nil {
		t.Fatal("NewUser succeeded with the database down")
	}
	if ctx.Err() != nil {
		t.Fatalf("NewUser ran into its deadline instead of failing: %v", err)
	}
	hostPort := p.Addr()
	if !strings.Contains(err.Error(), hostPort) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error does not name the host and the cause: %v", err)
	}
	if strings.Contains(err.Error(), req.Password) || strings.Contains(err.Error(), pg.SuperPassword) {
		t.Fatalf("error holds a password: %v", err)
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	cycleOn(t, db, pg, admin(t))
}

// TestDroppedNATMapping: connections idle in the pool were silently dropped
// on the path (no FIN, no RST). The next request must not hang until its
// deadline: the liveness ping gives up and a fresh connection serves it.
func TestDroppedNATMapping(t *testing.T) {
	p := newPGProxy(t)
	db := newDB(t, map[string]interface{}{"connection_url": proxyURL(p)})
	cycleOn(t, db, pg, admin(t))
	p.BlackholeAll()
	time.Sleep(1100 * time.Millisecond) // idle long enough to be pinged
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := newUserReq(createStmt)
	resp, err := db.NewUser(ctx, req)
	if err != nil {
		t.Fatalf("NewUser after the path dropped: %v", err)
	}
	assertLogin(t, resp.Username, req.Password)
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: resp.Username})
}

// TestLockTimeoutBoundsRevocation: a long transaction holds a lock on a
// table the user owns. Revocation must not queue behind it for long (every
// later query on the table would queue behind the revocation): access is
// removed and committed, the hand-over gives up after lock_timeout with an
// error that names it, and a later attempt finishes the job, data kept.
func TestLockTimeoutBoundsRevocation(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, map[string]interface{}{"lock_timeout": "300ms"})
	user, password, tbl, c := userOwningTable(t, db, "locked_")
	if _, err := c.Exec(testCtx(t), fmt.Sprintf("INSERT INTO public.%s VALUES (1)", tbl)); err != nil {
		t.Fatal(err)
	}
	holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	if _, err := holder.Exec(testCtx(t), fmt.Sprintf("BEGIN; SELECT * FROM public.%s", tbl)); err != nil {
		t.Fatal(err)
	}
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
	if err == nil || !strings.Contains(err.Error(), "lock_timeout") {
		t.Fatalf("revocation behind a lock: error = %v, want one naming lock_timeout", err)
	}
	t.Log(err)
	// Access is gone although the hand-over waits.
	assertNoLogin(t, user, password)
	var one int
	if qerr := c.QueryRow(testCtx(t), "SELECT 1").Scan(&one); qerr == nil {
		t.Fatal("the user's session survived the revocation attempt")
	}
	if _, err := holder.Exec(testCtx(t), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	var owner string
	var n int
	if err := a.QueryRow(testCtx(t), fmt.Sprintf("SELECT (SELECT tableowner FROM pg_tables WHERE tablename = $1), (SELECT count(*) FROM public.%s)", tbl), tbl).Scan(&owner, &n); err != nil || n != 1 || owner != holdingRole {
		t.Fatalf("table after revocation: owner %q rows %d (%v)", owner, n, err)
	}
}

// TestRevocationBackendKilledBetweenTransactions ends the plugin's backend
// while the revocation's second transaction (the hand-over) waits for a lock
// on the user's table, after the first committed NOLOGIN. The user stays
// locked out; the pass runs again on a fresh connection, and once the lock
// is released it drops the user and keeps its data.
func TestRevocationBackendKilledBetweenTransactions(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, map[string]interface{}{"lock_timeout": "50s"})
	user, password, tbl, c := userOwningTable(t, db, "killed_")
	if _, err := c.Exec(testCtx(t), fmt.Sprintf("INSERT INTO public.%s VALUES (1)", tbl)); err != nil {
		t.Fatal(err)
	}
	holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	if _, err := holder.Exec(testCtx(t), fmt.Sprintf("BEGIN; SELECT * FROM public.%s", tbl)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
		done <- err
	}()
	first := lockWaiter(t, a, tbl, 0)
	assertNoLogin(t, user, password)
	execSQL(t, a, fmt.Sprintf("SELECT pg_terminate_backend(%d)", first))
	lockWaiter(t, a, tbl, first) // the pass again, on a fresh connection
	assertNoLogin(t, user, password)
	if _, err := holder.Exec(testCtx(t), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("revocation after its backend was ended: %v", err)
	}
	if roleExists(t, a, user) {
		t.Fatalf("role %q survived the revocation", user)
	}
	var owner string
	var n int
	if err := a.QueryRow(testCtx(t), fmt.Sprintf("SELECT (SELECT tableowner FROM pg_tables WHERE tablename = $1), (SELECT count(*) FROM public.%s)", tbl), tbl).Scan(&owner, &n); err != nil || n != 1 || owner != holdingRole {
		t.Fatalf("table after revocation: owner %q rows %d (%v)", owner, n, err)
	}
}
