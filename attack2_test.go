package postgres

// Attacks from a second adversarial review: what a revoked dynamic user
// leaves behind, handed over to the (superuser) admin. Each test is one
// attack; every one must hold. ("acct" is an ordinary login role the
// attacker also controls.)

import (
	"fmt"
	"testing"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5"
)

// 1. A range type's subtype_diff function is an ordinary (IMMUTABLE)
// function any role may write, and ANALYZE of a column of that range type
// calls it (range_typanalyze computes the length histogram with it) as the
// table's owner, autovacuum's ANALYZE included. It is neither an index
// expression nor a statistics expression, so the hand-over keeps it.
func TestAttack2RangeSubtypeDiffAtAnalyze(t *testing.T) {
	l := newAttackLab(t, nil)
	plantEscalation(t, l.c, l.acct)
	mustExec(t, l.c, `
CREATE FUNCTION public.rdiff(a float8, b float8) RETURNS float8 IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.esc();
	RETURN a - b;
END $f$;
CREATE TYPE public.frange AS RANGE (SUBTYPE = float8, SUBTYPE_DIFF = public.rdiff);
CREATE TABLE public.tr (r public.frange);
INSERT INTO public.tr SELECT public.frange(g, g + 1) FROM pg_catalog.generate_series(1, 100) g;`)
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	super := connectAs(t, pg.SuperUser, pg.SuperPassword, l.dbname)
	if _, err := super.Exec(testCtx(t), "ANALYZE"); err != nil {
		t.Fatalf("ANALYZE: %v", err)
	}
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the hand-over, a database-wide ANALYZE (what autovacuum does) called the revoked user's range subtype_diff as the superuser admin: %s is a superuser", l.acct)
	}
}

// 2. Foreign-key actions run as the owner of the referencing table (the
// RI trigger switches to it), and so do the triggers the cascaded DELETE
// fires on that table. The hand-over keeps triggers. Any role the user let
// delete from the referenced table (acct) fires the cascade after the
// revocation, now as the superuser admin.
func TestAttack2ForeignKeyCascadeFiresTriggerAsNewOwner(t *testing.T) {
	l := newAttackLab(t, nil)
	plantEscalation(t, l.c, l.acct)
	mustExec(t, l.c, fmt.Sprintf(`
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int REFERENCES public.parent ON DELETE CASCADE);
CREATE FUNCTION public.ctg() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.esc();
	RETURN OLD;
END $f$;
CREATE TRIGGER ctg BEFORE DELETE ON public.child FOR EACH ROW EXECUTE FUNCTION public.ctg();
INSERT INTO public.parent VALUES (1);
INSERT INTO public.child VALUES (1);
GRANT SELECT, DELETE ON public.parent TO %s;`, quoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	ac := connectAs(t, l.acct, l.acctPassword, l.dbname)
	_, err := ac.Exec(testCtx(t), "DELETE FROM public.parent")
	t.Logf("DELETE by %s: %v", l.acct, err)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the hand-over, %s deleted a row of the revoked user's table; the ON DELETE CASCADE ran as the child table's new owner (the superuser admin) and fired the user's trigger: %s is a superuser", l.acct, l.acct)
	}
}

// plantFailingHandOver gives the user a partitioned table whose partition's
// expression index (older than the parent's, which adopted it) comes first
// in the hand-over's index loop: DROP INDEX of an attached partition index
// fails (2BP01), the hand-over's subtransaction rolls back, and the role is
// disabled instead of dropped, with everything it owned as it was.
func plantFailingHandOver(t *testing.T, c *pgx.Conn) {
	t.Helper()
	mustExec(t, c, `
CREATE TABLE public.pt_1 (x int);
CREATE INDEX pt_1_ix ON public.pt_1 (public.ix(x));
CREATE TABLE public.pt (x int) PARTITION BY RANGE (x);
ALTER TABLE public.pt ATTACH PARTITION public.pt_1 FOR VALUES FROM (0) TO (100);
CREATE INDEX pt_ix ON public.pt (public.ix(x));`)
}

// 3. A revocation whose hand-over fails disables the role and reports
// success, and the hand-over's disarming is rolled back with it: the
// user's SECURITY DEFINER routines still ran as the user, so any role
// (PUBLIC may execute functions) kept the user's privileges. (Before 16 the
// user may also grant itself to acct.) The failure came from an attached
// partition's index, which the hand-over now leaves to its parent's DROP;
// and the definer routines and members now go with NOLOGIN, before
// anything can fail (test 5 holds the hand-over back to check that).
func TestAttack2FailedHandOverKeepsDefinerAccess(t *testing.T) {
	l := newAttackLab(t, nil)
	// What the role's creation statements gave the user: read access to
	// the application's data.
	execSQL(t, l.a, `CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data')`)
	execSQL(t, l.a, "GRANT SELECT ON public.secret TO "+quoteIdent(l.user))
	plantEscalation(t, l.c, l.acct)
	plantFailingHandOver(t, l.c)
	mustExec(t, l.c, `
CREATE FUNCTION public.run(q text) RETURNS SETOF text SECURITY DEFINER LANGUAGE plpgsql AS $f$
BEGIN
	RETURN QUERY EXECUTE q;
END $f$;`)
	member := false
	if pg.VersionNum < 160000 {
		_, err := l.c.Exec(testCtx(t), "GRANT "+quoteIdent(l.user)+" TO "+quoteIdent(l.acct))
		member = err == nil
		t.Logf("GRANT %s TO %s by the user itself: %v", l.user, l.acct, err)
	}
	_ = l.c.Close(testCtx(t))
	if _, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user}); err != nil {
		t.Logf("DeleteUser: %v (fails closed)", err)
	}
	if !roleExists(t, l.a, l.user) {
		return
	}
	ac := connectAs(t, l.acct, l.acctPassword, l.dbname)
	var got string
	err := ac.QueryRow(testCtx(t), `SELECT public.run('SELECT s FROM public.secret')`).Scan(&got)
	t.Logf("through the user's SECURITY DEFINER function: %q, %v", got, err)
	if err == nil {
		t.Errorf("the revocation of %s reported success but left the role (disabled), and its SECURITY DEFINER function still runs as it: %s reads %q with the revoked user's privileges", l.user, l.acct, got)
	}
	if member {
		_, err = ac.Exec(testCtx(t), "SET ROLE "+quoteIdent(l.user))
		if err == nil {
			err = ac.QueryRow(testCtx(t), `SELECT s FROM public.secret`).Scan(&got)
		}
		if err == nil {
			t.Errorf("%s, a member of the revoked user (granted by the user itself), still acts as it: reads %q", l.acct, got)
		}
	}
}

// 4. Controls that held: code the user attaches to a table's columns
// (CHECK constraints, DEFAULTs, stored generated columns, a domain with a
// CHECK, a policy) is evaluated for whoever writes or reads, not for the
// owner, so neither the hand-over nor a superuser's VACUUM FULL, ANALYZE,
// REINDEX or CLUSTER runs it; an operator class and a base type (which
// could bring a typanalyze or a plain index's support function) need a
// superuser.
func TestAttack2ColumnCodeAtMaintenance(t *testing.T) {
	l := newAttackLab(t, nil)
	plantEscalation(t, l.c, l.acct)
	mustExec(t, l.c, `
CREATE DOMAIN public.d AS int CHECK (public.ix(VALUE) IS NOT NULL);
CREATE TABLE public.tc (
	x int CHECK (public.ix(x) > 0) DEFAULT public.ix(1),
	g int GENERATED ALWAYS AS (public.ix(x)) STORED,
	d public.d);
INSERT INTO public.tc (x, d) SELECT g, g FROM pg_catalog.generate_series(1, 50) g;
CREATE INDEX tc_d ON public.tc (d);
CREATE INDEX tc_g ON public.tc (g);
ALTER TABLE public.tc ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.tc USING (public.ix(x) > 0);`)
	for _, sql := range []string{
		`CREATE OPERATOR CLASS public.oc FOR TYPE int USING btree AS OPERATOR 1 <, FUNCTION 1 btint4cmp(int, int)`,
		`CREATE TYPE public.bt (INPUT = int4in, OUTPUT = int4out)`,
	} {
		if _, err := l.c.Exec(testCtx(t), sql); err == nil {
			t.Errorf("a dynamic user may run %s", sql)
		}
	}
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	super := connectAs(t, pg.SuperUser, pg.SuperPassword, l.dbname)
	for _, sql := range []string{"VACUUM FULL public.tc", "ANALYZE public.tc", "REINDEX TABLE public.tc",
		"CLUSTER public.tc USING tc_d", "SELECT count(*) FROM public.tc"} {
		if _, err := super.Exec(testCtx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if isSuper(t, l.a, l.acct) {
		t.Errorf("maintenance by the superuser ran code the revoked user attached to a table's columns: %s is a superuser", l.acct)
	}
}

// 5. A role the user let read one of its tables holds a lock on it: the
// hand-over waits lock_timeout and the revocation fails (Vault retries),
// while the user's SECURITY DEFINER functions keep running as the user,
// for as long as the lock is held.
func TestAttack2LockedHandOverKeepsDefinerAccess(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	execSQL(t, l.a, `CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data')`)
	execSQL(t, l.a, "GRANT SELECT ON public.secret TO "+quoteIdent(l.user))
	mustExec(t, l.c, fmt.Sprintf(`
CREATE TABLE public.held (x int);
GRANT SELECT ON public.held TO %s;
CREATE FUNCTION public.run(q text) RETURNS SETOF text SECURITY DEFINER LANGUAGE plpgsql AS $f$
BEGIN
	RETURN QUERY EXECUTE q;
END $f$;`, quoteIdent(l.acct)))
	member := false
	if pg.VersionNum < 160000 {
		// Before 16 a role may grant membership in itself.
		_, err := l.c.Exec(testCtx(t), "GRANT "+quoteIdent(l.user)+" TO "+quoteIdent(l.acct))
		member = err == nil
	}
	_ = l.c.Close(testCtx(t))
	locker := connectAs(t, l.acct, l.acctPassword, l.dbname)
	mustExec(t, locker, "BEGIN; LOCK TABLE public.held IN ACCESS SHARE MODE")
	for i := 0; i < 3; i++ {
		_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
		t.Logf("DeleteUser #%d: %v", i+1, err)
	}
	if !roleExists(t, l.a, l.user) {
		return
	}
	ac := connectAs(t, l.acct, l.acctPassword, l.dbname)
	var got string
	err := ac.QueryRow(testCtx(t), `SELECT public.run('SELECT s FROM public.secret')`).Scan(&got)
	t.Logf("through the user's SECURITY DEFINER function while revocation is blocked: %q, %v", got, err)
	if err == nil {
		t.Errorf("while %s holds a lock on the user's table, revocation keeps failing and %s still reads %q as the revoked user", l.acct, l.acct, got)
	}
	if member {
		if _, err := ac.Exec(testCtx(t), "SET ROLE "+quoteIdent(l.user)); err == nil {
			t.Errorf("%s, made a member of the user by the user itself, still acts as it while the hand-over is blocked", l.acct)
		}
	}
}

// 6. Variant of 2 without a trigger: ON UPDATE CASCADE updates the
// referencing table as its owner, and its CHECK constraint (the same goes
// for a DEFAULT under SET DEFAULT, or a generated column) is evaluated
// then, as the superuser admin. Disabling triggers would not be enough.
func TestAttack2ForeignKeyCascadeChecksAsNewOwner(t *testing.T) {
	l := newAttackLab(t, nil)
	plantEscalation(t, l.c, l.acct)
	mustExec(t, l.c, fmt.Sprintf(`
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int REFERENCES public.parent ON UPDATE CASCADE CHECK (public.ix(id) > 0));
INSERT INTO public.parent VALUES (1);
INSERT INTO public.child VALUES (1);
GRANT SELECT, UPDATE ON public.parent TO %s;`, quoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	ac := connectAs(t, l.acct, l.acctPassword, l.dbname)
	_, err := ac.Exec(testCtx(t), "UPDATE public.parent SET id = 2")
	t.Logf("UPDATE by %s: %v", l.acct, err)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the hand-over, %s updated a key of the revoked user's table; ON UPDATE CASCADE checked the child's CHECK constraint as its new owner (the superuser admin): %s is a superuser", l.acct, l.acct)
	}
}
