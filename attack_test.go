package postgres

// Attacks from an adversarial review: a dynamic user that may create objects
// plants code that would run with the admin's rights when the plugin renews,
// labels, reaps or revokes it. Each test is one attack; every one must
// hold. ("acct" is an ordinary role the attacker also controls.)

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5"
)

// 1. A rewrite rule on a table the user owns. Rule actions are checked with
// the privileges of the table's owner, at every INSERT, by anyone: not "when
// maintained". After the default hand-over (to the admin, a superuser) any
// role allowed to INSERT into the table (PUBLIC, granted by the user before
// revocation) runs the rule's action as the superuser.
func TestAttackRuleOnHandedOverTable(t *testing.T) {
	l := newAttackLab(t, nil)
	mustExec(t, l.c, fmt.Sprintf(`
CREATE TABLE public.inbox (x int);
CREATE RULE r AS ON INSERT TO public.inbox DO ALSO
	UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = %[1]s;
GRANT INSERT ON public.inbox TO PUBLIC;
CREATE VIEW public.outbox AS SELECT 1 AS x;
CREATE RULE r AS ON UPDATE TO public.outbox DO INSTEAD
	UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = %[1]s;
GRANT UPDATE ON public.outbox TO PUBLIC;`, quoteLiteral(l.acct)))
	_ = l.c.Close(testCtx(t))

	revokeDropped(t, l.db, l.a, l.user)
	ac := connectAs(t, l.acct, l.acctPassword, l.dbname)
	_, err := ac.Exec(testCtx(t), "INSERT INTO public.inbox VALUES (1)")
	t.Logf("INSERT by %s: err=%v", l.acct, err)
	_, err = ac.Exec(testCtx(t), "UPDATE public.outbox SET x = 2")
	t.Logf("UPDATE of the view by %s: err=%v", l.acct, err)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after revocation, %s wrote through the revoked user's table and view, and their rules (now owned by the superuser admin) made it a superuser", l.acct)
	}
}

// 2. The renewal's relabel block (label_renewed.sql) runs as the admin with
// the session's search_path (no pinning, unlike revocation) and calls
// format(text, text, text) unqualified. An overload in public matches
// better than pg_catalog's variadic one. Vault renews a lease on its own.
func TestAttackPlantedFormatAtRenewal(t *testing.T) {
	l := newAttackLab(t, nil)
	plantFormat(t, l.c, l.acct)
	_ = l.c.Close(testCtx(t))

	_, err := l.db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{
		Username:   l.user,
		Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(2 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if isSuper(t, l.a, l.acct) {
		t.Errorf("renewing %s's lease ran the format() it planted in public as the admin: %s is now a superuser", l.user, l.acct)
	}
}

// 3. The creation label block (label_created.sql) is used instead of a plain
// COMMENT whenever the rendered creation SQL contains "comment", which the
// attacker decides through the display name. It calls format() unqualified
// with the session's search_path, as the admin (asPlugin).
func TestAttackPlantedFormatAtCreation(t *testing.T) {
	l := newAttackLab(t, nil)
	plantFormat(t, l.c, l.acct)
	_ = l.c.Close(testCtx(t))

	// The attacker's next login, with a display name holding "comment".
	req := newUserReq(createStmt)
	req.UsernameConfig.DisplayName = "comment"
	resp, err := l.db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	t.Logf("second lease: %s", resp.Username)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("creating a user whose display name holds \"comment\" ran the format() planted in public as the admin: %s is now a superuser", l.acct)
	}
}

// plantOidRegclassEq creates public.=(oid, regclass): an exact match for
// "oid_column = '…'::regclass", which pg_catalog's =(oid, oid) is not.
func plantOidRegclassEq(t *testing.T, c *pgx.Conn, acct string) {
	t.Helper()
	mustExec(t, c, fmt.Sprintf(`
CREATE FUNCTION public.oideqreg(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	%s
	RETURN a OPERATOR(pg_catalog.=) b::oid;
END $f$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.oideqreg);`, escalate(acct)))
}

// 4. The reaper's query (orphan_candidates.sql) runs on a fresh connection
// as the admin with the default search_path, and compares
// d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass with an
// unqualified operator.
func TestAttackPlantedOperatorAtReaping(t *testing.T) {
	dbname, a := isolatedDB(t)
	db, _ := newReaperDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname), "reap_orphans_after": "1h"}, 24*time.Hour, true)
	acct, _ := attackerAccount(t, a)
	_, _, c := leaseWithCreate(t, db, dbname)
	plantOidRegclassEq(t, c, acct)
	_ = c.Close(testCtx(t))

	res := reapNow(t, db)
	t.Logf("reaper pass: %+v", res)
	if isSuper(t, a, acct) {
		t.Errorf("a reaper pass ran the = operator planted in public as the admin: %s is now a superuser", acct)
	}
}

// 5. Control for 4: the same operator, and format()/cardinality() overloads,
// against the revocation, which pins search_path.
func TestAttackPlantedObjectsAtRevocation(t *testing.T) {
	l := newAttackLab(t, nil)
	plantOidRegclassEq(t, l.c, l.acct)
	plantFormat(t, l.c, l.acct)
	mustExec(t, l.c, fmt.Sprintf(`
CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN %s RETURN pg_catalog.format(f, a); END $f$;
CREATE TABLE public.t (x int);
CREATE FUNCTION public.sd() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1';`, escalate(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("revocation ran a planted operator/function as the admin")
	}
}

// 6. A trigger (and an event trigger attempt) on objects the user owns
// that would fire on what the admin does during the hand-over.
func TestAttackTriggersAtHandOver(t *testing.T) {
	l := newAttackLab(t, nil)
	body := fmt.Sprintf(`CREATE FUNCTION public.tf() RETURNS event_trigger LANGUAGE plpgsql AS $f$ BEGIN %s END $f$;`, escalate(l.acct))
	mustExec(t, l.c, body)
	if _, err := l.c.Exec(testCtx(t), `CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION public.tf()`); err == nil {
		t.Errorf("a dynamic user created an event trigger")
	}
	mustExec(t, l.c, fmt.Sprintf(`
CREATE TABLE public.tt (x int);
CREATE FUNCTION public.tg() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN %s RETURN NULL; END $f$;
CREATE TRIGGER tg AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.tt FOR EACH STATEMENT EXECUTE FUNCTION public.tg();
CREATE POLICY p ON public.tt USING (pg_catalog.current_user() IS NOT NULL);
ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;
SELECT lo_create(0);`, escalate(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("the hand-over fired the revoked user's code as the admin")
	}
	var n int
	_ = l.a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_default_acl").Scan(&n)
	if n != 0 {
		t.Errorf("default privileges of the revoked user survived: %d", n)
	}
}

// plantEscalation creates public.esc(), a VOLATILE function that makes acct
// a superuser when a superuser runs it, and public.ix(int), an IMMUTABLE
// wrapper that index and statistics expressions may call.
func plantEscalation(t *testing.T, c *pgx.Conn, acct string) {
	t.Helper()
	mustExec(t, c, fmt.Sprintf(`
CREATE FUNCTION public.esc() RETURNS void VOLATILE LANGUAGE plpgsql AS $f$
BEGIN
	IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
		EXECUTE 'ALTER ROLE ' || quote_ident(%s) || ' SUPERUSER';
	END IF;
END $f$;
CREATE FUNCTION public.ix(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.esc();
	RETURN x;
END $f$;`, quoteLiteral(acct)))
}

// 7. Index expressions and predicates, and expression statistics, run as
// their table's owner whenever the table is analyzed (autovacuum does it by
// itself once enough rows change) or reindexed. After the hand-over to a
// superuser admin, the user's function in one would run as the superuser.
func TestAttackIndexExpressionAtAnalyze(t *testing.T) {
	l := newAttackLab(t, nil)
	plantEscalation(t, l.c, l.acct)
	mustExec(t, l.c, `
CREATE TABLE public.tix (x int, y int);
INSERT INTO public.tix SELECT g, g FROM pg_catalog.generate_series(1, 10) g;
CREATE INDEX tix_expr ON public.tix (public.ix(x));
CREATE INDEX tix_pred ON public.tix (y) WHERE public.ix(y) > 0;
CREATE INDEX tix_plain ON public.tix (x, pg_catalog.abs(y));`)
	if pg.VersionNum >= 140000 {
		mustExec(t, l.c, `CREATE STATISTICS public.tix_stat ON (public.ix(x)), y FROM public.tix`)
	}
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	super := connectAs(t, pg.SuperUser, pg.SuperPassword, l.dbname)
	for _, sql := range []string{"ANALYZE public.tix", "REINDEX TABLE public.tix"} {
		if _, err := super.Exec(testCtx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the hand-over, ANALYZE or REINDEX ran the revoked user's function as the superuser admin: %s is a superuser", l.acct)
	}
	var kept bool
	if err := super.QueryRow(testCtx(t), `SELECT (SELECT count(*) FROM public.tix) = 10 AND to_regclass('public.tix_plain') IS NOT NULL`).Scan(&kept); err != nil || !kept {
		t.Errorf("the table's rows or its index on built-in functions were not kept (%v)", err)
	}
}

// 8. PostgreSQL 17+: MAINTAIN, granted by the user on its materialized
// view, would let another role refresh it after the hand-over, and the
// view's query runs as its owner.
func TestAttackMaintainRefreshAfterHandOver(t *testing.T) {
	needPG(t)
	if pg.VersionNum < 170000 {
		t.Skip("MAINTAIN is PostgreSQL 17+")
	}
	l := newAttackLab(t, nil)
	plantEscalation(t, l.c, l.acct)
	mustExec(t, l.c, fmt.Sprintf(`
CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS x FROM (SELECT public.esc()) s;
GRANT MAINTAIN ON public.mv TO %s;`, quoteIdent(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	ac := connectAs(t, l.acct, l.acctPassword, l.dbname)
	_, err := ac.Exec(testCtx(t), "REFRESH MATERIALIZED VIEW public.mv")
	t.Logf("REFRESH by %s: %v", l.acct, err)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("after the hand-over, %s refreshed the revoked user's materialized view and its query made it a superuser", l.acct)
	}
}
