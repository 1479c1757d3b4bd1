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
