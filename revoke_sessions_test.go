package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// reconnectors are clients that log in as a user in a loop: each opens a
// session, runs query on it until the session is killed, and reconnects, as
// a connection pool does.
type reconnectors struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	attempts atomic.Int64
}

func startReconnectors(t *testing.T, n int, user, password, query string) *reconnectors {
	t.Helper()
	r := &reconnectors{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case <-r.stop:
					return
				default:
				}
				r.attempts.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := pg.Connect(ctx, user, password, "")
				cancel()
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				for {
					if _, err := c.Exec(context.Background(), query); err != nil {
						break
					}
					select {
					case <-r.stop:
						_ = c.Close(context.Background())
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
				_ = c.Close(context.Background())
			}
		}()
	}
	t.Cleanup(r.close)
	return r
}

func (r *reconnectors) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// waitAttempts waits until the clients made n more login attempts.
func (r *reconnectors) waitAttempts(t *testing.T, n int64) {
	t.Helper()
	from := r.attempts.Load()
	waitFor(t, func() bool { return r.attempts.Load() >= from+n })
}

func roleOID(t *testing.T, a *pgxpool.Pool, user string) uint32 {
	t.Helper()
	var oid uint32
	if err := a.QueryRow(testCtx(t), `SELECT oid FROM pg_roles WHERE rolname = $1`, user).Scan(&oid); err != nil {
		t.Fatalf("oid of %q: %v", user, err)
	}
	return oid
}

// sessionsOf counts the sessions of a role by its oid: the sessions of a
// dropped role have no name.
func sessionsOfRole(t *testing.T, a *pgxpool.Pool, oid uint32) int {
	t.Helper()
	var n int
	if err := a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_stat_activity WHERE usesysid = $1`, oid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// assertNoSessionSurvives checks, while the clients keep reconnecting, that
// no session of the revoked role is left and none can start.
func assertNoSessionSurvives(t *testing.T, a *pgxpool.Pool, r *reconnectors, oid uint32, user, password string) {
	t.Helper()
	if n := sessionsOfRole(t, a, oid); n != 0 {
		t.Fatalf("%d session(s) of %q alive after DeleteUser returned success", n, user)
	}
	r.waitAttempts(t, 20)
	if n := sessionsOfRole(t, a, oid); n != 0 {
		t.Fatalf("%d session(s) of %q started after DeleteUser returned success", n, user)
	}
	assertNoLogin(t, user, password)
}

func TestRevocationEndsReconnectingClients(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, adm := range revokeAdmins() {
		adm := adm
		t.Run(adm.name, func(t *testing.T) {
			t.Parallel()
			db, _ := adm.newDBAndSchema(t, a, "recon_")
			for i := 0; i < 3; i++ {
				req := newUserReq(createStmt)
				user := dbtesting.AssertNewUser(t, db, req).Username
				oid := roleOID(t, a, user)
				r := startReconnectors(t, 4, user, req.Password, "SELECT 1")
				waitFor(t, func() bool { return sessionsOfRole(t, a, oid) >= 2 })
				dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
				assertNoSessionSurvives(t, a, r, oid, user, req.Password)
				r.close()
				if roleExists(t, a, user) {
					t.Fatalf("role %q still exists", user)
				}
			}
		})
	}
}

// A role PostgreSQL will not let a CREATEROLE admin drop is disabled
// instead: its sessions must end all the same.
func TestRevocationEndsSessionsOfDisabledRole(t *testing.T) {
	needPG(t)
	a := admin(t)
	adm := revokeAdmins()[1]
	db, schema := adm.newDBAndSchema(t, a, "disabled_")
	third := newThirdRole(t, a, schema)
	for i := 0; i < 3; i++ {
		req := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)))
		user := dbtesting.AssertNewUser(t, db, req).Username
		third.grantTo(t, a, user)
		oid := roleOID(t, a, user)
		r := startReconnectors(t, 4, user, req.Password, `SELECT count(*) FROM `+third.table())
		waitFor(t, func() bool { return sessionsOfRole(t, a, oid) >= 2 })
		dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
		if !roleExists(t, a, user) {
			t.Fatal("expected the role to be kept (disabled): the test no longer covers that path")
		}
		assertNoSessionSurvives(t, a, r, oid, user, req.Password)
		r.close()
		assertRevoked(t, a, user, req.Password)
	}
}

// A client can hold its login between the NOLOGIN check and the moment its
// session shows in pg_stat_activity (post_auth_delay is a startup option any
// user may set). It must not come alive after a successful revocation.
func TestRevocationEndsLoginsStillStarting(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, delay := range []string{"1", "8"} {
		delay := delay
		t.Run("post_auth_delay="+delay, func(t *testing.T) {
			t.Parallel()
			db := newDB(t, nil)
			req := newUserReq(createStmt)
			user := dbtesting.AssertNewUser(t, db, req).Username
			oid := roleOID(t, a, user)
			cfg, err := pgx.ParseConfig(pg.URL(user, req.Password, ""))
			if err != nil {
				t.Fatal(err)
			}
			cfg.RuntimeParams["post_auth_delay"] = delay
			cfg.RuntimeParams["application_name"] = "starting-" + user
			type result struct {
				c   *pgx.Conn
				err error
			}
			done := make(chan result, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c, err := pgx.ConnectConfig(ctx, cfg)
				done <- result{c, err}
			}()
			// The backend holds its startup lock on the database once it
			// has passed authentication and the NOLOGIN check.
			waitFor(t, func() bool {
				var n int
				_ = a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_locks l
					WHERE l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.granted
					  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity s WHERE s.pid = l.pid AND s.usesysid IS NOT NULL)`).Scan(&n)
				return n > 0
			})
			dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
			res := <-done
			if res.err == nil {
				defer res.c.Close(context.Background())
				var one int
				if err := res.c.QueryRow(testCtx(t), "SELECT 1").Scan(&one); err == nil {
					t.Fatal("a login that began before the revocation runs queries after it succeeded")
				}
			}
			if n := sessionsOfRole(t, a, oid); n != 0 {
				t.Fatalf("%d session(s) of the revoked role alive", n)
			}
		})
	}
}

func TestRevocationOfAdminMember(t *testing.T) {
	// The user is a member of the CREATEROLE admin, so the admin cannot
	// become a member of the user (0LP01): the user must still lose its login.
	needPG(t)
	a := admin(t)
	adm := revokeAdmins()[1]
	db, _ := adm.newDBAndSchema(t, a, "member_")
	req := newUserReq(createStmt)
	user := dbtesting.AssertNewUser(t, db, req).Username
	// The superuser grants it: from PostgreSQL 16 the admin itself may not
	// hand out membership in itself.
	if _, err := a.Exec(testCtx(t), fmt.Sprintf(`GRANT %s TO %s`, render.QuoteIdent(adm.user), render.QuoteIdent(user))); err != nil {
		if sqlState(err) == "0LP01" {
			// From 16 the admin holds ADMIN OPTION on the roles it
			// creates, which is a membership: PostgreSQL refuses the loop.
			t.Skip("PostgreSQL refuses to make the user a member of the admin that created it")
		}
		t.Fatal(err)
	}
	c := connectAs(t, user, req.Password, "")
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
	t.Logf("DeleteUser: %v", err)
	assertNoLogin(t, user, req.Password)
	if err == nil {
		var one int
		if qerr := c.QueryRow(testCtx(t), "SELECT 1").Scan(&one); qerr == nil {
			t.Fatal("DeleteUser succeeded but the user's session lives on")
		}
		assertRevoked(t, a, user, req.Password)
	}
}

func TestRevocationRefusesReassignTarget(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := "keeper-self-" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'keeper-pw'`, render.QuoteIdent(keeper)))
	execSQL(t, a, fmt.Sprintf(`GRANT CREATE ON SCHEMA public TO %s`, render.QuoteIdent(keeper)))
	tbl := "keeper_data_" + randSuffix()
	c := connectAs(t, keeper, "keeper-pw", "")
	if _, err := c.Exec(testCtx(t), fmt.Sprintf(`CREATE TABLE public.%s (id int); INSERT INTO public.%[1]s VALUES (5)`, tbl)); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	db := newDB(t, map[string]interface{}{"reassign_owned_to": keeper})
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: keeper})
	if err == nil || !strings.Contains(err.Error(), "reassign_owned_to") {
		t.Fatalf("error = %v, want a refusal naming reassign_owned_to", err)
	}
	var owner string
	var v int
	if err := a.QueryRow(testCtx(t), fmt.Sprintf(`SELECT (SELECT tableowner FROM pg_tables WHERE tablename = $1), id FROM public.%s`, tbl), tbl).Scan(&owner, &v); err != nil || owner != keeper || v != 5 {
		t.Fatalf("the reassign_owned_to role's table: owner %q, value %d, err %v", owner, v, err)
	}
	assertLogin(t, keeper, "keeper-pw")
}

func TestRevocationOfAnyName(t *testing.T) {
	needPG(t)
	a := admin(t)
	db := newDB(t, nil)
	for _, name := range []string{
		"v-a$pgvault$b-" + randSuffix(),
		"v-" + randSuffix() + "-ends$pgvault",
		"v-" + randSuffix() + `-it's\$pgvault_1$$`,
	} {
		name := name
		t.Run(name, func(t *testing.T) {
			execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'any-name-pw'`, render.QuoteIdent(name)))
			revokeDropped(t, db, a, name)
		})
	}
}
