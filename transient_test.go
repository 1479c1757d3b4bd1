package postgres

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// TestTransientConditionAgreesWithGo raises each kind of failure in the
// server, under an exception handler that re-raises what the revocation's
// handler re-raises (transientCondition), and checks that the server and
// isTransient agree: re-raised exactly when Go retries it, or when it is a
// lock timeout, which the caller reports.
func TestTransientConditionAgreesWithGo(t *testing.T) {
	t.Parallel()
	ctx, pool := testCtx(t), admin(t)
	// retry: what isTransient must say, written out rather than read from
	// transientFailures, so that an entry lost from the list fails here.
	cases := []struct {
		code, message, constraint string
		retry                     bool
	}{
		{"40P01", "deadlock detected", "", true},
		{"40001", "could not serialize access", "", true},
		{"55P03", "could not obtain lock on relation", "", true},
		{"55P03", "canceling statement due to lock timeout", "", false},
		{"XX000", "tuple concurrently updated", "", true},
		{"XX000", "cache lookup failed", "", false},
		{"23505", "duplicate key value", "pg_authid_rolname_index", true},
		{"23505", "duplicate key value", "users_pkey", false},
		{"42501", "permission denied", "", false},
		{"2BP01", "role cannot be dropped", "", false},
	}
	for _, c := range cases {
		raise := "RAISE EXCEPTION USING ERRCODE = " + render.QuoteLiteral(c.code) +
			", MESSAGE = " + render.QuoteLiteral(c.message) + ", CONSTRAINT = " + render.QuoteLiteral(c.constraint) + ";"
		_, raised := pool.Exec(ctx, "DO $$ BEGIN "+raise+" END $$")
		var pgErr *pgconn.PgError
		if !errors.As(raised, &pgErr) || pgErr.Code != c.code || pgErr.ConstraintName != c.constraint {
			t.Fatalf("%v: raising it gave %v", c, raised)
		}
		if isTransient(raised) != c.retry {
			t.Errorf("%v: isTransient = %v", c, !c.retry)
		}
		want := c.retry || isLockTimeout(raised)
		_, got := pool.Exec(ctx, "SET search_path = pg_catalog, pg_temp; DO $$ DECLARE cname text; BEGIN BEGIN "+raise+
			" EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME; IF "+transientCondition()+
			" THEN RAISE; END IF; END; END $$; RESET search_path")
		if (got != nil) != want {
			t.Errorf("%v: re-raised by the server: %v (%v); Go retries or reports it: %v", c, got != nil, got, want)
		}
	}
}
