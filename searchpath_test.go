package postgres

// The search_path the plugin's statements run with. A dynamic user that may
// create in a schema on the session's path (public: any role on PostgreSQL
// 14 and older; here granted by the role's statements) plants an overload
// that matches better than pg_catalog's (format(text, text) beats
// format(text, VARIADIC "any")) or an operator, and waits for the admin,
// often a superuser, to call it unqualified. The plugin's own SQL runs with
// pg_catalog, pg_temp; the operator's statements with pg_catalog, the
// session's schemas only the admin can create in, then pg_temp. ("acct" is
// an ordinary login role the attacker also controls: every planted object
// tries to make it a superuser.)

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5"
)

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

// TestSearchPathPinnedForRevocation: the revocation's blocks call format(),
// cardinality() and = on oids unqualified, as the admin, with objects to
// hand over (a table, a SECURITY DEFINER function) so that every step runs.
func TestSearchPathPinnedForRevocation(t *testing.T) {
	l := newAttackLab(t, nil)
	plantOidRegclassEq(t, l.c, l.acct)
	plantFormat(t, l.c, l.acct)
	mustExec(t, l.c, fmt.Sprintf(`
CREATE FUNCTION public.cardinality(x int[]) RETURNS int LANGUAGE plpgsql AS $f$
BEGIN %s RETURN pg_catalog.cardinality(x); END $f$;
CREATE TABLE public.t (x int);
CREATE FUNCTION public.sd() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1';`, escalate(l.acct)))
	_ = l.c.Close(testCtx(t))
	revokeDropped(t, l.db, l.a, l.user)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("the revocation ran an operator or function the revoked user planted in public: %s is now a superuser", l.acct)
	}
}

// TestSearchPathPinnedForRenewalLabel: the renewal's relabel block
// (label_renewed.sql) runs as the admin and calls format(text, text, text)
// unqualified. Vault renews a lease on its own.
func TestSearchPathPinnedForRenewalLabel(t *testing.T) {
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

// TestSearchPathPinnedForCreationLabel: the creation label block
// (label_created.sql) is used instead of a plain COMMENT whenever the
// rendered creation SQL contains "comment", which the attacker decides
// through the display name. It calls format() unqualified, as the admin
// (asPlugin).
func TestSearchPathPinnedForCreationLabel(t *testing.T) {
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

// TestSearchPathPinnedForReaper: the reaper's query (orphan_candidates.sql)
// runs on a connection of its own as the admin, and compares
// d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass with an
// unqualified operator.
func TestSearchPathPinnedForReaper(t *testing.T) {
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
