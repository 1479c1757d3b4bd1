package postgres

// NewUser: creation statements run as written, values quoted for their
// context, errors that say what failed, rollback statements.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

func TestNewUser(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	execSQL(t, a, "CREATE TABLE IF NOT EXISTS newuser_orders (id int)")

	cases := []struct {
		name  string
		stmts []string
		check func(t *testing.T, user string)
	}{
		{"plain create with grant", []string{createStmt, `GRANT SELECT ON newuser_orders TO "{{name}}";`}, func(t *testing.T, user string) {
			var ok bool
			if err := a.QueryRow(testCtx(t), "SELECT has_table_privilege($1, 'newuser_orders', 'SELECT')", user).Scan(&ok); err != nil || !ok {
				t.Fatalf("grant missing: %v %v", ok, err)
			}
		}},
		{"DO block with END in lower case and semicolons", []string{`DO $$
begin
  if not exists (select 1 from pg_roles where rolname = '{{name}}') then
    create role "{{name}}" with login password '{{password}}' valid until '{{expiration}}';
  end if;
end
$$;`, `GRANT SELECT ON newuser_orders TO "{{name}}"; -- comment; with; semicolons`}, nil},
		{"semicolons inside literals and comments", []string{createStmt + `
/* a comment; with {{name}} inside; */
COMMENT ON ROLE "{{name}}" IS 'issued by vault; do not edit; it''s fine';`}, func(t *testing.T, user string) {
			if c, _ := roleComment(t, a, user); c != "issued by vault; do not edit; it's fine" {
				t.Fatalf("comment = %q", c)
			}
		}},
		{"function body with a nested dollar tag", []string{createStmt, `CREATE OR REPLACE FUNCTION pg_temp.f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END; $fn$;`}, nil},
		{"bare placeholders are quoted", []string{`CREATE ROLE {{name}} WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}};`}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := newUserReq(tc.stmts...)
			resp := dbtesting.AssertNewUser(t, db, req)
			assertLogin(t, resp.Username, req.Password)
			until := validUntil(t, a, resp.Username)
			if d := until.Sub(req.Expiration); d > time.Second || d < -time.Second {
				t.Fatalf("rolvaliduntil = %s, want %s", until, req.Expiration)
			}
			if tc.check != nil {
				tc.check(t, resp.Username)
			}
		})
	}
}

func TestNewUserQuotesValues(t *testing.T) {
	db := newDB(t, map[string]interface{}{
		"username_template": `{{ printf "v-%s\"x'y-%s" (.RoleName | truncate 8) (random 8) }}`,
	})
	req := newUserReq(createStmt, `COMMENT ON ROLE "{{name}}" IS 'for {{name}}';`)
	req.Password = `it's"a;pw\` + randSuffix()
	resp := dbtesting.AssertNewUser(t, db, req)
	// Quotes in a generated name are mapped to _ (see safeUsername); the
	// password keeps every character.
	if !strings.Contains(resp.Username, `_x_y`) {
		t.Fatalf("username %q: quotes not mapped to _", resp.Username)
	}
	assertLogin(t, resp.Username, req.Password)
}

func TestNewUserErrors(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	cases := []struct {
		name    string
		stmts   []string
		wantErr string
	}{
		{"no statements", nil, "no creation_statements"},
		{"blank statements", []string{"  ", "\n"}, "no creation_statements"},
		{"unknown placeholder", []string{`CREATE ROLE "{{nmae}}";`}, "unknown placeholder {{nmae}}"},
		{"failing second statement leaves no role", []string{createStmt, `GRANT SELECT ON no_such_table TO "{{name}}";`}, "no_such_table"},
		{"failing statement inside a DO block leaves no role", []string{createStmt, `DO $$ BEGIN RAISE EXCEPTION 'boom'; END $$;`}, "boom"},
		{"error quoting the password is redacted", []string{createStmt, `DO $$ BEGIN RAISE EXCEPTION 'pw is %', {{password}}; END $$;`}, "pw is [redacted]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := newUserReq(tc.stmts...)
			req.UsernameConfig.RoleName = "err" + randSuffix()
			_, err := db.NewUser(testCtx(t), req)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), req.Password) {
				t.Fatalf("error leaks the password: %v", err)
			}
			var n int
			if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", "v-test-"+req.UsernameConfig.RoleName[:8]+"%").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d roles left behind after a failed creation", n)
			}
		})
	}
}

func TestNewUserRollbackStatements(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	execSQL(t, a, "CREATE TABLE IF NOT EXISTS rollback_log (who text)")
	// The rollback statement runs after the failed creation was undone; it
	// records the attempt, which is what rollback_statements are for.
	req := newUserReq(createStmt, `SELECT 1/0;`)
	req.UsernameConfig.RoleName = "rb" + randSuffix()[:6]
	req.RollbackStatements = dbplugin.Statements{Commands: []string{`INSERT INTO public.rollback_log VALUES ('{{name}}'); DROP ROLE IF EXISTS "{{name}}";`}}
	if _, err := db.NewUser(testCtx(t), req); err == nil {
		t.Fatal("creation should fail")
	}
	var n int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM rollback_log WHERE who LIKE $1", "v-test-"+req.UsernameConfig.RoleName+"-%").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rollback statements did not run: n=%d err=%v", n, err)
	}
}

// TestBackslashWithNonStandardStrings: an admin whose sessions default to
// standard_conforming_strings=off must still store a password with a
// backslash exactly (plaintext mode sends it inside '…').
func TestBackslashWithNonStandardStrings(t *testing.T) {
	needPG(t)
	a := admin(t)
	root := "scsoff-" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'scs-pw'`, render.QuoteIdent(root)))
	execSQL(t, a, fmt.Sprintf(`ALTER ROLE %s SET standard_conforming_strings = off`, render.QuoteIdent(root)))
	db := newDB(t, map[string]interface{}{"username": root, "password": "scs-pw", "password_authentication": "password"})
	req := newUserReq(createStmt)
	req.Password = `back\slash\b-` + randSuffix()
	resp := dbtesting.AssertNewUser(t, db, req)
	assertLogin(t, resp.Username, req.Password)
}

func TestNonASCIIPassword(t *testing.T) {
	db := newDB(t, nil)
	req := newUserReq(createStmt)
	// A non-ASCII space and characters NFC and NFKC agree on: pgx's client
	// normalizes with NFC (precis), PostgreSQL with NFKC (SASLprep).
	req.Password = "Pässwörd\u00a0日本-" + randSuffix()
	resp := dbtesting.AssertNewUser(t, db, req)
	assertLogin(t, resp.Username, req.Password)
}

// TestNewUserRefusesTheRolesRevocationNeeds: a username template that lets
// the display name be the whole name could make a dynamic user named after
// the holding role (every hand-over would then refuse it, and it could
// never be revoked), after reassign_owned_to, or after the admin. NewUser
// refuses those names, saying why, before it runs any statement.
func TestNewUserRefusesTheRolesRevocationNeeds(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "keeper", "")
	for _, tc := range []struct {
		name   string
		extra  map[string]interface{}
		target string
	}{
		{"the holding role", nil, holdingRole},
		{"the admin", nil, pg.SuperUser},
		{"reassign_owned_to", map[string]interface{}{"reassign_owned_to": keeper}, keeper},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := map[string]interface{}{"username_template": "{{.DisplayName}}"}
			maps.Copy(cfg, tc.extra)
			db := newDB(t, cfg)
			req := newUserReq(createStmt)
			req.UsernameConfig.DisplayName = tc.target
			_, err := db.NewUser(testCtx(t), req)
			t.Logf("NewUser named %q: %v", tc.target, err)
			if err == nil || !strings.Contains(err.Error(), "username_template") || strings.Contains(err.Error(), "already exists") {
				t.Errorf("NewUser named %q: error = %v, want a refusal that names username_template", tc.target, err)
			}
			var login bool
			if err := a.QueryRow(testCtx(t), "SELECT coalesce((SELECT rolcanlogin FROM pg_roles WHERE rolname = $1), false)", tc.target).Scan(&login); err != nil {
				t.Fatal(err)
			}
			if login && tc.target != pg.SuperUser {
				_, _ = a.Exec(testCtx(t), "DROP ROLE IF EXISTS "+render.QuoteIdent(tc.target))
				t.Fatalf("NewUser made %q a login role", tc.target)
			}
		})
	}
}

// TestStatementsInTheBuiltinsOtherForms: Vault's built-in plugin reads a
// statement given as base64, as a JSON array of statements, or as base64 of
// such an array (strutil.ParseArbitraryStringSlice); they work here too, in
// creation and revocation.
func TestStatementsInTheBuiltinsOtherForms(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	grant := `ALTER ROLE "{{name}}" CONNECTION LIMIT 5;`
	js, _ := json.Marshal([]string{createStmt, grant})
	for name, stmt := range map[string]string{
		"base64":      base64.StdEncoding.EncodeToString([]byte(createStmt + " " + grant)),
		"json array":  string(js),
		"base64 json": base64.StdEncoding.EncodeToString(js),
	} {
		t.Run(name, func(t *testing.T) {
			req := newUserReq(stmt)
			user := dbtesting.AssertNewUser(t, db, req).Username
			assertLogin(t, user, req.Password)
			var limit int
			if err := a.QueryRow(testCtx(t), "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", user).Scan(&limit); err != nil || limit != 5 {
				t.Errorf("the second statement did not run: connection limit %d (%v)", limit, err)
			}
			rev := base64.StdEncoding.EncodeToString([]byte(`DROP ROLE IF EXISTS "{{name}}";`))
			if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user, Statements: dbplugin.Statements{Commands: []string{rev}}}); err != nil {
				t.Fatalf("base64 revocation_statements: %v", err)
			}
			if roleExists(t, a, user) {
				t.Fatalf("%s survived its revocation", user)
			}
		})
	}
}

// TestStatementsWithSavepoints: the built-in runs a role's statements in an
// explicit transaction, where SAVEPOINT, RELEASE and ROLLBACK TO work; so
// do they here. A failure after a savepoint still undoes the whole
// creation, and the pooled connection it ran on serves the next request.
func TestStatementsWithSavepoints(t *testing.T) {
	db := newDB(t, map[string]interface{}{"max_open_connections": 1})
	a := admin(t)
	req := newUserReq(createStmt, `SAVEPOINT grants; COMMENT ON ROLE "{{name}}" IS 'x'; ROLLBACK TO SAVEPOINT grants; RELEASE SAVEPOINT grants;`)
	resp, err := db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatalf("creation statements with SAVEPOINT (accepted by the built-in): %v", err)
	}
	assertLogin(t, resp.Username, req.Password)
	failing := newUserReq(createStmt, `SAVEPOINT s; RELEASE SAVEPOINT s; SELECT 1/0;`)
	if _, err := db.NewUser(testCtx(t), failing); err == nil {
		t.Fatal("a creation that divides by zero succeeded")
	}
	againReq := newUserReq(createStmt, `SAVEPOINT s;`)
	again := dbtesting.AssertNewUser(t, db, againReq)
	assertLogin(t, again.Username, againReq.Password)
	revokeDropped(t, db, a, resp.Username)
	revokeDropped(t, db, a, again.Username)
}

// TestUnknownPlaceholdersInTextKeptAsWritten: the built-in replaces only its
// own placeholders and leaves any other {{…}} as written; in a string's text
// so does this plugin (in a name it is refused as a likely misspelling).
func TestUnknownPlaceholdersInTextKeptAsWritten(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	req := newUserReq(createStmt, `COMMENT ON ROLE "{{name}}" IS 'owner: {{team}}';`)
	resp := dbtesting.AssertNewUser(t, db, req)
	if c, _ := roleComment(t, a, resp.Username); c != "owner: {{team}}" {
		t.Fatalf("comment = %q, want the text as written", c)
	}
	revokeDropped(t, db, a, resp.Username)
}

// TestMisspeltPlaceholderInTextIsRefused: kept as text, a misspelt
// {{Password}} in PASSWORD '…' would give the role the literal, guessable
// password "{{Password}}" while Vault hands out another: refused.
func TestMisspeltPlaceholderInTextIsRefused(t *testing.T) {
	db := newDB(t, nil)
	req := newUserReq(`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{Password}}' VALID UNTIL '{{expiration}}';`)
	if _, err := db.NewUser(testCtx(t), req); err == nil || !strings.Contains(err.Error(), "{{Password}}") {
		t.Fatalf("NewUser with PASSWORD '{{Password}}' = %v, want an error naming {{Password}}", err)
	}
}

// TestStatementsLeavingATransactionOpenAreCommitted: statements that open a
// transaction block and do not end it (a BEGIN without COMMIT) are
// committed, as the built-in's own commit commits them; the pool would
// otherwise discard the connection and roll them back, and NewUser would
// report a user that does not exist.
func TestStatementsLeavingATransactionOpenAreCommitted(t *testing.T) {
	a := admin(t)
	db := newDB(t, nil)
	req := newUserReq(createStmt, `BEGIN;`, `GRANT USAGE ON SCHEMA public TO "{{name}}";`)
	resp := dbtesting.AssertNewUser(t, db, req)
	if !roleExists(t, a, resp.Username) {
		t.Fatalf("NewUser succeeded with %q, which does not exist", resp.Username)
	}
	assertLogin(t, resp.Username, req.Password)
	revokeDropped(t, db, a, resp.Username)
}

// TestStatementsLeftOpenCommitWithTheSessionTag: the COMMIT of a block the
// statements left open carries the request's session tag, so that after a
// lost reply endSession finds the session still committing (here a deferred
// trigger waits for a lock) and the plugin answers what the database did.
func TestStatementsLeftOpenCommitWithTheSessionTag(t *testing.T) {
	needPG(t)
	a := admin(t)
	key := int32(time.Now().UnixNano() & 0x7fffffff)
	table := "slow_" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE TABLE public.%[1]s (x int);
CREATE FUNCTION public.%[1]s_trg() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(4242, %[2]d); RETURN NULL; END $f$;
CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON public.%[1]s DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.%[1]s_trg()`, table, key))
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), fmt.Sprintf("DROP TABLE IF EXISTS public.%[1]s; DROP FUNCTION IF EXISTS public.%[1]s_trg()", table))
	})
	db := newDB(t, nil)
	holder := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	if _, err := holder.Exec(testCtx(t), "SELECT pg_advisory_lock(4242, $1)", key); err != nil {
		t.Fatal(err)
	}
	res, user := newUserInBackground(t, db, newUserReq(createStmt, `BEGIN;`, fmt.Sprintf(`INSERT INTO public.%s VALUES (1);`, table)))
	var query string
	pid := waitLockWaiter(t, a, key, 0, res)
	if pid == 0 {
		t.Fatalf("NewUser returned (%v) before its deferred trigger waited for the lock", <-res)
	}
	err := a.QueryRow(testCtx(t), "SELECT query FROM pg_stat_activity WHERE pid = $1", pid).Scan(&query)
	if _, uerr := holder.Exec(testCtx(t), "SELECT pg_advisory_unlock(4242, $1)", key); uerr != nil {
		t.Fatal(uerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if cerr := <-res; cerr != nil {
		t.Fatalf("NewUser: %v", cerr)
	}
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(*user)) })
	if !strings.HasPrefix(query, "/* pgvault session ") {
		t.Fatalf("the server session committing the block the statements left open runs %q: no session tag, so endSession cannot find it after a lost reply", query)
	}
}
