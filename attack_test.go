package postgres

// Attacks from an adversarial review: a dynamic user that may create objects
// plants code that would run with the admin's rights when the plugin renews,
// labels, reaps or revokes it. Each test is one attack; every one must
// hold. ("acct" is an ordinary role the attacker also controls.)

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5"
)

// leaseWithCreate is a dynamic user that may create in schema public (as
// on PostgreSQL ≤ 14 for everyone, or granted by the role's statements, as
// the package's own userOwningTable does), with an open session.
func leaseWithCreate(t *testing.T, db *Postgres, dbname string, display string) (string, string, *pgx.Conn) {
	t.Helper()
	req := newUserReq(createStmt, `GRANT CREATE ON SCHEMA public TO "{{name}}";`)
	if display != "" {
		req.UsernameConfig.DisplayName = display
	}
	resp, err := db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pg.Connect(testCtx(t), resp.Username, req.Password, dbname)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return resp.Username, req.Password, c
}

func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(testCtx(t), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// escalate is a PL/pgSQL statement that makes acct a superuser, and does
// nothing (no error) unless a superuser runs it.
func escalate(acct string) string {
	return fmt.Sprintf(`BEGIN EXECUTE 'ALTER ROLE %s SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;`, quoteIdent(acct))
}

// 1. A rewrite rule on a table the user owns. Rule actions are checked with
// the privileges of the table's owner, at every INSERT, by anyone: not "when
// maintained". After the default hand-over (to the admin, a superuser) any
// role allowed to INSERT into the table (PUBLIC, granted by the user before
// revocation) runs the rule's action as the superuser.
func TestAttackRuleOnHandedOverTable(t *testing.T) {
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, acctPassword := attackerAccount(t, a)
	user, _, c := leaseWithCreate(t, db, dbname, "")
	mustExec(t, c, fmt.Sprintf(`
CREATE TABLE public.inbox (x int);
CREATE RULE r AS ON INSERT TO public.inbox DO ALSO
	UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = %[1]s;
GRANT INSERT ON public.inbox TO PUBLIC;
CREATE VIEW public.outbox AS SELECT 1 AS x;
CREATE RULE r AS ON UPDATE TO public.outbox DO INSTEAD
	UPDATE pg_catalog.pg_authid SET rolsuper = true WHERE rolname = %[1]s;
GRANT UPDATE ON public.outbox TO PUBLIC;`, quoteLiteral(acct)))
	_ = c.Close(testCtx(t))

	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if roleExists(t, a, user) {
		t.Fatalf("%s still exists", user)
	}
	ac, err := pg.Connect(testCtx(t), acct, acctPassword, dbname)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close(context.Background())
	_, err = ac.Exec(testCtx(t), "INSERT INTO public.inbox VALUES (1)")
	t.Logf("INSERT by %s: err=%v", acct, err)
	_, err = ac.Exec(testCtx(t), "UPDATE public.outbox SET x = 2")
	t.Logf("UPDATE of the view by %s: err=%v", acct, err)
	if isSuper(t, a, acct) {
		t.Errorf("after revocation, %s wrote through the revoked user's table and view, and their rules (now owned by the superuser admin) made it a superuser", acct)
	}
}

// 2. The renewal's relabel block (label_renewed.sql) runs as the admin with
// the session's search_path (no pinning, unlike revocation) and calls
// format(text, text, text) unqualified. An overload in public matches
// better than pg_catalog's variadic one. Vault renews a lease on its own.
func TestAttackPlantedFormatAtRenewal(t *testing.T) {
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, _ := attackerAccount(t, a)
	user, _, c := leaseWithCreate(t, db, dbname, "")
	mustExec(t, c, fmt.Sprintf(`
CREATE FUNCTION public.format(f text, a text, b text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
	%s
	RETURN pg_catalog.format(f, a, b);
END $f$;`, escalate(acct)))
	_ = c.Close(testCtx(t))

	_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{
		Username:   user,
		Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(2 * time.Hour)},
	})
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if isSuper(t, a, acct) {
		t.Errorf("renewing %s's lease ran the format() it planted in public as the admin: %s is now a superuser", user, acct)
	}
}

// 3. The creation label block (label_created.sql) is used instead of a plain
// COMMENT whenever the rendered creation SQL contains "comment", which the
// attacker decides through the display name. It calls format() unqualified
// with the session's search_path, as the admin (asPlugin).
func TestAttackPlantedFormatAtCreation(t *testing.T) {
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, _ := attackerAccount(t, a)
	_, _, c := leaseWithCreate(t, db, dbname, "")
	mustExec(t, c, fmt.Sprintf(`
CREATE FUNCTION public.format(f text, a text, b text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
	%s
	RETURN pg_catalog.format(f, a, b);
END $f$;`, escalate(acct)))
	_ = c.Close(testCtx(t))

	// The attacker's next login, with a display name holding "comment".
	req := newUserReq(createStmt)
	req.UsernameConfig.DisplayName = "comment"
	resp, err := db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	t.Logf("second lease: %s", resp.Username)
	if isSuper(t, a, acct) {
		t.Errorf("creating a user whose display name holds \"comment\" ran the format() planted in public as the admin: %s is now a superuser", acct)
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
	_, _, c := leaseWithCreate(t, db, dbname, "")
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
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, _ := attackerAccount(t, a)
	user, _, c := leaseWithCreate(t, db, dbname, "")
	plantOidRegclassEq(t, c, acct)
	mustExec(t, c, fmt.Sprintf(`
CREATE FUNCTION public.format(f text, a text, b text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN %s RETURN pg_catalog.format(f, a, b); END $f$;
CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN %s RETURN pg_catalog.format(f, a); END $f$;
CREATE TABLE public.t (x int);
CREATE FUNCTION public.sd() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1';`, escalate(acct), escalate(acct)))
	_ = c.Close(testCtx(t))
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if isSuper(t, a, acct) {
		t.Errorf("revocation ran a planted operator/function as the admin")
	}
}

// 6. A trigger (and an event trigger attempt) on objects the user owns
// that would fire on what the admin does during the hand-over.
func TestAttackTriggersAtHandOver(t *testing.T) {
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, _ := attackerAccount(t, a)
	user, _, c := leaseWithCreate(t, db, dbname, "")
	body := fmt.Sprintf(`CREATE FUNCTION public.tf() RETURNS event_trigger LANGUAGE plpgsql AS $f$ BEGIN %s END $f$;`, escalate(acct))
	mustExec(t, c, body)
	if _, err := c.Exec(testCtx(t), `CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION public.tf()`); err == nil {
		t.Errorf("a dynamic user created an event trigger")
	}
	mustExec(t, c, fmt.Sprintf(`
CREATE TABLE public.tt (x int);
CREATE FUNCTION public.tg() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN %s RETURN NULL; END $f$;
CREATE TRIGGER tg AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.tt FOR EACH STATEMENT EXECUTE FUNCTION public.tg();
CREATE POLICY p ON public.tt USING (pg_catalog.current_user() IS NOT NULL);
ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;
SELECT lo_create(0);`, escalate(acct)))
	_ = c.Close(testCtx(t))
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if isSuper(t, a, acct) {
		t.Errorf("the hand-over fired the revoked user's code as the admin")
	}
	var n int
	_ = a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_default_acl").Scan(&n)
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
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, _ := attackerAccount(t, a)
	user, _, c := leaseWithCreate(t, db, dbname, "")
	plantEscalation(t, c, acct)
	mustExec(t, c, `
CREATE TABLE public.tix (x int, y int);
INSERT INTO public.tix SELECT g, g FROM pg_catalog.generate_series(1, 10) g;
CREATE INDEX tix_expr ON public.tix (public.ix(x));
CREATE INDEX tix_pred ON public.tix (y) WHERE public.ix(y) > 0;
CREATE INDEX tix_plain ON public.tix (x, pg_catalog.abs(y));`)
	if pg.VersionNum >= 140000 {
		mustExec(t, c, `CREATE STATISTICS public.tix_stat ON (public.ix(x)), y FROM public.tix`)
	}
	_ = c.Close(testCtx(t))
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if roleExists(t, a, user) {
		t.Fatalf("%s was not dropped", user)
	}
	super := connectAs(t, pg.SuperUser, pg.SuperPassword, dbname)
	for _, sql := range []string{"ANALYZE public.tix", "REINDEX TABLE public.tix"} {
		if _, err := super.Exec(testCtx(t), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if isSuper(t, a, acct) {
		t.Errorf("after the hand-over, ANALYZE or REINDEX ran the revoked user's function as the superuser admin: %s is a superuser", acct)
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
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname)})
	acct, acctPassword := attackerAccount(t, a)
	user, _, c := leaseWithCreate(t, db, dbname, "")
	plantEscalation(t, c, acct)
	mustExec(t, c, fmt.Sprintf(`
CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS x FROM (SELECT public.esc()) s;
GRANT MAINTAIN ON public.mv TO %s;`, quoteIdent(acct)))
	_ = c.Close(testCtx(t))
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	ac, err := pg.Connect(testCtx(t), acct, acctPassword, dbname)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close(context.Background())
	_, err = ac.Exec(testCtx(t), "REFRESH MATERIALIZED VIEW public.mv")
	t.Logf("REFRESH by %s: %v", acct, err)
	if isSuper(t, a, acct) {
		t.Errorf("after the hand-over, %s refreshed the revoked user's materialized view and its query made it a superuser", acct)
	}
}
