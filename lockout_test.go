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
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// stallBound is how long a request may take where the old code waited for
// a lock without end.
const stallBound = 20 * time.Second

// The keys the old code locked: per role (pg_authid's oid as namespace) in
// both revocation blocks, and the reaper's, taken once per pass.
const (
	roleKeySQL   = `SELECT pg_advisory_lock(1260, hashtext(%s))`
	reaperKeySQL = `SELECT pg_advisory_lock(hashtextextended('vault-plugin-database-postgres/reaper', 0))`
)

// boundedCtx is the test's context, cut to d.
func boundedCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(testCtx(t), d)
	t.Cleanup(cancel)
	return ctx
}

// execOn runs each query on c, which stays open.
func execOn(t *testing.T, c *pgx.Conn, queries ...string) {
	t.Helper()
	for _, q := range queries {
		if _, err := c.Exec(testCtx(t), q); err != nil {
			t.Fatalf("as %q: %s: %v", c.Config().User, q, err)
		}
	}
}

// loginUser creates a plain user and returns its name and password.
func loginUser(t *testing.T, db *Postgres, stmts ...string) (user, password string) {
	t.Helper()
	req := newUserReq(append([]string{createStmt}, stmts...)...)
	return dbtesting.AssertNewUser(t, db, req).Username, req.Password
}

// deleteGone revokes user within stallBound and checks the role is gone.
func deleteGone(t *testing.T, db *Postgres, a *pgxpool.Pool, user string) {
	t.Helper()
	if _, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser(%q): %v", user, err)
	}
	if roleExists(t, a, user) {
		t.Fatalf("role %q survived DeleteUser", user)
	}
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
			execOn(t, connectAs(t, as, asPW, ""), fmt.Sprintf(roleKeySQL, quoteLiteral(user)))
			deleteGone(t, db, a, user)
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
				execOn(t, c, reaperKeySQL)
			} else {
				execOn(t, c, fmt.Sprintf(roleKeySQL, quoteLiteral(orphan)))
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
