package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// TestRenderedAttacksStayInert runs each attack the renderer once fell for
// against the real server: the value must land in its context exactly (the
// role's comment equals it) and no injected statement may run.
func TestRenderedAttacksStayInert(t *testing.T) {
	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	inject := fmt.Sprintf(`;CREATE TABLE %s();--`, pwn)
	tbl := "guarded_" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE TABLE %s (id int)", tbl))
	cases := []struct {
		name, user, password, stmt, want string
	}{
		{"E string continued by a standard segment", `a\'` + inject, "pw", "COMMENT ON ROLE \"{{name}}\" IS E'x'\n'{{name}}';", "x{{name}}"},
		{"carriage return ends a comment", `a'` + inject, "pw", "COMMENT ON ROLE \"{{name}}\" IS -- c\r'x\n{{name}}';", "x\n{{name}}"},
		{"EXECUTE string with a quoted identifier", `x", PUBLIC --`, "pw", fmt.Sprintf(`DO $$ BEGIN EXECUTE 'GRANT SELECT ON %s TO "{{name}}"'; END $$; COMMENT ON ROLE "{{name}}" IS 'ok';`, tbl), "ok"},
		{"EXECUTE string with a literal", "e", `'''; CREATE TABLE ` + pwn + `(); --\`, `DO $$ BEGIN EXECUTE 'COMMENT ON ROLE "{{name}}" IS ''{{password}}'''; END $$;`, "{{password}}"},
		{"EXECUTE string with bare values", "b", `x'` + inject, `DO $$ BEGIN EXECUTE 'COMMENT ON ROLE {{name}} IS {{password}}'; END $$;`, "{{password}}"},
		{"EXECUTE E string", "ee", `\'` + inject, `DO $$ BEGIN EXECUTE E'COMMENT ON ROLE "{{name}}" IS \'{{password}}\''; END $$;`, "{{password}}"},
		{"EXECUTE inside EXECUTE", "nn", `'"` + inject, `DO $$ BEGIN EXECUTE 'DO $i$ BEGIN EXECUTE ''COMMENT ON ROLE "{{name}}" IS ''''{{password}}''''''; END $i$'; END $$;`, "{{password}}"},
		{"dollar-quoted value", "dq", `it's \ "x"` + inject, `COMMENT ON ROLE "{{name}}" IS $${{password}}$$;`, "{{password}}"},
		{"UESCAPE", "ue", `!0041'` + inject, `COMMENT ON ROLE "{{name}}" IS U&'{{password}}' UESCAPE '!';`, "{{password}}"},
		{"qualified pg_catalog.format keeps a quote in the literal", "pf", `x'` + inject, `DO $$ BEGIN EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS ''{{password}}''', '{{name}}'); END $$;`, "{{password}}"},
		{"quoted, commented pg_catalog.format doubles percent", `50%s"`, `%1$s%%`, `DO $$ BEGIN EXECUTE "pg_catalog"./**/format('COMMENT ON ROLE "{{name}}" IS ''{{password}}'''); END $$;`, "{{password}}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := "ra-" + randSuffix() + "-" + tc.user
			vals := render.NewValues(user).WithPassword(tc.password)
			sql, err := render.Render([]string{`CREATE ROLE "{{name}}";`, tc.stmt}, vals)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_, _ = a.Exec(testCtx(t), fmt.Sprintf("REVOKE ALL ON %s FROM %s", tbl, render.QuoteIdent(user)))
				_, _ = a.Exec(testCtx(t), "DROP ROLE IF EXISTS "+render.QuoteIdent(user))
			})
			if err := execAtomic(testCtx(t), a, sql); err != nil {
				t.Fatalf("rendered SQL failed: %v\n%s", err, sql)
			}
			want := strings.NewReplacer("{{name}}", user, "{{password}}", tc.password).Replace(tc.want)
			comment, _, err := pgtest.RoleComment(testCtx(t), a, user)
			if err != nil {
				t.Fatalf("role %q: %v\n%s", user, err, sql)
			}
			if comment != want {
				t.Fatalf("comment = %q, want %q\n%s", comment, want, sql)
			}
		})
	}
	var n int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_class WHERE relname = $1", pwn).Scan(&n); err != nil || n != 0 {
		t.Fatalf("an injected statement ran: table %s exists (%v)", pwn, err)
	}
	var public bool
	if err := a.QueryRow(testCtx(t), "SELECT EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) x WHERE c.relname = $1 AND x.grantee = 0)", tbl).Scan(&public); err != nil || public {
		t.Fatalf("a name granted the table to PUBLIC (%v)", err)
	}
}

// TestHostileDisplayNames issues credentials for display names built to end
// quoting contexts: each user must be created with a safe name, log in,
// renew and be revoked.
func TestHostileDisplayNames(t *testing.T) {
	db := newDB(t, map[string]interface{}{"username_template": `{{ printf "h-%s-%s" .DisplayName (random 6) | truncate 63 }}`})
	a := admin(t)
	for _, display := range []string{`a"b`, `x'y`, `back\slash`, `$pgvault$`, `$$`, "new\nline\rcr", `postgres", PUBLIC --`, `E'\'`, `a\';CREATE TABLE x();--`, "nul\x00byte", "\u2028sep"} {
		t.Run(fmt.Sprintf("%q", display), func(t *testing.T) {
			req := newUserReq(createStmt, `DO $$ BEGIN EXECUTE 'COMMENT ON ROLE "{{name}}" IS ' || quote_literal('{{name}}'); END $$;`)
			req.UsernameConfig.DisplayName = display
			resp, err := db.NewUser(testCtx(t), req)
			if err != nil {
				t.Fatalf("NewUser: %v", err)
			}
			user := resp.Username
			if strings.ContainsAny(user, "\"'\\$\n\r\x00") || strings.ContainsRune(user, '\u2028') {
				t.Fatalf("username %q holds a character that can end a quoting context", user)
			}
			assertLogin(t, user, req.Password)
			if comment, _ := roleComment(t, a, user); comment != user {
				t.Fatalf("comment = %q, want %q", comment, user)
			}
			exp := time.Now().Add(2 * time.Hour).Truncate(time.Second)
			if _, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: user, Expiration: &dbplugin.ChangeExpiration{NewExpiration: exp}}); err != nil {
				t.Fatalf("renewing %q: %v", user, err)
			}
			if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user}); err != nil {
				t.Fatalf("revoking %q: %v", user, err)
			}
			if roleExists(t, a, user) {
				t.Fatalf("role %q survived revocation", user)
			}
		})
	}
}

// TestRenderQuotedLanguageNameBodyRunsAsCode: on the server, a value in the
// body after a quoted language name (DO LANGUAGE 'plpgsql' $$…$$) stays a
// value; internal/sqlrender's TestRenderQuotedLanguageNameBodyAsCode pins
// the rendered text.
func TestRenderQuotedLanguageNameBodyRunsAsCode(t *testing.T) {
	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	user := "ql-" + randSuffix()
	password := fmt.Sprintf(`x'); CREATE TABLE %s(); END; --`, pwn)
	sql, err := render.Render([]string{
		`CREATE ROLE "{{name}}";`,
		`DO LANGUAGE 'plpgsql' $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', '{{name}}', '{{password}}'); END $$;`,
	}, render.NewValues(user).WithPassword(password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user))
		_, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS "+render.QuoteIdent(pwn))
	})
	assertCommentIsPassword(t, a, sql, pwn, user, password)
}

// assertCommentIsPassword runs rendered SQL that comments on user with
// password, and checks that the password stayed a value: no table pwn was
// made by it, and the comment holds it exactly.
func assertCommentIsPassword(t *testing.T, a *pgxpool.Pool, sql, pwn, user, password string) {
	t.Helper()
	err := execAtomic(testCtx(t), a, sql)
	var n int
	if qerr := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_class WHERE relname = $1", pwn).Scan(&n); qerr != nil || n != 0 {
		t.Fatalf("a password ran its own SQL (table %s exists)\n%s", pwn, sql)
	}
	if err != nil {
		t.Fatalf("rendered SQL failed: %v\n%s", err, sql)
	}
	if comment, _ := roleComment(t, a, user); comment != password {
		t.Fatalf("comment = %q, want the password\n%s", comment, sql)
	}
}

// TestRenderRefusesConformingStringsOffInRequest: PostgreSQL lexes a query
// string whole before running it, but code in strings (DO bodies, EXECUTE
// strings) is lexed when it runs, with the settings of that moment. A
// statement that turns standard_conforming_strings off would make the
// backslash of a value in a '…' string in later code an escape the renderer
// did not double: such a request is refused, saying why, or its values stay
// inert.
func TestRenderRefusesConformingStringsOffInRequest(t *testing.T) {
	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	user := "sc-" + randSuffix()
	password := fmt.Sprintf(`\'); CREATE TABLE %s(); END; --`, pwn)
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user))
		_, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS "+render.QuoteIdent(pwn))
	})
	for _, off := range []string{
		`SET standard_conforming_strings = off;`,
		`SET LOCAL Standard_Conforming_Strings TO 'off';`,
		`SELECT set_config('standard_conforming_strings', 'off', true);`,
	} {
		sql, err := render.Render([]string{
			`CREATE ROLE "{{name}}";`,
			off,
			`DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', '{{name}}', '{{password}}'); END $$;`,
		}, render.NewValues(user).WithPassword(password))
		if err != nil {
			if !strings.Contains(err.Error(), "standard_conforming_strings") {
				t.Errorf("%s: error does not say why: %v", off, err)
			}
			continue
		}
		_ = execAtomic(testCtx(t), a, sql)
		var n int
		if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_class WHERE relname = $1", pwn).Scan(&n); err != nil || n != 0 {
			t.Fatalf("after %s a password ran its own SQL (table %s exists)\n%s", off, pwn, sql)
		}
	}
}

// TestRenderEscapesExecuteFormatStrings: the first argument of EXECUTE
// format(…) and a parenthesized EXECUTE (…) string are code like a bare
// EXECUTE string: a value there is escaped for every level, so a quote in a
// password (password_authentication=password) or a static username cannot
// end the literal the value stands in when the command runs, and a % in it
// is doubled for format.
func TestRenderEscapesExecuteFormatStrings(t *testing.T) {
	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS "+render.QuoteIdent(pwn)) })
	for _, tc := range []struct{ stmt, password string }{
		{`DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS ''{{password}}''', '{{name}}'); END $$;`, fmt.Sprintf(`x'; CREATE TABLE %s(); --`, pwn)},
		{`DO $$ BEGIN EXECUTE ('COMMENT ON ROLE "{{name}}" IS ''{{password}}'''); END $$;`, fmt.Sprintf(`x'; CREATE TABLE %s(); --`, pwn)},
		// format() reads a % in the value as a directive: a password
		// with %% was stored as another one than reported.
		{`DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS ''{{password}}''', '{{name}}'); END $$;`, `50%%-off`},
	} {
		stmt, password := tc.stmt, tc.password
		user := "ef-" + randSuffix()
		t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
		sql, err := render.Render([]string{`CREATE ROLE "{{name}}";`, stmt}, render.NewValues(user).WithPassword(password))
		if err != nil {
			t.Fatal(err)
		}
		assertCommentIsPassword(t, a, sql, pwn, user, password)
	}
}
