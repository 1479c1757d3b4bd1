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
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// plantOidRegclassEq creates public.=(oid, regclass): an exact match for
// "oid_column = '…'::regclass", which pg_catalog's =(oid, oid) is not.
func plantOidRegclassEq(t *testing.T, c *pgx.Conn, acct string) {
	t.Helper()
	execSQL(t, c, fmt.Sprintf(`
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
	execSQL(t, l.c, fmt.Sprintf(`
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
	l := formatPlantedLab(t)

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
	l := formatPlantedLab(t)

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

// operatorCase is one request whose statements, written by the operator,
// call format() unqualified. run makes the request for victim, a dynamic
// user of the lab's plugin, and returns the user it acted on; check proves
// the statements did their work. group is a role the lab made.
type operatorCase struct {
	name  string
	run   func(t *testing.T, l *attackLab, victim, group string) (string, error)
	check func(t *testing.T, l *attackLab, user, group string)
}

var operatorCases = []operatorCase{
	{name: "creation statements: EXECUTE format with two values",
		run: func(t *testing.T, l *attackLab, _, group string) (string, error) {
			req := newUserReq(createStmt, `DO $$ BEGIN EXECUTE format('GRANT %I TO %I', '`+group+`', '{{name}}'); END $$;`)
			resp, err := l.db.NewUser(testCtx(t), req)
			return resp.Username, err
		},
		check: func(t *testing.T, l *attackLab, user, group string) {
			if !isMember(t, l, user, group) {
				t.Errorf("the creation statements did not grant %s to %s", group, user)
			}
		}},
	{name: "creation statements: SELECT format",
		run: func(t *testing.T, l *attackLab, _, _ string) (string, error) {
			resp, err := l.db.NewUser(testCtx(t), newUserReq(createStmt, `SELECT format('%I', '{{name}}');`))
			return resp.Username, err
		},
		check: func(t *testing.T, l *attackLab, user, _ string) {
			if !roleExists(t, l.a, user) {
				t.Errorf("NewUser returned %s, which does not exist", user)
			}
		}},
	{name: "renewal statements",
		run: func(t *testing.T, l *attackLab, victim, _ string) (string, error) {
			_, err := l.db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: victim, Expiration: &dbplugin.ChangeExpiration{
				NewExpiration: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC),
				Statements: dbplugin.Statements{Commands: []string{
					`DO $$ BEGIN EXECUTE format('ALTER ROLE %I VALID UNTIL %L', '{{name}}', '{{expiration}}'); END $$;`}}}})
			return victim, err
		},
		check: func(t *testing.T, l *attackLab, user, _ string) {
			if got := validUntil(t, l.a, user); got.Year() != 2031 {
				t.Errorf("the renewal statements did not run: VALID UNTIL %s", got)
			}
		}},
	{name: "revocation statements",
		run: func(t *testing.T, l *attackLab, victim, _ string) (string, error) {
			_, err := l.db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: victim, Statements: dbplugin.Statements{
				Commands: []string{`DO $$ BEGIN EXECUTE format('DROP ROLE %I', '{{name}}'); END $$;`}}})
			return victim, err
		},
		check: func(t *testing.T, l *attackLab, user, _ string) {
			if roleExists(t, l.a, user) {
				t.Errorf("the revocation statements did not drop %s", user)
			}
		}},
}

// isMember reports whether user is a member of group.
func isMember(t *testing.T, l *attackLab, user, group string) bool {
	t.Helper()
	var member bool
	if err := l.a.QueryRow(testCtx(t), "SELECT pg_has_role($1, $2, 'MEMBER')", user, group).Scan(&member); err != nil {
		t.Fatal(err)
	}
	return member
}

// TestSearchPathSafeForOperatorStatements: the operator's creation, renewal
// and revocation statements run as the admin, and call format() unqualified;
// a dynamic user that may create in public plants format(text, text) and
// format(text, text, text) there. The statements' path leaves out every
// schema others may create in, so pg_catalog's format runs, and the
// statements still do their work.
func TestSearchPathSafeForOperatorStatements(t *testing.T) {
	for _, tc := range operatorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := formatPlantedLab(t)
			group := "grp-" + randSuffix()
			execSQL(t, l.a, "CREATE ROLE "+render.QuoteIdent(group))
			t.Cleanup(func() { execSQL(t, l.a, "DROP ROLE IF EXISTS "+render.QuoteIdent(group)) })
			victim := dbtesting.AssertNewUser(t, l.db, newUserReq(createStmt)).Username
			user, err := tc.run(t, l, victim, group)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if isSuper(t, l.a, l.acct) {
				t.Errorf("the %s ran the format() planted in public as the admin: %s is now a superuser", tc.name, l.acct)
			}
			tc.check(t, l, user, group)
		})
	}
}

// TestSearchPathLeavesOutWhatRevokedUsersLeft: a dynamic user given CREATE
// on public plants public.format(text, text). Its revocation hands the
// function to the holding role and takes the user's CREATE away, so public
// passes the "no one but its owner may create in it" rule again; the
// function is still there, a better match than pg_catalog's format(text,
// VARIADIC "any"), and the next creation statements that call format() with
// two text arguments would run it as the (superuser) admin. A schema that
// holds another role's routine, or anything of the receiving role, stays
// off the path.
func TestSearchPathLeavesOutWhatRevokedUsersLeft(t *testing.T) {
	l := formatPlantedLab(t)
	revokeDropped(t, l.db, l.a, l.user)
	if path := safePathOf(t, l.a); strings.Contains(path, "public") {
		t.Errorf("the operator statements' path is %q: public holds a format() a revoked user left", path)
	}
	group := "grp-" + randSuffix()
	execSQL(t, l.a, "CREATE ROLE "+render.QuoteIdent(group))
	t.Cleanup(func() { execSQL(t, l.a, "DROP ROLE IF EXISTS "+render.QuoteIdent(group)) })
	req := newUserReq(createStmt, `DO $$ BEGIN EXECUTE format('GRANT %I TO %I', '`+group+`', '{{name}}'); END $$;`)
	_ = dbtesting.AssertNewUser(t, l.db, req)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("the next creation statements ran the format() a revoked user left in public as the admin: %s is now a superuser", l.acct)
	}
}

// TestSearchPathLeavesOutSchemasWithOthersRoutines: a role that could once
// create in public, and no longer may, leaves its format(text, text) there;
// public stays off the operator statements' path while the function is
// there.
func TestSearchPathLeavesOutSchemasWithOthersRoutines(t *testing.T) {
	l := newAttackLab(t, nil)
	plantFormat(t, l.c, l.acct)
	execSQL(t, l.a, "REVOKE CREATE ON SCHEMA public FROM "+render.QuoteIdent(l.user))
	if path := safePathOf(t, l.a); strings.Contains(path, "public") {
		t.Errorf("the operator statements' path is %q: public holds %s's format(text, text)", path, l.user)
	}
}

// TestSearchPathOfStatementsThatRunNoCode: statements that only create,
// alter, grant and comment (render.Split) run with the session's own
// search_path, as with the built-in plugin: nothing in them is run, so a
// schema others may create in can only decide which table a GRANT names. An
// unqualified table in the application's own schema (selected with options
// in connection_url), or in public of a database the application owns, is
// found, also after a DO block in the same string; the statements of
// TestSearchPathSafeForOperatorStatements, which call format(), still run
// with pg_catalog, pg_temp.
func TestSearchPathOfStatementsThatRunNoCode(t *testing.T) {
	a := admin(t)
	owner := "appowner_" + randSuffix()
	schema := "appschema_" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %[1]s NOLOGIN; CREATE SCHEMA %[2]s AUTHORIZATION %[1]s;
		CREATE TABLE %[2]s.orders (id int); ALTER TABLE %[2]s.orders OWNER TO %[1]s;`, render.QuoteIdent(owner), render.QuoteIdent(schema)))
	t.Cleanup(func() {
		execSQL(t, a, fmt.Sprintf(`DROP SCHEMA IF EXISTS %s CASCADE; DROP ROLE IF EXISTS %s`, render.QuoteIdent(schema), render.QuoteIdent(owner)))
	})
	t.Run("the application's schema", func(t *testing.T) {
		db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL("") + "&options=" + url.QueryEscape("-c search_path="+schema)})
		// In one string with a DO block, which runs with pg_catalog,
		// pg_temp: the path is switched statement by statement.
		req := newUserReq(createStmt, `DO $$ BEGIN EXECUTE format('ALTER ROLE %I CONNECTION LIMIT 3', '{{name}}'); END $$; GRANT USAGE ON SCHEMA `+render.QuoteIdent(schema)+` TO "{{name}}"; GRANT SELECT ON orders TO "{{name}}"; COMMENT ON TABLE orders IS 'read by {{name}}';`)
		user := dbtesting.AssertNewUser(t, db, req).Username
		var ok bool
		if err := a.QueryRow(testCtx(t), "SELECT has_table_privilege($1, $2, 'SELECT')", user, schema+".orders").Scan(&ok); err != nil || !ok {
			t.Errorf("%s may not read %s.orders (%v)", user, schema, err)
		}
		revokeDropped(t, db, a, user)
	})
	t.Run("public of a database the application owns", func(t *testing.T) {
		name, _ := isolatedDB(t)
		execSQL(t, a, "ALTER DATABASE "+render.QuoteIdent(name)+" OWNER TO "+render.QuoteIdent(owner))
		c := connectAs(t, pg.SuperUser, pg.SuperPassword, name)
		execSQL(t, c, "CREATE TABLE public.orders (id int); ALTER TABLE public.orders OWNER TO "+render.QuoteIdent(owner))
		t.Cleanup(func() { execSQL(t, c, "DROP TABLE public.orders") })
		db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(name)})
		user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt, `GRANT SELECT ON orders TO "{{name}}";`)).Username
		if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSearchPathCannotBeOvertakenByAConcurrentGrant: a search_path chosen
// once, at the start of the request's transaction, from the schemas no one
// else could create in then, can be overtaken: every later statement
// resolves its names in the catalogs as they are when it runs. A schema that no one else could
// create in when the path was chosen can be writable by the time a
// statement calls format(): another lease's creation statements (a
// "migrator" role that grants CREATE on public) commit meanwhile, and that
// lease plants format(text, text). The attacker widens the window at will:
// any login with a privilege on a table the statements GRANT on holds the
// table's catalog row with an open GRANT (which grants nothing), and the
// request waits up to lock_timeout. Statements that run code therefore run
// with pg_catalog, pg_temp, which no such grant can change.
func TestSearchPathCannotBeOvertakenByAConcurrentGrant(t *testing.T) {
	dbname, a := isolatedDB(t)
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname), "lock_timeout": "20s"})
	acct, _ := attackerAccount(t, a)
	execSQL(t, a, `CREATE TABLE public.t (x int)`)
	// The "reader" role: a grant on a table, then a statement that calls
	// format() unqualified (as TestSearchPathSafeForOperatorStatements).
	reader := func() dbplugin.NewUserRequest {
		return newUserReq(createStmt, `GRANT SELECT ON public.t TO "{{name}}";`, `SELECT format('%I', '{{name}}');`)
	}
	// The attacker's reader lease holds public.t's row.
	k := reader()
	kUser := dbtesting.AssertNewUser(t, db, k).Username
	kc := connectAs(t, kUser, k.Password, dbname)
	execSQL(t, kc, "BEGIN")
	execSQL(t, kc, "GRANT SELECT ON public.t TO PUBLIC")

	// Any reader request now chooses its path (public is on it: no one may
	// create there), then waits on public.t's row.
	done := make(chan error, 1)
	go func() {
		_, err := db.NewUser(testCtx(t), reader())
		done <- err
	}()
	waitFor(t, func() bool {
		var n int
		_ = a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = $1 AND pid <> $2`, dbname, kc.PgConn().PID()).Scan(&n)
		return n > 0
	})
	// Meanwhile a migrator lease, which may create in public, is created,
	// and plants format(text, text).
	m := newUserReq(createStmt, `GRANT CREATE ON SCHEMA public TO "{{name}}";`)
	mUser := dbtesting.AssertNewUser(t, db, m).Username
	mc := connectAs(t, mUser, m.Password, dbname)
	plantFormat(t, mc, acct)
	execSQL(t, kc, "ROLLBACK")
	err := <-done
	t.Logf("reader request: %v", err)
	if isSuper(t, a, acct) {
		t.Errorf("the reader request's statements ran the format() %s planted in public after the path was chosen: %s is now a superuser", mUser, acct)
	}
}

// TestSearchPathSwitchingIgnoresValues: a statement that sets search_path
// itself ends the plugin's switching, but only as a word of the statement:
// a display name "search_path" (whoever logs in to Vault may shape it)
// ends up in the username, inside quotes, and the next statement that calls
// format() still runs with pg_catalog, pg_temp.
func TestSearchPathSwitchingIgnoresValues(t *testing.T) {
	l := newAttackLab(t, map[string]interface{}{"username_template": "{{ .DisplayName }}-{{ random 8 }}"})
	plantFormat(t, l.c, l.acct)
	req := newUserReq(createStmt, `SELECT format('%I', '{{name}}');`)
	req.UsernameConfig.DisplayName = "search_path"
	user := dbtesting.AssertNewUser(t, l.db, req).Username
	if !strings.Contains(user, "search_path") {
		t.Fatalf("username %q does not carry the display name", user)
	}
	if isSuper(t, l.a, l.acct) {
		t.Errorf("a display name %q stopped the plugin pinning the path: the planted format() ran as the admin", req.UsernameConfig.DisplayName)
	}
}

// TestSearchPathPinnedAfterRoleSearchPathSettings: any statement that holds the word
// search_path ends the switching (pathSwitches), also one that does not set
// this session's path. The common creation statement ALTER ROLE "{{name}}"
// SET search_path = … (the new user's default for its own later sessions)
// runs no code, so the session's path was restored for it, and with the
// switching ended every later statement that runs code keeps that path
// (public on it) and calls the format() a dynamic user planted there, as the
// admin. (A word in a statement that runs code, such as CREATE FUNCTION …
// SET search_path = pg_catalog, leaves the path pinned instead.)
func TestSearchPathPinnedAfterRoleSearchPathSettings(t *testing.T) {
	for _, tc := range []struct{ name, stmt string }{
		{"ALTER ROLE name SET search_path", `ALTER ROLE "{{name}}" SET search_path = "$user", public;`},
		{"ALTER USER name SET search_path TO", `ALTER USER "{{name}}" SET search_path TO app;`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := formatPlantedLab(t)
			req := newUserReq(createStmt, tc.stmt, `SELECT format('%I', '{{name}}');`)
			resp, err := l.db.NewUser(testCtx(t), req)
			if err != nil {
				t.Fatalf("NewUser: %v", err)
			}
			t.Logf("user %s", resp.Username)
			if isSuper(t, l.a, l.acct) {
				t.Errorf("%q (which does not set this session's path) ended the switching: the SELECT after it ran the format() planted in public as the admin: %s is now a superuser", tc.stmt, l.acct)
			}
		})
	}
}

// TestSearchPathPinnedBeforeEveryStatementThatRunsCode: pathSwitches pins the
// path only where the statements go from "runs no code" to "runs code",
// and assumes it stays pinned from one code statement to the next. A code
// statement that undoes the SET LOCAL leaves the next one on the session's
// path: COMMIT (also END, ROLLBACK, PREPARE TRANSACTION) ends the
// transaction the pin was set in, RESET ALL resets search_path without the
// word, and a routine that calls set_config('search_path', …, true) keeps
// its setting after it returns. (Separate statements of the list happen to
// be re-pinned: Render's "\n;\n" after a statement that already ends in ";"
// makes an empty statement, which counts as running no code. One string
// with several statements, as creation_statements often are, has none.)
func TestSearchPathPinnedBeforeEveryStatementThatRunsCode(t *testing.T) {
	for _, tc := range []struct{ name, stmts string }{
		{"COMMIT", `BEGIN; ` + createStmt + ` COMMIT; SELECT format('%I', '{{name}}');`},
		{"RESET ALL", createStmt + ` RESET ALL; SELECT format('%I', '{{name}}');`},
		{"a routine that sets search_path", createStmt + ` SELECT pg_catalog.set_config('search' || '_path', pg_catalog.current_setting('pgvault.session_path'), true); SELECT format('%I', '{{name}}');`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := formatPlantedLab(t)
			resp, err := l.db.NewUser(testCtx(t), newUserReq(tc.stmts))
			t.Logf("NewUser: %s %v", resp.Username, err)
			if isSuper(t, l.a, l.acct) {
				t.Errorf("the SELECT after %s ran with the session's path (the plugin did not pin it again): the format() planted in public ran as the admin: %s is now a superuser", tc.name, l.acct)
			}
		})
	}
}

// TestSearchPathPinnedWhereEventTriggersRun: GRANT on an object (and CREATE/ALTER/DROP
// USER MAPPING) fires ddl_command_start/ddl_command_end event triggers,
// whose functions run as the admin with the caller's search_path. A DBA's
// audit trigger that calls format() unqualified (a common pattern) runs the
// format() a dynamic user planted in public, because the plugin counts GRANT
// as a statement that "runs no code" and keeps the session's path for it.
func TestSearchPathPinnedWhereEventTriggersRun(t *testing.T) {
	l := formatPlantedLab(t)
	execSQL(t, l.a, `CREATE SCHEMA audit;
CREATE TABLE audit.ddl_log (what text);
CREATE TABLE public.orders (id int);
CREATE FUNCTION audit.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $f$
BEGIN
	INSERT INTO audit.ddl_log VALUES (format('%s', tg_tag));
END $f$;
CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION audit.log_ddl();`)
	req := newUserReq(createStmt, `GRANT SELECT ON public.orders TO "{{name}}";`)
	resp, err := l.db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	t.Logf("user %s", resp.Username)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("a GRANT the plugin counts as running no code fired the DBA's event trigger with the session's path: the format() planted in public ran as the admin: %s is now a superuser", l.acct)
	}
}
