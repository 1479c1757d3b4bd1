package postgres

// What a revoked dynamic user leaves behind, once handed over. A user that
// may create objects plants code that PostgreSQL runs as an object's owner
// (ANALYZE, REINDEX, a foreign key's cascade, a rule, a view), so after the
// hand-over it must run as the holding role, never as the admin; and what
// lets others act with the user's rights must go first. ("acct" is an
// ordinary login role the attacker also controls; esc() records who runs it
// and makes acct a superuser when a superuser does: plantEscalation.)

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// TestHandOverDisablesRulesOnTables: a rule's action runs with its
// relation's owner's rights, at every INSERT, by anyone allowed to write. A
// rule on the user's table is disabled before the table changes hands; a
// rule on its view serves no one, since others' privileges on the user's
// views are revoked.
func TestHandOverDisablesRulesOnTables(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.c, fmt.Sprintf(`
CREATE TABLE public.inbox (x int);
CREATE RULE r AS ON INSERT TO public.inbox DO ALSO
	UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = %[1]s;
GRANT INSERT ON public.inbox TO PUBLIC;
CREATE VIEW public.outbox AS SELECT 1 AS x;
CREATE RULE r AS ON UPDATE TO public.outbox DO INSTEAD
	UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = %[1]s;
GRANT UPDATE ON public.outbox TO PUBLIC;`, render.QuoteLiteral(l.acct)))
	_ = l.c.Close(testCtx(t))

	revokeDropped(t, l.db, l.a, l.user)
	ac := l.asAcct(t)
	_, err := ac.Exec(testCtx(t), "INSERT INTO public.inbox VALUES (1)")
	t.Logf("INSERT by %s: err=%v", l.acct, err)
	_, err = ac.Exec(testCtx(t), "UPDATE public.outbox SET x = 2")
	t.Logf("UPDATE of the view by %s: err=%v", l.acct, err)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after revocation, %s wrote through the revoked user's table and view, and their rules made it a superuser", l.acct)
	}
	var enabled string
	if err := l.a.QueryRow(testCtx(t), `SELECT ev_enabled::text FROM pg_rewrite WHERE ev_class = 'public.inbox'::regclass AND rulename = 'r'`).Scan(&enabled); err != nil || enabled != "D" {
		t.Errorf("the rule on the handed-over table: ev_enabled = %q (%v), want D (disabled)", enabled, err)
	}
}

// TestHandOverFiresNoUserCode: a trigger (and an event trigger attempt) on
// objects the user owns, a policy and a large object: REASSIGN OWNED and
// DROP OWNED fire none of the user's code.
func TestHandOverFiresNoUserCode(t *testing.T) {
	l := newAttackLab(t, nil)
	l.plantEscalation(t)
	execSQL(t, l.c, `CREATE FUNCTION public.tf() RETURNS event_trigger LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.esc(); END $f$;`)
	if _, err := l.c.Exec(testCtx(t), `CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION public.tf()`); err == nil {
		t.Errorf("a dynamic user created an event trigger")
	}
	execSQL(t, l.c, `
CREATE TABLE public.tt (x int);
CREATE FUNCTION public.tg() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.esc(); RETURN NULL; END $f$;
CREATE TRIGGER tg AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.tt FOR EACH STATEMENT EXECUTE FUNCTION public.tg();
CREATE POLICY p ON public.tt USING (pg_catalog.current_user() IS NOT NULL);
SELECT lo_create(0);`)
	_ = l.c.Close(testCtx(t))
	l.clearRanAs(t)
	revokeDropped(t, l.db, l.a, l.user)
	if who := l.ranAs(t); len(who) != 0 || isSuper(t, l.a, l.acct) {
		t.Errorf("the hand-over ran the revoked user's code (as %v)", who)
	}
}

// TestHandOverDropsDefaultPrivileges: default privileges the user set would
// grant on whatever the receiving role creates later; they go with the
// user.
func TestHandOverDropsDefaultPrivileges(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.c, `CREATE TABLE public.td (x int); ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;`)
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	var n int
	if err := l.a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_default_acl").Scan(&n); err != nil || n != 0 {
		t.Errorf("default privileges of the revoked user survived: %d (%v)", n, err)
	}
}

// TestHandOverIndexExpressionsRunAsHoldingRole: index expressions and
// predicates, and expression statistics, run as their table's owner
// whenever the table is analyzed (autovacuum does it by itself once enough
// rows change) or reindexed. They are kept, and run as the holding role.
func TestHandOverIndexExpressionsRunAsHoldingRole(t *testing.T) {
	l := newAttackLab(t, nil)
	l.plantEscalation(t)
	execSQL(t, l.c, `
CREATE TABLE public.tix (x int, y int);
INSERT INTO public.tix SELECT g, g FROM pg_catalog.generate_series(1, 10) g;
CREATE INDEX tix_expr ON public.tix (public.ix(x));
CREATE INDEX tix_pred ON public.tix (y) WHERE public.ix(y) > 0;
CREATE INDEX tix_plain ON public.tix (x, pg_catalog.abs(y));
CREATE STATISTICS public.tix_stat ON (public.ix(x)), y FROM public.tix;`)
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	super := l.asSuper(t)
	for _, sql := range []string{"ANALYZE public.tix", "REINDEX TABLE public.tix"} {
		l.clearRanAs(t)
		if _, err := super.Exec(testCtx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		l.assertRanAsHolding(t, sql+" by the superuser")
	}
	var kept bool
	if err := super.QueryRow(testCtx(t), `SELECT (SELECT count(*) FROM public.tix) = 10
		AND (SELECT count(*) FROM pg_index WHERE indrelid = 'public.tix'::regclass) = 3
		AND to_regclass('public.tix_plain') IS NOT NULL
		AND EXISTS (SELECT FROM pg_statistic_ext WHERE stxname = 'tix_stat')`).Scan(&kept); err != nil || !kept {
		t.Errorf("the table's rows, its three indexes or its statistics were not kept (%v)", err)
	}
}

// TestHandOverRangeSubtypeDiffRunsAsHoldingRole: a range type's
// subtype_diff function is an ordinary function any role may write, and
// ANALYZE of a column of that range type calls it (range_typanalyze
// computes the length histogram with it) as the table's owner,
// autovacuum's ANALYZE included.
func TestHandOverRangeSubtypeDiffRunsAsHoldingRole(t *testing.T) {
	for _, tc := range []struct{ name, column string }{
		{"range column", "public.frange"},
		// ANALYZE finds the range through any depth of domains
		// (getBaseType), where a check that looks one domain deep does not.
		{"domain over a domain over the range", "public.frange2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newAttackLab(t, nil)
			l.plantEscalation(t)
			execSQL(t, l.c, `
CREATE FUNCTION public.rdiff(a float8, b float8) RETURNS float8 IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.esc();
	RETURN a - b;
END $f$;
CREATE TYPE public.frange AS RANGE (SUBTYPE = float8, SUBTYPE_DIFF = public.rdiff);
CREATE DOMAIN public.frange1 AS public.frange;
CREATE DOMAIN public.frange2 AS public.frange1;
CREATE TABLE public.tr (r `+tc.column+`);
INSERT INTO public.tr SELECT public.frange(g, g + 1) FROM pg_catalog.generate_series(1, 100) g;`)
			_ = l.c.Close(testCtx(t))
			revokeDropped(t, l.db, l.a, l.user)
			l.clearRanAs(t)
			if _, err := l.asSuper(t).Exec(testCtx(t), "ANALYZE"); err != nil {
				t.Fatalf("ANALYZE: %v", err)
			}
			l.assertRanAsHolding(t, "a database-wide ANALYZE by the superuser (what autovacuum does)")
		})
	}
}

// cascadeCase is code on a table that a foreign key's cascade reaches: the
// cascade runs as the referencing table's owner, whoever changed the
// referenced row. setup runs as the superuser, plant as the dynamic user,
// fire as acct after the revocation; {user} and {acct} stand for their
// quoted names.
type cascadeCase struct{ name, setup, plant, fire string }

var cascadeCases = []cascadeCase{
	{name: "trigger fired by ON DELETE CASCADE", plant: `
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
GRANT SELECT, DELETE ON public.parent TO {acct};`, fire: "DELETE FROM public.parent"},
	{name: "CHECK calling the user's function under ON UPDATE CASCADE", plant: `
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int REFERENCES public.parent ON UPDATE CASCADE CHECK (public.ix(id) > 0));
INSERT INTO public.parent VALUES (1);
INSERT INTO public.child VALUES (1);
GRANT SELECT, UPDATE ON public.parent TO {acct};`, fire: "UPDATE public.parent SET id = 2"},
	// A domain's default lives in pg_type, not in pg_attrdef with the
	// table's; SET DEFAULT evaluates it. The referenced table is not the
	// user's.
	{name: "domain DEFAULT under ON DELETE SET DEFAULT from a table the user does not own", setup: `
CREATE TABLE public.parent (id int PRIMARY KEY);
INSERT INTO public.parent VALUES (1);
GRANT REFERENCES ON public.parent TO {user};
GRANT SELECT, DELETE ON public.parent TO {acct};`, plant: `
CREATE FUNCTION public.dflt() RETURNS int VOLATILE LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.esc();
	RETURN NULL;
END $f$;
CREATE DOMAIN public.ref AS int DEFAULT public.dflt();
CREATE TABLE public.child (id public.ref REFERENCES public.parent ON DELETE SET DEFAULT);
INSERT INTO public.child VALUES (1);`, fire: "DELETE FROM public.parent"},
	// A CHECK that calls only pg_catalog, which runs SQL text: no
	// dependency names the user's function.
	{name: "CHECK running SQL text through query_to_xml under ON UPDATE CASCADE", plant: `
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int REFERENCES public.parent ON UPDATE CASCADE
	CHECK (pg_catalog.query_to_xml('SELECT public.esc()', true, true, '') IS NOT NULL));
INSERT INTO public.parent VALUES (1);
INSERT INTO public.child VALUES (1);
GRANT SELECT, UPDATE ON public.parent TO {acct};`, fire: "UPDATE public.parent SET id = 2"},
	// The cascade's UPDATE moves the row to another partition: routing it
	// evaluates the partition key.
	{name: "partition key expression under ON UPDATE CASCADE moving the row", plant: `
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int REFERENCES public.parent ON UPDATE CASCADE) PARTITION BY RANGE (public.ix(id));
CREATE TABLE public.child_low PARTITION OF public.child FOR VALUES FROM (0) TO (10);
CREATE TABLE public.child_high PARTITION OF public.child FOR VALUES FROM (10) TO (100);
INSERT INTO public.parent VALUES (1);
INSERT INTO public.child VALUES (1);
GRANT SELECT, UPDATE ON public.parent TO {acct};`, fire: "UPDATE public.parent SET id = 20"},
}

// TestHandOverCascadeCodeRunsAsHoldingRole: any role the user let change
// the referenced table (acct) fires the cascade after the revocation, and
// whatever code the referencing table runs then runs as the holding role.
func TestHandOverCascadeCodeRunsAsHoldingRole(t *testing.T) {
	for _, tc := range cascadeCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newAttackLab(t, nil)
			l.plantEscalation(t)
			names := strings.NewReplacer("{user}", render.QuoteIdent(l.user), "{acct}", render.QuoteIdent(l.acct))
			if tc.setup != "" {
				execSQL(t, l.a, names.Replace(tc.setup))
			}
			execSQL(t, l.c, names.Replace(tc.plant))
			_ = l.c.Close(testCtx(t))
			revokeDropped(t, l.db, l.a, l.user)
			l.clearRanAs(t)
			_, err := l.asAcct(t).Exec(testCtx(t), tc.fire)
			l.assertRanAsHolding(t, fmt.Sprintf("%s by %s after the revocation (error: %v)", tc.fire, l.acct, err))
		})
	}
}

// TestHandOverColumnCodeNotRunByMaintenance: code the user attaches to a
// table's columns (CHECK constraints, DEFAULTs, stored generated columns, a
// domain with a CHECK, a policy) is evaluated for whoever writes or reads,
// so a superuser's VACUUM FULL, ANALYZE, REINDEX or CLUSTER runs none of it;
// an operator class and a base type (which could bring a typanalyze or a
// plain index's support function) need a superuser.
func TestHandOverColumnCodeNotRunByMaintenance(t *testing.T) {
	l := newAttackLab(t, nil)
	l.plantEscalation(t)
	execSQL(t, l.c, `
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
	l.clearRanAs(t)
	super := l.asSuper(t)
	for _, sql := range []string{"VACUUM FULL public.tc", "ANALYZE public.tc", "REINDEX TABLE public.tc",
		"CLUSTER public.tc USING tc_d", "SELECT count(*) FROM public.tc"} {
		if _, err := super.Exec(testCtx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if who := l.ranAs(t); len(who) != 0 || isSuper(t, l.a, l.acct) {
		t.Errorf("maintenance by the superuser ran code the revoked user attached to a table's columns (as %v)", who)
	}
}

// TestHandOverRevokesMaintain (PostgreSQL 17+): MAINTAIN, granted by the
// user on its materialized view, would let another role refresh it after
// the hand-over, running the view's query as its owner. It is revoked.
func TestHandOverRevokesMaintain(t *testing.T) {
	needPG(t)
	if pg.VersionNum < 170000 {
		t.Skip("MAINTAIN is PostgreSQL 17+")
	}
	l := newAttackLab(t, nil)
	l.plantEscalation(t)
	execSQL(t, l.c, fmt.Sprintf(`
CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS x FROM (SELECT public.esc()) s;
GRANT MAINTAIN ON public.mv TO %s;`, render.QuoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	_, err := l.asAcct(t).Exec(testCtx(t), "REFRESH MATERIALIZED VIEW public.mv")
	if err == nil {
		t.Errorf("after the hand-over, %s still refreshes the revoked user's materialized view", l.acct)
	}
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the hand-over, %s refreshed the revoked user's materialized view and its query made it a superuser", l.acct)
	}
}

// TestHandOverDisarmsDefinerRoutinesAndViews: a SECURITY DEFINER function
// (EXECUTE is granted to PUBLIC by default) runs with its owner's rights,
// and a view reads with its owner's: once handed over, neither may give
// another account the new owner's rights. The function becomes SECURITY
// INVOKER, and others' privileges on the view are revoked (on every
// version: security_invoker views are 15+ only).
func TestHandOverDisarmsDefinerRoutinesAndViews(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.c, fmt.Sprintf(`
CREATE FUNCTION public.later() RETURNS void SECURITY DEFINER LANGUAGE plpgsql AS $f$
BEGIN EXECUTE 'ALTER ROLE %s SUPERUSER'; END $f$;
CREATE VIEW public.peek AS SELECT rolname, rolpassword FROM pg_catalog.pg_authid;
GRANT SELECT ON public.peek TO PUBLIC;`, render.QuoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)

	ac := l.asAcct(t)
	var secret string
	if err := ac.QueryRow(testCtx(t), "SELECT coalesce(rolpassword, '') FROM public.peek WHERE rolname = $1", pg.SuperUser).Scan(&secret); err == nil {
		t.Errorf("after the revocation, %s reads the superuser's password verifier through the revoked user's view (%.14s…)", l.acct, secret)
	}
	_, err := ac.Exec(testCtx(t), "SELECT public.later()")
	t.Logf("SELECT public.later() by %s: %v", l.acct, err)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the revocation, %s became a superuser through the revoked user's SECURITY DEFINER function", l.acct)
	}
	var definer bool
	if err := l.a.QueryRow(testCtx(t), "SELECT prosecdef FROM pg_proc WHERE oid = 'public.later()'::regprocedure").Scan(&definer); err != nil || definer {
		t.Errorf("the handed-over function: prosecdef = %v (%v), want SECURITY INVOKER", definer, err)
	}
}

// definerAccess gives the lab what the user's creation statements granted
// it (read access to public.secret, made by the superuser), and the user's
// way to lend it: public.run(q), a SECURITY DEFINER function that runs any
// query as the user. On older versions (14; 15 refuses it) a role may also
// grant membership in itself: member says whether acct became one.
func (l *attackLab) definerAccess(t *testing.T) (member bool) {
	t.Helper()
	execSQL(t, l.a, `CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data')`)
	execSQL(t, l.a, "GRANT SELECT ON public.secret TO "+render.QuoteIdent(l.user))
	execSQL(t, l.c, `
CREATE FUNCTION public.run(q text) RETURNS SETOF text SECURITY DEFINER LANGUAGE plpgsql AS $f$
BEGIN
	RETURN QUERY EXECUTE q;
END $f$;`)
	if pg.VersionNum < 160000 {
		_, err := l.c.Exec(testCtx(t), "GRANT "+render.QuoteIdent(l.user)+" TO "+render.QuoteIdent(l.acct))
		t.Logf("GRANT %s TO %s by the user itself: %v", l.user, l.acct, err)
		return err == nil
	}
	return false
}

// assertNoDefinerAccess checks that acct reads public.secret neither
// through the user's SECURITY DEFINER function nor as a member of the user.
func (l *attackLab) assertNoDefinerAccess(t *testing.T, member bool, while string) {
	t.Helper()
	ac := l.asAcct(t)
	var got string
	err := ac.QueryRow(testCtx(t), `SELECT public.run('SELECT s FROM public.secret')`).Scan(&got)
	t.Logf("through the user's SECURITY DEFINER function %s: %q, %v", while, got, err)
	if err == nil {
		t.Errorf("%s, %s reads %q through the revoked user's SECURITY DEFINER function", while, l.acct, got)
	}
	if !member {
		return
	}
	if _, err := ac.Exec(testCtx(t), "SET ROLE "+render.QuoteIdent(l.user)); err == nil {
		t.Errorf("%s, %s, made a member of the user by the user itself, still acts as it", while, l.acct)
	}
}

// TestHandOverFailureLeavesNoDefinerAccess: a revocation whose hand-over
// fails disables the role, and nothing the hand-over would have disarmed
// may still act as the user: its SECURITY DEFINER routines and the roles
// that are members of it go with NOLOGIN, before anything can fail. The
// hand-over fails here because reassign_owned_to became a superuser after
// configuration.
func TestHandOverFailureLeavesNoDefinerAccess(t *testing.T) {
	keeper := "keeper-" + randSuffix()
	a := admin(t)
	execSQL(t, a, "CREATE ROLE "+render.QuoteIdent(keeper)+" NOLOGIN")
	t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(keeper)) })
	l := newAttackLab(t, map[string]interface{}{"reassign_owned_to": keeper})
	member := l.definerAccess(t)
	_ = l.c.Close(testCtx(t))
	execSQL(t, a, "ALTER ROLE "+render.QuoteIdent(keeper)+" SUPERUSER")
	_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
	t.Logf("DeleteUser: %v", err)
	if !roleExists(t, l.a, l.user) {
		t.Fatal("the hand-over to a superuser did not fail: the test proves nothing")
	}
	assertNoLogin(t, l.user, l.password)
	l.assertNoDefinerAccess(t, member, "after a failed hand-over")
}

// holdBackHandOver has acct, whom the user let read public.held, hold a
// lock on it: each revocation commits NOLOGIN, then its hand-over waits
// lock_timeout and fails (Vault retries).
func (l *attackLab) holdBackHandOver(t *testing.T) {
	t.Helper()
	locker := l.asAcct(t)
	execSQL(t, locker, "BEGIN; LOCK TABLE public.held IN ACCESS SHARE MODE")
	for i := 0; i < 2; i++ {
		_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
		t.Logf("DeleteUser #%d: %v", i+1, err)
		if err == nil || !strings.Contains(err.Error(), "lock_timeout") {
			t.Fatalf("revocation behind a lock: error = %v, want one naming lock_timeout", err)
		}
	}
	if !roleExists(t, l.a, l.user) {
		t.Fatal("the hand-over was not held back: the test proves nothing")
	}
	assertNoLogin(t, l.user, l.password)
}

// TestHandOverHeldBackLeavesNoDefinerAccess: while a lock held by a role
// the user let read one of its tables holds the hand-over back, the user's
// SECURITY DEFINER functions and the members it made already serve no one.
func TestHandOverHeldBackLeavesNoDefinerAccess(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	member := l.definerAccess(t)
	execSQL(t, l.c, fmt.Sprintf(`CREATE TABLE public.held (x int); GRANT SELECT ON public.held TO %s;`, render.QuoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	l.holdBackHandOver(t)
	l.assertNoDefinerAccess(t, member, "while the hand-over is held back")
}

// inheritedCase is a table of the user's whose code the hand-over once
// tried to take apart, and failed on.
type inheritedCase struct{ name, plant string }

var inheritedCases = []inheritedCase{
	// An attached partition's expression index, older than the parent's
	// that adopted it: DROP INDEX on it fails (2BP01).
	{"expression index on an attached partition", `
CREATE TABLE public.pt_1 (x int);
CREATE INDEX pt_1_ix ON public.pt_1 (public.ix(x));
CREATE TABLE public.pt (x int) PARTITION BY RANGE (x);
ALTER TABLE public.pt ATTACH PARTITION public.pt_1 FOR VALUES FROM (0) TO (100);
CREATE INDEX pt_ix ON public.pt (public.ix(x));`},
	// A CHECK a partition or a child inherits goes with its parent's:
	// dropping each in turn, as the hand-over once did, failed on the
	// second (42704).
	{"CHECK on a partitioned table calling the user's function", `
CREATE TABLE public.pt (x int CHECK (public.ix(x) > 0)) PARTITION BY RANGE (x);
CREATE TABLE public.pt_1 PARTITION OF public.pt FOR VALUES FROM (0) TO (100);`},
	{"inherited CHECK calling the user's function", `
CREATE TABLE public.pt (x int CHECK (public.ix(x) > 0));
CREATE TABLE public.pt_1 () INHERITS (public.pt);
INSERT INTO public.pt_1 VALUES (4);`},
}

// TestHandOverSucceedsWithInheritedObjects: what a user's partitioned or
// inheriting tables carry does not stop the hand-over: the role is dropped
// and the rows are kept.
func TestHandOverSucceedsWithInheritedObjects(t *testing.T) {
	for _, tc := range inheritedCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newAttackLab(t, nil)
			l.plantEscalation(t)
			execSQL(t, l.c, tc.plant+`
INSERT INTO public.pt VALUES (1), (2), (3);`)
			var rows int
			if err := l.c.QueryRow(testCtx(t), "SELECT count(*) FROM public.pt").Scan(&rows); err != nil {
				t.Fatal(err)
			}
			_ = l.c.Close(testCtx(t))
			revokeDropped(t, l.db, l.a, l.user)
			var n int
			var owner string
			if err := l.a.QueryRow(testCtx(t), `SELECT (SELECT count(*) FROM public.pt), pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.pt'::regclass`).Scan(&n, &owner); err != nil || n != rows || owner != holdingRole {
				t.Errorf("public.pt after the revocation: %d rows, owner %q (%v); want %d rows, owned by %s", n, owner, err, rows, holdingRole)
			}
		})
	}
}

// tryInitialize runs Initialize with cfg (merged into baseConfig) and a
// connection check, and returns its error.
func tryInitialize(t *testing.T, cfg map[string]interface{}) error {
	t.Helper()
	db := newPostgres(hclog.NewNullLogger())
	defer db.Close()
	_, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: mergeConfig(cfg), VerifyConnection: true})
	return err
}

// TestHandOverRefusesPrivilegedTarget: reassign_owned_to naming a
// superuser, the admin itself or a role with the admin's rights would give
// code revoked users leave behind those rights; configuration refuses it,
// naming allow_privileged_reassign, which accepts it.
func TestHandOverRefusesPrivilegedTarget(t *testing.T) {
	needPG(t)
	a := admin(t)
	super, member := "super-"+randSuffix(), "member-"+randSuffix()
	cr, crPw := createroleAdmin(t, a)
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s SUPERUSER NOLOGIN", render.QuoteIdent(super)))
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s NOLOGIN; GRANT %s TO %[1]s", render.QuoteIdent(member), render.QuoteIdent(cr)))
	t.Cleanup(func() {
		execSQL(t, a, fmt.Sprintf("DROP ROLE IF EXISTS %s, %s", render.QuoteIdent(super), render.QuoteIdent(member)))
	})
	asCR := map[string]interface{}{"username": cr, "password": crPw}
	for _, tc := range []struct {
		name   string
		admin  map[string]interface{}
		target string
	}{
		{"a superuser", nil, super},
		{"the admin, a superuser", nil, pg.SuperUser},
		{"the admin, a CREATEROLE role", asCR, cr},
		{"a member of the admin", asCR, member},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := map[string]interface{}{"reassign_owned_to": tc.target}
			maps.Copy(cfg, tc.admin)
			err := tryInitialize(t, cfg)
			if err == nil || !strings.Contains(err.Error(), "allow_privileged_reassign") {
				t.Errorf("Initialize with reassign_owned_to = %s: error = %v, want a refusal naming allow_privileged_reassign", tc.target, err)
			}
			cfg["allow_privileged_reassign"] = true
			if err := tryInitialize(t, cfg); err != nil {
				t.Errorf("Initialize with reassign_owned_to = %s and allow_privileged_reassign=true: %v", tc.target, err)
			}
		})
	}
}

// TestHandOverRefusesTargetMadePrivilegedLater: a reassign_owned_to role
// that became a superuser after configuration gets nothing: the hand-over
// refuses it, saying so, and the user cannot log in.
func TestHandOverRefusesTargetMadePrivilegedLater(t *testing.T) {
	keeper := "keeper-" + randSuffix()
	a := admin(t)
	execSQL(t, a, "CREATE ROLE "+render.QuoteIdent(keeper)+" NOLOGIN")
	t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(keeper)) })
	l := newAttackLab(t, map[string]interface{}{"reassign_owned_to": keeper})
	execSQL(t, l.c, `CREATE TABLE public.kept (x int); INSERT INTO public.kept VALUES (1)`)
	_ = l.c.Close(testCtx(t))
	execSQL(t, a, "ALTER ROLE "+render.QuoteIdent(keeper)+" SUPERUSER")
	_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
	t.Logf("DeleteUser: %v", err)
	if said := fmt.Sprint(err) + l.logs.String(); !strings.Contains(said, "allow_privileged_reassign") {
		t.Errorf("neither DeleteUser's error (%v) nor a warning says the target is privileged, naming allow_privileged_reassign", err)
	}
	var owner string
	var n int
	if err := l.a.QueryRow(testCtx(t), `SELECT (SELECT tableowner FROM pg_tables WHERE tablename = 'kept'), count(*) FROM public.kept`).Scan(&owner, &n); err != nil || owner == keeper || n != 1 {
		t.Errorf("public.kept after the revocation: owner %q, %d rows (%v); want it kept and not handed to the superuser %s", owner, n, err, keeper)
	}
	assertNoLogin(t, l.user, l.password)
}

// TestHandOverKeepsTriggersEnabled: the holding role has no rights to lend
// a trigger, so the hand-over leaves the user's triggers running: a column
// a BEFORE UPDATE trigger maintains is still maintained once the table is
// the holding role's.
func TestHandOverKeepsTriggersEnabled(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.c, fmt.Sprintf(`
CREATE TABLE public.doc (id int PRIMARY KEY, body text,
	updated_at timestamptz NOT NULL DEFAULT '2000-01-01');
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
	NEW.updated_at := pg_catalog.clock_timestamp();
	RETURN NEW;
END $f$;
CREATE TRIGGER touch BEFORE UPDATE ON public.doc FOR EACH ROW EXECUTE FUNCTION public.touch();
INSERT INTO public.doc VALUES (1, 'draft');
GRANT SELECT, UPDATE ON public.doc TO %s;`, render.QuoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	execSQL(t, l.asAcct(t), "UPDATE public.doc SET body = 'final' WHERE id = 1")
	var touched bool
	var enabled string
	err := l.a.QueryRow(testCtx(t), `SELECT d.updated_at > '2000-01-01', g.tgenabled::text
		FROM public.doc d, pg_trigger g WHERE d.id = 1 AND g.tgrelid = 'public.doc'::regclass AND g.tgname = 'touch'`).Scan(&touched, &enabled)
	if err != nil || !touched || enabled != "O" {
		t.Errorf("after the revocation: updated_at maintained = %v, tgenabled = %q (%v); want the trigger enabled (O) and firing", touched, enabled, err)
	}
}

// TestHandOverHeldBackLeavesNoViewOrGroup: while a lock holds the
// hand-over back, the user's views already serve no one else (a view reads
// with its owner's privileges, which the user keeps until it is dropped),
// and the user belongs to no group.
func TestHandOverHeldBackLeavesNoViewOrGroup(t *testing.T) {
	a := admin(t)
	group := "grp-" + randSuffix()
	execSQL(t, a, "CREATE ROLE "+render.QuoteIdent(group))
	t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(group)) })
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
	// A second group, granted to the user by another of its admins: from 16
	// that grant is a row of its own, taken back as its grantor.
	other := plainRole(t, a, "grp2", "")
	execSQL(t, l.a, fmt.Sprintf(`CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data');
GRANT SELECT ON public.secret TO %[1]s; GRANT %[2]s TO %[1]s;
GRANT %[3]s TO %[4]s WITH ADMIN OPTION; SET ROLE %[4]s; GRANT %[3]s TO %[1]s; RESET ROLE`,
		render.QuoteIdent(l.user), render.QuoteIdent(group), render.QuoteIdent(other), render.QuoteIdent(l.acct)))
	execSQL(t, l.c, fmt.Sprintf(`
CREATE TABLE public.held (x int);
CREATE VIEW public.secret_view AS SELECT s FROM public.secret;
GRANT SELECT ON public.held, public.secret_view TO %s;`, render.QuoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	ac := l.asAcct(t)
	var got string
	if err := ac.QueryRow(testCtx(t), "SELECT s FROM public.secret_view").Scan(&got); err != nil {
		t.Fatalf("before the revocation, %s cannot read the user's view: the test proves nothing (%v)", l.acct, err)
	}
	oid := roleOID(t, l.a, l.user)
	l.holdBackHandOver(t)
	err := ac.QueryRow(testCtx(t), "SELECT s FROM public.secret_view").Scan(&got)
	if sqlState(err) != pgerrcode.InsufficientPrivilege {
		t.Errorf("while the hand-over is held back, %s reads the revoked user's view: %q, %v; want permission denied", l.acct, got, err)
	}
	var groups []string
	if err := l.a.QueryRow(testCtx(t), `SELECT coalesce(array_agg(roleid::regrole::text), '{}') FROM pg_auth_members WHERE member = $1`, oid).Scan(&groups); err != nil || len(groups) != 0 {
		t.Errorf("while the hand-over is held back, the user is still a member of %v (%v)", groups, err)
	}
}

// setAsideHoldingRole renames the holding role earlier tests made, if any,
// so that the plugin has to make it anew; cleanup drops the new one, with
// what it got in a's database, and restores the old. Only a test that runs
// alone (not parallel) may call it: the holding role is the cluster's.
func setAsideHoldingRole(t *testing.T, a *pgxpool.Pool) {
	t.Helper()
	aside := holdingRole + "_" + randSuffix()
	existed := roleExists(t, a, holdingRole)
	if existed {
		execSQL(t, a, fmt.Sprintf("ALTER ROLE %s RENAME TO %s", render.QuoteIdent(holdingRole), render.QuoteIdent(aside)))
	}
	t.Cleanup(func() {
		if roleExists(t, a, holdingRole) {
			execSQL(t, a, fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", render.QuoteIdent(holdingRole)))
		}
		if existed {
			execSQL(t, a, fmt.Sprintf("ALTER ROLE %s RENAME TO %s", render.QuoteIdent(aside), render.QuoteIdent(holdingRole)))
		}
	})
}

// assertHoldingRoleUnprivileged checks that the holding role exists and has
// no way to lend anyone anything: NOLOGIN, NOINHERIT, no attribute, no
// membership, and no member but admins.
func assertHoldingRoleUnprivileged(t *testing.T, a *pgxpool.Pool) {
	t.Helper()
	var attrs []string
	var groups, others int
	err := a.QueryRow(testCtx(t), `SELECT array_remove(ARRAY[
			CASE WHEN rolcanlogin THEN 'LOGIN' END, CASE WHEN rolinherit THEN 'INHERIT' END,
			CASE WHEN rolsuper THEN 'SUPERUSER' END, CASE WHEN rolcreaterole THEN 'CREATEROLE' END,
			CASE WHEN rolcreatedb THEN 'CREATEDB' END, CASE WHEN rolreplication THEN 'REPLICATION' END,
			CASE WHEN rolbypassrls THEN 'BYPASSRLS' END], NULL),
		(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),
		(SELECT count(*) FROM pg_auth_members m JOIN pg_roles o ON o.oid = m.member
			WHERE m.roleid = r.oid AND NOT (o.rolsuper OR o.rolcreaterole))
		FROM pg_roles r WHERE rolname = $1`, holdingRole).Scan(&attrs, &groups, &others)
	if err != nil {
		t.Fatalf("reading the holding role %s: %v", holdingRole, err)
	}
	if len(attrs) != 0 || groups != 0 || others != 0 {
		t.Errorf("the holding role %s has %v, %d memberships and %d members that are not admins; want none", holdingRole, attrs, groups, others)
	}
}

// tableOwner is the owner of public.<table> in the lab's database.
func (l *attackLab) tableOwner(t *testing.T, table string) string {
	t.Helper()
	var owner string
	if err := l.a.QueryRow(testCtx(t), "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = $1", table).Scan(&owner); err != nil {
		t.Fatalf("owner of public.%s: %v", table, err)
	}
	return owner
}

// TestHandOverCreatesHoldingRoleOnFirstNeed: the holding role is made by
// the first revocation that has something to hand over, unprivileged, and
// receives the user's objects. Not parallel: see setAsideHoldingRole.
func TestHandOverCreatesHoldingRoleOnFirstNeed(t *testing.T) {
	l := newAttackLab(t, nil)
	setAsideHoldingRole(t, l.a)
	nothing := dbtesting.AssertNewUser(t, l.db, newUserReq(createStmt)).Username
	revokeDropped(t, l.db, l.a, nothing)
	if roleExists(t, l.a, holdingRole) {
		t.Errorf("revoking a user that owns nothing made the holding role %s", holdingRole)
	}
	execSQL(t, l.c, "CREATE TABLE public.kept (x int)")
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	assertHoldingRoleUnprivileged(t, l.a)
	if owner := l.tableOwner(t, "kept"); owner != holdingRole {
		t.Errorf("the revoked user's table is owned by %q, want the holding role %s", owner, holdingRole)
	}
}

// TestHandOverRefusesTamperedHoldingRole: once the holding role can log in,
// belongs to a group or has a member that is no admin, whatever it holds
// would serve someone: the next revocation that hands it something is
// refused with an error that says what to fix (Vault retries it), and the
// user still cannot log in; once fixed, the revocation goes through. Not
// parallel: the holding role is the cluster's.
func TestHandOverRefusesTamperedHoldingRole(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.c, "CREATE TABLE public.first (x int)")
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	if !roleExists(t, l.a, holdingRole) {
		t.Fatalf("a revocation handed a table over and there is no holding role %s", holdingRole)
	}
	group := "grp-" + randSuffix()
	execSQL(t, l.a, "CREATE ROLE "+render.QuoteIdent(group))
	t.Cleanup(func() { execSQL(t, l.a, "DROP ROLE IF EXISTS "+render.QuoteIdent(group)) })
	h := render.QuoteIdent(holdingRole)
	for _, tc := range []struct{ name, tamper, fix string }{
		{"LOGIN", "ALTER ROLE " + h + " LOGIN", "ALTER ROLE " + h + " NOLOGIN"},
		{"member of a group", "GRANT " + render.QuoteIdent(group) + " TO " + h, "REVOKE " + render.QuoteIdent(group) + " FROM " + h},
		{"granted to a login that is no admin", "GRANT " + h + " TO " + render.QuoteIdent(l.acct), "REVOKE " + h + " FROM " + render.QuoteIdent(l.acct)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, password, c := leaseWithCreate(t, l.db, l.dbname)
			execSQL(t, c, "CREATE TABLE public.t_"+randSuffix()+" (x int)")
			_ = c.Close(testCtx(t))
			execSQL(t, l.a, tc.tamper)
			t.Cleanup(func() { execSQL(t, l.a, tc.fix) })
			logged := len(l.logs.String())
			_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
			t.Logf("DeleteUser: %v", err)
			if err == nil {
				t.Errorf("the revocation handing objects to a holding role with %s reported success (Vault forgets the lease and never retries); the refusal reached only the log:\n%s", tc.name, l.logs.String()[logged:])
			} else if !strings.Contains(err.Error(), holdingRole) || !strings.Contains(err.Error(), "NOLOGIN") {
				t.Errorf("the refusal does not say what to fix: %v", err)
			}
			assertNoLogin(t, user, password)
			if assertHoldingRoleHoldsNothingOf(t, l, user) {
				execSQL(t, l.a, tc.fix)
				revokeDropped(t, l.db, l.a, user)
			}
		})
	}
}

// assertHoldingRoleHoldsNothingOf checks that the user's objects were not
// handed to the holding role, and reports whether the user still has them.
func assertHoldingRoleHoldsNothingOf(t *testing.T, l *attackLab, user string) bool {
	t.Helper()
	var mine, held int
	err := l.a.QueryRow(testCtx(t), `SELECT count(*) FILTER (WHERE tableowner = $1), count(*) FILTER (WHERE tableowner = $2)
		FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 't\_%'`, user, holdingRole).Scan(&mine, &held)
	if err != nil {
		t.Fatal(err)
	}
	if mine != 1 {
		t.Errorf("the user owns %d tables after the refused hand-over, want its 1 (the holding role holds %d)", mine, held)
	}
	return mine == 1
}

// TestHandOverByCreateroleAdmin: an admin that is not a superuser but has
// CREATEROLE (what managed services give), owning the schema a user made a
// table in, hands the table to the holding role, data kept, and drops the
// user; from PostgreSQL 16 also when createrole_self_grant made it a member
// of the users it creates. The holding role is either made by this admin's
// revocation, or was made earlier by another's (a superuser's). Not
// parallel: see setAsideHoldingRole.
func TestHandOverByCreateroleAdmin(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, adm := range []struct {
		name, alter string
		minVersion  int
	}{
		{"CREATEROLE", "", 0},
		{"createrole_self_grant set, inherit", "SET createrole_self_grant = 'set, inherit'", pg16},
	} {
		for _, made := range []string{"by this admin", "earlier by a superuser's revocation"} {
			t.Run(adm.name+", holding role made "+made, func(t *testing.T) {
				if pg.VersionNum < adm.minVersion {
					t.Skipf("needs server_version_num %d; the server runs %d", adm.minVersion, pg.VersionNum)
				}
				if made == "by this admin" {
					setAsideHoldingRole(t, a)
				}
				createroleHandOver(t, a, adm.alter, made == "by this admin")
			})
		}
	}
}

// createroleHandOver makes a CREATEROLE admin (altered by alter unless
// ""), owning a schema, and checks that a user's table there goes to the
// holding role when the admin revokes the user.
func createroleHandOver(t *testing.T, a *pgxpool.Pool, alter string, makesHoldingRole bool) {
	t.Helper()
	user, pw := "cradmin-"+randSuffix(), "Cr-"+randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(user), render.QuoteLiteral(pw)))
	if !makesHoldingRole {
		shareHoldingRole(t, a, user)
	}
	if alter != "" {
		execSQL(t, a, fmt.Sprintf("ALTER ROLE %s %s", render.QuoteIdent(user), alter))
	}
	schema := "cr_" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", render.QuoteIdent(schema), render.QuoteIdent(user)))
	db := newDB(t, map[string]interface{}{"username": user, "password": pw})
	req := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)))
	created := dbtesting.AssertNewUser(t, db, req).Username
	table := render.QuoteIdent(schema) + ".owned"
	execSQL(t, connectAs(t, created, req.Password, ""), strings.Join([]string{
		"CREATE TABLE " + table + " (id int)",
		"INSERT INTO " + table + " VALUES (7)",
	}, "; "))
	revokeDropped(t, db, a, created)
	var owner string
	var v int
	if err := a.QueryRow(testCtx(t), "SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'owned'), id FROM "+table, schema).Scan(&owner, &v); err != nil || owner != holdingRole || v != 7 {
		t.Errorf("the revoked user's table: owner %q, value %d (%v); want the holding role %s, 7", owner, v, err, holdingRole)
	}
	assertHoldingRoleUnprivileged(t, a)
}

// TestHandOverRefusesHoldingRoleTheAdminCannotJoin: from PostgreSQL 16 a
// CREATEROLE admin may not join a holding role another role made (it holds
// no ADMIN OPTION on it). The revocation fails, saying what a superuser must
// grant, instead of leaving the user disabled with its objects; the user
// cannot log in meanwhile, and once the grant is made the retry succeeds.
func TestHandOverRefusesHoldingRoleTheAdminCannotJoin(t *testing.T) {
	needPG(t)
	if pg.VersionNum < pg16 {
		t.Skipf("PostgreSQL %d lets a CREATEROLE role grant any role", pg.VersionNum)
	}
	a := admin(t)
	ensureHoldingRole(t, a)
	user, pw := "cradmin-"+randSuffix(), "Cr-"+randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(user), render.QuoteLiteral(pw)))
	schema := "cr_" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", render.QuoteIdent(schema), render.QuoteIdent(user)))
	db := newDB(t, map[string]interface{}{"username": user, "password": pw})
	req := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)))
	created := dbtesting.AssertNewUser(t, db, req).Username
	execSQL(t, connectAs(t, created, req.Password, ""), "CREATE TABLE "+render.QuoteIdent(schema)+".owned (id int)")

	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: created})
	if err == nil || !strings.Contains(err.Error(), "WITH ADMIN OPTION") || !strings.Contains(err.Error(), "PV001") {
		t.Fatalf("revocation by an admin that cannot join the holding role: error = %v, want one naming the grant to make", err)
	}
	assertNoLogin(t, created, req.Password)
	shareHoldingRole(t, a, user)
	revokeDropped(t, db, a, created)
}

// TestHandOverHeldBackLendsNoPrivileges: while a lock holds the hand-over
// back, code of the user's that others can still set off (a rule on its
// table; a trigger on its table that a foreign key's cascade fires, which
// runs as the table's owner) runs without the privileges others gave the
// user: the committed first step takes them back, as DROP OWNED would.
func TestHandOverHeldBackLendsNoPrivileges(t *testing.T) {
	for _, tc := range []struct{ name, plant, fire string }{
		{"rule", `
CREATE TABLE public.inbox (x int);
CREATE RULE r AS ON INSERT TO public.inbox DO INSTEAD INSERT INTO public.outbox SELECT current_user, s FROM public.secret;
GRANT INSERT ON public.inbox TO PUBLIC;`, "INSERT INTO public.inbox VALUES (1)"},
		{"trigger fired by a cascade", `
CREATE TABLE public.child (id int REFERENCES public.parent ON DELETE CASCADE);
INSERT INTO public.child VALUES (1);
CREATE FUNCTION public.leak() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO public.outbox SELECT current_user, s FROM public.secret; RETURN OLD; END $f$;
CREATE TRIGGER leak BEFORE DELETE ON public.child FOR EACH ROW EXECUTE FUNCTION public.leak();`, "DELETE FROM public.parent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
			execSQL(t, l.a, fmt.Sprintf(`CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data');
GRANT SELECT ON public.secret TO %[1]s;
CREATE TABLE public.parent (id int PRIMARY KEY); INSERT INTO public.parent VALUES (1);
ALTER TABLE public.parent OWNER TO %[2]s; GRANT REFERENCES ON public.parent TO %[1]s`, render.QuoteIdent(l.user), render.QuoteIdent(l.acct)))
			execSQL(t, l.c, fmt.Sprintf(`CREATE TABLE public.held (x int); GRANT SELECT ON public.held TO %s;
CREATE TABLE public.outbox (who text, s text);`, render.QuoteIdent(l.acct))+tc.plant)
			_ = l.c.Close(testCtx(t))
			l.holdBackHandOver(t)
			_, err := l.asAcct(t).Exec(testCtx(t), tc.fire)
			t.Logf("%s as %s while the hand-over is held back: %v", tc.fire, l.acct, err)
			var leaked []string
			if err := l.a.QueryRow(testCtx(t), "SELECT coalesce(array_agg(who), '{}') FROM public.outbox WHERE s = 'the data'").Scan(&leaked); err != nil {
				t.Fatal(err)
			}
			if len(leaked) > 0 {
				t.Errorf("while the hand-over is held back, the revoked user's %s read the data as %v", tc.name, leaked)
			}
		})
	}
}

// TestHandOverLendsEverySchemaItNeeds: a CREATEROLE admin hands over only
// to a role that may create in each object's schema, and lends the holding
// role CREATE on those schemas for the length of REASSIGN OWNED: on the
// schemas of every kind of object a user can make there (collations,
// conversions, text search configurations and dictionaries too), so that none of them makes the hand-over fail
// and leave the user's code live under its own name.
func TestHandOverLendsEverySchemaItNeeds(t *testing.T) {
	needPG(t)
	a := admin(t)
	user, pw := createroleAdmin(t, a)
	schemas := []string{"crl_" + randSuffix(), "crl_" + randSuffix()}
	for _, s := range schemas {
		execSQL(t, a, fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", render.QuoteIdent(s), render.QuoteIdent(user)))
		t.Cleanup(func() { execSQL(t, a, "DROP SCHEMA IF EXISTS "+render.QuoteIdent(s)+" CASCADE") })
	}
	db := newDB(t, map[string]interface{}{"username": user, "password": pw})
	for _, kind := range []struct{ name, create string }{
		{"collation", "CREATE COLLATION %s.c1 (provider = libc, locale = 'C')"},
		{"conversion", "CREATE CONVERSION %s.conv1 FOR 'LATIN1' TO 'UTF8' FROM pg_catalog.iso8859_1_to_utf8"},
		{"text search configuration", "CREATE TEXT SEARCH CONFIGURATION %s.ts1 (COPY = pg_catalog.simple)"},
		{"text search dictionary", "CREATE TEXT SEARCH DICTIONARY %s.tsd1 (TEMPLATE = pg_catalog.simple)"},
	} {
		t.Run(kind.name, func(t *testing.T) {
			req := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s, %s TO "{{name}}";`, render.QuoteIdent(schemas[0]), render.QuoteIdent(schemas[1])))
			created := dbtesting.AssertNewUser(t, db, req).Username
			execSQL(t, connectAs(t, created, req.Password, ""), fmt.Sprintf("CREATE TABLE %s.t_%s (id int); ", render.QuoteIdent(schemas[0]), randSuffix())+
				fmt.Sprintf(kind.create, render.QuoteIdent(schemas[1])))
			revokeDropped(t, db, a, created)
		})
	}
}

// TestHandOverHeldBackLendsNoPrivilegesFromAnyGrantor: privileges a third
// role passed on to the user, and privileges the user passed on to others
// from its grant option, are taken back in the committed first step too (as
// their grantor, with CASCADE): the user's rule cannot use them while a
// lock holds the hand-over back.
func TestHandOverHeldBackLendsNoPrivilegesFromAnyGrantor(t *testing.T) {
	for _, tc := range []struct{ name, grant string }{
		{"granted by a third role", `CREATE ROLE %[3]s; GRANT SELECT ON public.secret TO %[3]s WITH GRANT OPTION;
SET ROLE %[3]s; GRANT SELECT ON public.secret TO %[1]s; RESET ROLE;`},
		{"passed on from its grant option", `GRANT SELECT ON public.secret TO %[1]s WITH GRANT OPTION;
SET ROLE %[1]s; GRANT SELECT ON public.secret TO %[2]s; RESET ROLE;`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newAttackLab(t, map[string]interface{}{"lock_timeout": "300ms"})
			third := "third-" + randSuffix() // a name that needs quoting
			t.Cleanup(func() {
				_, _ = l.a.Exec(context.Background(), "DROP OWNED BY "+render.QuoteIdent(third)+"; DROP ROLE IF EXISTS "+render.QuoteIdent(third))
			})
			execSQL(t, l.a, `CREATE TABLE public.secret (s text); INSERT INTO public.secret VALUES ('the data');`+
				fmt.Sprintf(tc.grant, render.QuoteIdent(l.user), render.QuoteIdent(l.acct), render.QuoteIdent(third)))
			execSQL(t, l.c, fmt.Sprintf(`CREATE TABLE public.held (x int); GRANT SELECT ON public.held TO %s;
CREATE TABLE public.outbox (who text, s text);
CREATE TABLE public.inbox (x int);
CREATE RULE r AS ON INSERT TO public.inbox DO INSTEAD INSERT INTO public.outbox SELECT current_user, s FROM public.secret;
GRANT INSERT ON public.inbox TO PUBLIC;`, render.QuoteIdent(l.acct)))
			_ = l.c.Close(testCtx(t))
			l.holdBackHandOver(t)
			_, err := l.asAcct(t).Exec(testCtx(t), "INSERT INTO public.inbox VALUES (1)")
			t.Logf("INSERT into the user's table with a rule, as %s: %v", l.acct, err)
			var acl string
			if err := l.a.QueryRow(testCtx(t), "SELECT relacl::text FROM pg_class WHERE oid = 'public.secret'::regclass").Scan(&acl); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(acl, l.user) {
				t.Errorf("while the hand-over is held back, the ACL of public.secret still names the user: %s", acl)
			}
		})
	}
}

// TestHandOverSucceedsWithGrantsPassedOnFromItsView: a role the user let
// pass its view on (WITH GRANT OPTION) that did so does not make the
// revocation fail for ever with "dependent privileges exist": the view's
// privileges are revoked with CASCADE, and the view serves no one.
func TestHandOverSucceedsWithGrantsPassedOnFromItsView(t *testing.T) {
	l := newAttackLab(t, nil)
	execSQL(t, l.c, fmt.Sprintf(`CREATE TABLE public.mine (s text); INSERT INTO public.mine VALUES ('kept');
CREATE VIEW public.v AS SELECT s FROM public.mine; GRANT SELECT ON public.v TO %s WITH GRANT OPTION`, render.QuoteIdent(l.acct)))
	execSQL(t, l.asAcct(t), "GRANT SELECT ON public.v TO PUBLIC")
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	var s string
	if err := l.asAcct(t).QueryRow(testCtx(t), "SELECT s FROM public.v").Scan(&s); err == nil {
		t.Errorf("after the revocation, the revoked user's view still serves %s: %q", l.acct, s)
	}
}

// TestHandOverDisarmsWhatADefinerCallRearms: the hand-over's own
// disarming (reassign_owned.sql) lists the user's SECURITY DEFINER routines,
// then waits for locks (DISABLE RULE, REASSIGN OWNED), then reassigns
// whatever the user owns by then; so it disarms again after REASSIGN OWNED. A call of the user's own SECURITY DEFINER
// function, running in another login's session (acct's), is not ended by the
// revocation (only sessions whose login is the user are) and keeps acting as
// the user after NOLOGIN and the disarming: it holds a lock on the user's
// table with a rule, waits until the hand-over's DISABLE RULE queues behind
// it (the list is read by then), makes the user's function g SECURITY
// DEFINER again, and commits. Without the second pass REASSIGN OWNED would
// give g, SECURITY DEFINER and executable by PUBLIC, to the holding role:
// any login could then act as the role that owns every revoked user's
// leftovers.
func TestHandOverDisarmsWhatADefinerCallRearms(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "5s"})
	execSQL(t, l.c, `
CREATE TABLE public.t (x int);
CREATE TABLE public.t_log (x int);
CREATE RULE r AS ON INSERT TO public.t DO ALSO INSERT INTO public.t_log VALUES (NEW.x);
CREATE FUNCTION public.g() RETURNS text SECURITY DEFINER LANGUAGE sql AS 'SELECT current_user::text';
CREATE FUNCTION public.hold() RETURNS text SECURITY DEFINER LANGUAGE plpgsql AS $f$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '30 s';
BEGIN
	LOCK TABLE public.t IN ROW EXCLUSIVE MODE;
	-- The disarming (revoke_disarm.sql) committed g as SECURITY INVOKER, and
	-- the hand-over now waits for our lock on t: its list is read.
	WHILE clock_timestamp() < deadline AND ((SELECT prosecdef FROM pg_catalog.pg_proc WHERE oid = 'public.g()'::regprocedure)
		OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE relation = 'public.t'::regclass AND NOT granted)) LOOP
		PERFORM pg_catalog.pg_sleep(0.01);
	END LOOP;
	ALTER FUNCTION public.g() SECURITY DEFINER;
	RETURN current_user;
END $f$;`)
	_ = l.c.Close(testCtx(t))

	acct := l.asAcct(t)
	held := make(chan error, 1)
	go func() {
		var who string
		held <- acct.QueryRow(testCtx(t), "SELECT public.hold()").Scan(&who)
	}()
	waitFor(t, func() bool {
		var n int
		_ = l.a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_locks WHERE relation = 'public.t'::regclass AND granted AND mode = 'RowExclusiveLock'").Scan(&n)
		return n > 0
	})
	_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: l.user})
	t.Logf("DeleteUser: %v; hold(): %v", err, <-held)
	if err != nil {
		t.Fatalf("revocation: %v", err)
	}
	var definer bool
	var owner string
	if err := l.a.QueryRow(testCtx(t), "SELECT prosecdef, pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'public.g()'::regprocedure").Scan(&definer, &owner); err != nil {
		t.Fatal(err)
	}
	var ranAs string
	_ = acct.QueryRow(testCtx(t), "SELECT public.g()").Scan(&ranAs)
	if definer {
		t.Errorf("after a successful revocation, public.g() is SECURITY DEFINER and owned by %s: %s calling it runs as %q", owner, l.acct, ranAs)
	}
}

// TestHandOverWaitsForNothingOfOtherRevokedUsers: the hand-over's second
// disarming pass (reassign_owned.sql) covers what this user owned, not
// everything the holding role owns. A revoked user's leftover code still
// runs as the holding role
// (a trigger fired by a foreign key's cascade, which anyone the user let
// delete from its table can start): it makes one of the holding role's
// routines SECURITY DEFINER again (committed), then, in a transaction kept
// open, does so again, holding the routine's catalog row. From then on the
// hand-over of every other user that owns anything would wait for that row
// and fail, were the pass to cover the holding role's every object.
func TestHandOverWaitsForNothingOfOtherRevokedUsers(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"lock_timeout": "1s"})
	execSQL(t, l.c, fmt.Sprintf(`
CREATE FUNCTION public.g() RETURNS text LANGUAGE sql AS 'SELECT current_user::text';
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int REFERENCES public.parent ON DELETE CASCADE);
CREATE FUNCTION public.rearm() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
	-- Run by the cascade as the child table's owner: after the hand-over,
	-- the holding role, which owns public.g().
	ALTER FUNCTION public.g() SECURITY DEFINER;
	RETURN OLD;
END $f$;
CREATE TRIGGER rearm BEFORE DELETE ON public.child FOR EACH ROW EXECUTE FUNCTION public.rearm();
GRANT SELECT, INSERT, DELETE ON public.parent, public.child TO %s;`, render.QuoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)

	acct := l.asAcct(t)
	fire := "INSERT INTO public.parent VALUES (%[1]d); INSERT INTO public.child VALUES (%[1]d); DELETE FROM public.parent WHERE id = %[1]d"
	execSQL(t, acct, fmt.Sprintf(fire, 1)) // committed: g is SECURITY DEFINER again
	var ranAs string
	_ = acct.QueryRow(testCtx(t), "SELECT public.g()").Scan(&ranAs)
	t.Logf("after the cascade, %s calling public.g() runs as %q", l.acct, ranAs)
	// Now hold g's row: the same cascade in a transaction left open.
	execSQL(t, acct, "BEGIN")
	execSQL(t, acct, fmt.Sprintf(fire, 2))

	// An unrelated user, which owns a table, is revoked.
	other, _, oc := leaseWithCreate(t, l.db, l.dbname)
	execSQL(t, oc, "CREATE TABLE public.other_t (x int)")
	_ = oc.Close(testCtx(t))
	_, err := l.db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: other})
	if err != nil {
		t.Errorf("revoking an unrelated user fails while a revoked user's leftover holds one of the holding role's rows: %v", err)
	}
	_, _ = acct.Exec(context.Background(), "ROLLBACK")
}
