package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// TestSessionResetDropsTempObjects: a temporary table one request's
// statements create would stay on the pooled session and, where pg_temp
// comes first in the search path (a session's default), take the next
// request's GRANT on the real table of that name, silently. The session
// reset (DISCARD TEMP) drops it, and operator statements search pg_temp
// last.
func TestSessionResetDropsTempObjects(t *testing.T) {
	// A database of its own, whose public schema only its owner may create
	// in (PUBLIC may on 14): operator statements search public only then
	// (safe_search_path.sql), whatever other tests granted elsewhere.
	dbname, a := isolatedDB(t)
	execSQL(t, a, "REVOKE CREATE ON SCHEMA public FROM PUBLIC; CREATE TABLE public.orders (id int)")
	db := newDB(t, map[string]interface{}{"max_open_connections": 1, "connection_url": pg.TemplateURL(dbname)})

	first := newUserReq(createStmt, "CREATE TEMP TABLE orders (id int);")
	if _, err := db.NewUser(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	second := newUserReq(createStmt, `GRANT SELECT ON orders TO "{{name}}";`)
	resp, err := db.NewUser(testCtx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, resp.Username, second.Password, dbname)
	if _, err := c.Exec(testCtx(t), "SELECT * FROM public.orders"); err != nil {
		t.Fatalf("the grant went elsewhere (a temporary table left by an earlier request?): %v", err)
	}
}

// TestSessionReset leaves a pooled session dirty (another role or session
// user, standard_conforming_strings off, another search_path) from one
// request and checks that the next request on the same connection runs as
// the configured user with the plugin's settings: its password with a
// backslash works and its statements see a clean session.
func TestSessionReset(t *testing.T) {
	needPG(t)
	a := admin(t)
	other := "lc-other-" + randSuffix()
	execSQL(t, a, "CREATE ROLE "+render.QuoteIdent(other))
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(other)) })
	probe := newSessionProbe(t, a)
	// The session's own path, after the reset (the probe reads the copy
	// the plugin keeps of it).
	defaultPath := sessionPathOf(t, a)
	for name, dirt := range sessionDirt(other) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// One connection, sending plaintext passwords into the literal so
			// that the quoting rules matter.
			db := newDB(t, map[string]interface{}{"max_open_connections": 1, "password_authentication": "password"})
			dirty := dbtesting.AssertNewUser(t, db, newUserReq(append([]string{createStmt, probe.record}, dirt...)...))
			t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(dirty.Username)) })

			req := newUserReq(createStmt, probe.record)
			req.Password = `Aa1\'b\\c` + randSuffix()
			resp := dbtesting.AssertNewUser(t, db, req)
			t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(resp.Username)) })
			assertLogin(t, resp.Username, req.Password)

			_, _, _, _, dirtyPID := probe.read(t, a, dirty.Username)
			cu, su, scs, sp, pid := probe.read(t, a, resp.Username)
			if pid != dirtyPID {
				t.Fatalf("the second request ran on another connection (pid %d, not %d): the test proves nothing", pid, dirtyPID)
			}
			if cu != pg.SuperUser || su != pg.SuperUser || scs != "on" || sp != defaultPath {
				t.Fatalf("the next request saw current_user=%q session_user=%q standard_conforming_strings=%q search_path=%q; want %q, %q, on, %q",
					cu, su, scs, sp, pg.SuperUser, pg.SuperUser, defaultPath)
			}

			// Rotation on the dirtied connection sets the password it reports.
			dbtesting.AssertNewUser(t, db, newUserReq(append([]string{`CREATE ROLE "{{name}}";`}, dirt...)...))
			newPw := `Nn2\'x\\` + randSuffix()
			if _, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: resp.Username, CredentialType: dbplugin.CredentialTypePassword,
				Password: &dbplugin.ChangePassword{NewPassword: newPw}}); err != nil {
				t.Fatalf("UpdateUser: %v", err)
			}
			assertLogin(t, resp.Username, newPw)
		})
	}
}

// TestSessionsRunInUTC: the built-in plugin's sessions run with TimeZone=UTC
// (it adds timezone=UTC to connection_url), whatever the database's setting:
// statements that write a timestamp without a zone behave the same here.
func TestSessionsRunInUTC(t *testing.T) {
	a := admin(t)
	name, _ := isolatedDB(t)
	execSQL(t, a, "ALTER DATABASE "+render.QuoteIdent(name)+" SET timezone = 'America/New_York'")
	c := connectAs(t, pg.SuperUser, pg.SuperPassword, name)
	execSQL(t, c, "CREATE TABLE public.audit (u text, tz text, exp timestamp)")
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(name)})
	req := newUserReq(createStmt, `INSERT INTO public.audit VALUES ('{{name}}', current_setting('TimeZone'), '{{expiration}}'::timestamptz::timestamp);`)
	req.Expiration = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	user := dbtesting.AssertNewUser(t, db, req).Username
	var tz string
	var exp time.Time
	if err := c.QueryRow(testCtx(t), "SELECT tz, exp FROM public.audit WHERE u = $1", user).Scan(&tz, &exp); err != nil {
		t.Fatal(err)
	}
	if tz != "UTC" || !exp.Equal(req.Expiration) {
		t.Errorf("the statements ran with TimeZone=%s and wrote %s; want UTC and %s", tz, exp, req.Expiration)
	}
	revokeDropped(t, db, a, user)
}

// TestSessionPathLeftByStatementsReachesNoPluginQuery: an operator's
// statements may set the session's own search_path (SET search_path =
// public, pg_catalog), which then holds for the rest of their request. It
// must not outlive it: the plugin's own queries on that pooled connection
// (here the role check after a custom revocation's "does not exist") would
// otherwise resolve their = through a path with a schema others write, and
// run the operator a dynamic user planted there as the admin.
func TestSessionPathLeftByStatementsReachesNoPluginQuery(t *testing.T) {
	l := newAttackLab(t, nil)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(l.dbname), "max_open_connections": 1})
	execSQL(t, l.c, fmt.Sprintf(`
CREATE FUNCTION public.name_eq(a name, b name) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	%s
	RETURN a OPERATOR(pg_catalog.=) b;
END $f$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.name_eq);`, escalate(l.acct)))
	for _, tc := range []struct{ name, create, revoke string }{
		{"left by a request that succeeded", `SET search_path = public, pg_catalog;`, `REVOKE "no_such_role_x" FROM "{{name}}";`},
		{"made final by a COMMIT in a request that failed", "", `SET search_path = public, pg_catalog; COMMIT; REVOKE "no_such_role_x" FROM "{{name}}";`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt, tc.create)).Username
			_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user,
				Statements: dbplugin.Statements{Commands: []string{tc.revoke}}})
			t.Logf("DeleteUser: %v", err)
			if isSuper(t, l.a, l.acct) {
				t.Fatalf("a plugin query ran the = operator planted in public, on the search_path an operator's statements set: %s is now a superuser", l.acct)
			}
		})
	}
}
