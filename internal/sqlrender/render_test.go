package sqlrender

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestRenderSQL(t *testing.T) {
	v := NewValues(`app"user'x`).WithPassword(`p'w"$$;--`).WithExpiration(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	cases := []struct {
		name, in, want, wantErr string
	}{
		{"identifier context", `CREATE ROLE "{{name}}";`, `CREATE ROLE "app""user'x";`, ""},
		{"username alias", `DROP ROLE "{{username}}";`, `DROP ROLE "app""user'x";`, ""},
		{"literal context", `PASSWORD '{{password}}'`, `PASSWORD 'p''w"$$;--'`, ""},
		{"escape-string literal", `E'{{password}}\n'`, `E'p''w"$$;--\n'`, ""},
		{"unicode-escape literal doubles backslashes", `U&'{{name}}'`, `U&'app"user''x'`, ""},
		{"bare name is quoted", `CREATE ROLE {{name}}`, `CREATE ROLE "app""user'x"`, ""},
		{"bare password is a literal", `PASSWORD {{password}}`, `PASSWORD 'p''w"$$;--'`, ""},
		{"expiration", `VALID UNTIL '{{expiration}}'`, `VALID UNTIL '2030-01-02 03:04:05+0000'`, ""},
		{"spaces inside braces", `"{{ name }}"`, `"app""user'x"`, ""},
		{"comments are left alone", "-- {{password}}\n/* {{password}} /* nested */ */ SELECT 1", "-- {{password}}\n/* {{password}} /* nested */ */ SELECT 1", ""},
		{"literal in a comment does not open a quote", "-- it's\n'{{name}}'", "-- it's\n'app\"user''x'", ""},
		{"doubled quotes stay inside the literal", `'a''{{name}}'`, `'a''app"user''x'`, ""},
		{"dollar body rendered as SQL", `DO $fn$ BEGIN EXECUTE 'x' || '{{name}}'; END $fn$`, `DO $fn$ BEGIN EXECUTE 'x' || 'app"user''x'; END $fn$`, ""},
		{"value may not close its dollar body", `DO $$ BEGIN PERFORM '{{password}}'; END $$`, "", "would end the dollar-quoted string"},
		{"positional parameters are not dollar tags", `SELECT $1, '{{name}}'`, `SELECT $1, 'app"user''x'`, ""},
		{"unknown placeholder", `{{nope}}`, "", "unknown placeholder"},
		{"unknown placeholder in a name", `CREATE ROLE "{{nmae}}"`, "", "unknown placeholder {{nmae}}"},
		{"unknown placeholder in a string is text", `COMMENT ON ROLE {{name}} IS 'owner: {{team}}'`, `COMMENT ON ROLE "app""user'x" IS 'owner: {{team}}'`, ""},
		{"unknown placeholder in a string in code is text", `DO $$ BEGIN RAISE NOTICE '{{team}} {{name}}'; END $$`, `DO $$ BEGIN RAISE NOTICE '{{team}} app"user''x'; END $$`, ""},
		{"misspelt password in a string", `PASSWORD '{{Password}}'`, "", "unknown placeholder {{Password}}"},
		{"misspelt password in a string, letters swapped", `PASSWORD '{{passwrod}}'`, "", "unknown placeholder {{passwrod}}"},
		{"part of a placeholder's name in a string", `COMMENT ON ROLE x IS '{{user}}'`, "", "unknown placeholder {{user}}"},
		{"placeholder after a brace in a string", `PASSWORD '{{{password}}}'`, `PASSWORD '{p''w"$$;--}'`, ""},
		{"placeholder-like words in text", `COMMENT ON ROLE x IS '{{namespace}} {{hostname}} {{team}}'`, `COMMENT ON ROLE x IS '{{namespace}} {{hostname}} {{team}}'`, ""},
		{"misspelt expiration in dollar-quoted text", `VALID UNTIL $${{expiraton}}$$`, "", "unknown placeholder {{expiraton}}"},
		{"unknown placeholder in dollar-quoted text", `COMMENT ON ROLE x IS $c${{team}}$c$`, `COMMENT ON ROLE x IS $c${{team}}$c$`, ""},
		{"array literals are not placeholders", `SELECT '{{1,2},{3,4}}'::int[], '{{1}}'::int[]`, `SELECT '{{1,2},{3,4}}'::int[], '{{1}}'::int[]`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderSQL(tc.in, v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), v.Password) {
					t.Fatalf("error leaks the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRenderMissingValues(t *testing.T) {
	_, err := renderSQL(`ALTER ROLE "{{name}}" PASSWORD '{{password}}'`, NewValues("u"))
	if err == nil || !strings.Contains(err.Error(), "{{password}} is not available") {
		t.Fatalf("error = %v", err)
	}
}

func TestRenderStatementsJoinsAfterComments(t *testing.T) {
	got, err := Render([]string{"SELECT 1 -- trailing comment", "", "SELECT 2"}, NewValues("u"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "-- trailing comment\n;") || !strings.Contains(got, "SELECT 2\n;") {
		t.Fatalf("statements joined badly: %q", got)
	}
}

// TestRenderContexts pins the escaping of every quoting context, nested code
// included, on hostile values.
func TestRenderContexts(t *testing.T) {
	v := NewValues(`n"'\$`).WithPassword(`p'\"$!`)
	cases := []struct{ name, in, want string }{
		{"E string continued by a standard segment", "E'a'\n'{{name}}'", "E'a'\n'n\"''\\\\$'"},
		{"continuation after a -- comment", "E'a' -- c\n  '{{name}}'", "E'a' -- c\n  'n\"''\\\\$'"},
		{"no continuation without a newline", "E'a' '{{name}}'", "E'a' 'n\"''\\$'"},
		{"no continuation across a block comment", "E'a'\n/* c */ '{{name}}'", "E'a'\n/* c */ 'n\"''\\$'"},
		{"bare carriage return ends a -- comment", "-- c\r'{{name}}'", "-- c\r'n\"''\\$'"},
		{"UESCAPE changes the escape character", `U&'{{password}}' UESCAPE '!'`, `U&'p''\"$!!' UESCAPE '!'`},
		{"U& identifier", `U&"{{name}}"`, `U&"n""'\\$"`},
		{"EXECUTE string: identifier inside", `DO $$ BEGIN EXECUTE 'GRANT r TO "{{name}}"'; END $$`, `DO $$ BEGIN EXECUTE 'GRANT r TO "n""''\$"'; END $$`},
		{"EXECUTE string: literal inside", `DO $$ BEGIN EXECUTE 'SELECT ''{{password}}'''; END $$`, `DO $$ BEGIN EXECUTE 'SELECT ''p''''\"$!'''; END $$`},
		{"EXECUTE string: bare name is quoted", `DO $$ BEGIN EXECUTE 'GRANT r TO {{name}}'; END $$`, `DO $$ BEGIN EXECUTE 'GRANT r TO "n""''\$"'; END $$`},
		{"EXECUTE E string", `DO $$ BEGIN EXECUTE E'SELECT \'{{password}}\''; END $$`, `DO $$ BEGIN EXECUTE E'SELECT ''p''''\\"$!'''; END $$`},
		{"EXECUTE dollar string", `DO $$ BEGIN EXECUTE $q$SELECT '{{password}}'$q$; END $$`, `DO $$ BEGIN EXECUTE $q$SELECT 'p''\"$!'$q$; END $$`},
		{"format argument is data", `DO $$ BEGIN EXECUTE format('DROP ROLE %I', '{{name}}'); END $$`, `DO $$ BEGIN EXECUTE format('DROP ROLE %I', 'n"''\$'); END $$`},
		{"dollar string as a value", `PASSWORD $q${{password}}$q$`, `PASSWORD $q$p'\"$!$q$`},
		{"DO LANGUAGE body is code", `DO LANGUAGE plpgsql $b$ BEGIN PERFORM {{password}}; END $b$`, `DO LANGUAGE plpgsql $b$ BEGIN PERFORM E'p''\\"$!'; END $b$`},
		{"function body is code", `CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT {{name}}::text'`, `CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT "n""''\$"::text'`},
		{"identifier ending in $ is not a dollar quote", `SELECT a$$ '{{name}}'`, `SELECT a$$ 'n"''\$'`},
		{"number then dollar quote", `SELECT 1$$ {{name}} $$`, `SELECT 1$$ n"'\$ $$`},
		{"bit string", `B'{{name}}'`, `B'n"''\$'`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderSQL(tc.in, v)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestRenderFormatStringSpellings: PostgreSQL reaches the same format()
// through a qualified, quoted or commented name, so the renderer must treat
// the format string of each spelling as it does that of format(: as code
// whose values have every % doubled. Read as a plain string, a quote in a
// value ends the literal EXECUTE runs, and a % is a directive.
func TestRenderFormatStringSpellings(t *testing.T) {
	v := NewValues(`a%Ib"`).WithPassword(`50%'off`)
	const (
		format = `'COMMENT ON ROLE "{{name}}" IS ''{{password}}'''`
		code   = `'COMMENT ON ROLE "a%%Ib""" IS ''50%%''''off'''`
		data   = `'COMMENT ON ROLE "a%Ib"" IS ''50%''off'''`
	)
	cases := []struct{ name, open, close, want string }{
		{"format doubles percent", `format(`, `, 1)`, code},
		{"qualified pg_catalog.format doubles percent", `pg_catalog.format(`, `, 1)`, code},
		{"quoted pg_catalog schema doubles percent", `"pg_catalog".format(`, `, 1)`, code},
		{"upper-case PG_CATALOG.FORMAT with a space doubles percent", `PG_CATALOG.FORMAT (`, `, 1)`, code},
		{"spaces around the dot double percent", `pg_catalog . format(`, `, 1)`, code},
		{"block comment after the dot doubles percent", `pg_catalog./**/format(`, `, 1)`, code},
		{"nested comment before the dot doubles percent", `pg_catalog/* a /* b */ c */.format(`, `, 1)`, code},
		{"line comment after the dot doubles percent", "pg_catalog.-- c\nformat(", `, 1)`, code},
		{"quoted format doubles percent", `"format"(`, `, 1)`, code},
		{"quoted schema and function double percent", `"pg_catalog"."format"(`, `, 1)`, code},
		{"U& spelling of format doubles percent", `U&"\0066ormat"(`, `, 1)`, code},
		{"database-qualified format doubles percent", `postgres.pg_catalog.format(`, `, 1)`, code},
		{"format in another schema doubles percent", `app.format(`, `, 1)`, code},
		{"parenthesised EXECUTE command doubles percent", `(pg_catalog.format(`, `, 1))`, code},
		{"parenthesised format string doubles percent", `pg_catalog.format((`, `), 1)`, code},
		{"quoted FORMAT is another function whose string is data", `"FORMAT"(`, `, 1)`, data},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const body = `DO $$ BEGIN EXECUTE %s; END $$`
			got, err := renderSQL(fmt.Sprintf(body, tc.open+format+tc.close), v)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(body, tc.open+tc.want+tc.close); got != want {
				t.Fatalf("\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestRenderRefusesEarlyDollarClose(t *testing.T) {
	for _, tc := range []struct{ in, password string }{
		{`PASSWORD $${{password}}$$`, `ab$$cd`},
		{`PASSWORD $${{password}}$$`, `abc$`},
		{`DO $$ BEGIN PERFORM '{{password}}$'; END $$`, `x$`},
		{`DO $x$ BEGIN EXECUTE 'SELECT ''{{password}}'''; END $x$`, `a$x$b`},
	} {
		_, err := renderSQL(tc.in, NewValues("u").WithPassword(tc.password))
		if err == nil || !strings.Contains(err.Error(), "dollar-quoted") {
			t.Errorf("%s with %q: error = %v", tc.in, tc.password, err)
		}
		if err != nil && strings.Contains(err.Error(), tc.password) {
			t.Errorf("error leaks the value: %v", err)
		}
	}
}

// TestRenderRefusesUnterminatedContexts: statements are joined for the
// server, so one that leaves a context open would swallow the next one,
// whose values were escaped for another context.
func TestRenderRefusesUnterminatedContexts(t *testing.T) {
	for _, first := range []string{`SELECT '`, `SELECT E'\'`, `SELECT "x`, `SELECT $q$ body`, `SELECT 1 /* open`, `DO $$ BEGIN EXECUTE 'SELECT ''; END $$`} {
		_, err := Render([]string{first, `CREATE ROLE "{{name}}" PASSWORD '{{password}}';`}, NewValues("u").WithPassword("p'w"))
		if err == nil || !strings.Contains(err.Error(), "unterminated") {
			t.Errorf("%s: error = %v, want an unterminated-context error", first, err)
		}
	}
	if _, err := Render([]string{"SELECT 1 -- a comment at the end"}, NewValues("u")); err != nil {
		t.Errorf("a trailing -- comment is refused: %v", err)
	}
}

// TestRenderRefusesValuesInOtherLanguages: the renderer escapes a value for
// SQL and PL/pgSQL code only. In a body written in another language
// (plpython3u, plperlu, plv8 …) its escaping would be wrong, so a
// placeholder there is refused, wherever the LANGUAGE clause stands and
// however it is spelt: comments are whitespace to PostgreSQL, and a clause
// in code inside a string is read as the server will read it. A LANGUAGE
// word that is not a clause (in a literal, in a comment) refuses nothing.
func TestRenderRefusesValuesInOtherLanguages(t *testing.T) {
	v := NewValues("v-app").WithPassword(`p"w`)
	const perl = `$$ my $n = "{{name}}"; $$`
	const plpgsql = `$$ BEGIN EXECUTE format('ALTER ROLE %I NOLOGIN', '{{name}}'); END $$`
	refused := []struct{ name, stmt string }{
		{"language after DO", `DO LANGUAGE plpython3u $$ plpy.execute("ALTER ROLE \"{{name}}\" PASSWORD '{{password}}'") $$`},
		{"quoted language name", `DO LANGUAGE 'plperlu' 'my $n = "{{name}}";'`},
		{"language after the body", `CREATE FUNCTION pg_temp.f() RETURNS void AS $$ plpy.notice("{{name}}") $$ LANGUAGE plpython3u`},
		{"escape-string language name", `CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE E'plv8' AS $$ plv8.elog(NOTICE, '{{password}}') $$`},
		{"block comment before the name", `DO LANGUAGE/**/plperlu ` + perl},
		{"line comment before the name", "DO LANGUAGE--c\nplperlu " + perl},
		{"two comments before a quoted name", `DO LANGUAGE/* a */ /* b */'plperlu' 'my $n = "{{name}}";'`},
		{"nested comment hiding an allowed name", `CREATE FUNCTION pg_temp.f() RETURNS void AS $$ plpy.notice("{{name}}") $$ LANGUAGE /* /* */ plpgsql */ plpython3u`},
		{"dollar-quoted language name", `DO LANGUAGE $l$plperlu$l$ ` + perl},
		// Quoted and string names keep their case: 'PLPGSQL' is not plpgsql
		// (a superuser may have made a language of that name).
		{"upper-case quoted name is another language", `DO LANGUAGE 'PLPGSQL' $$ BEGIN PERFORM '{{name}}'; END $$`},
		{"non-ASCII letter does not fold into plpgsql", "DO LANGUAGE plpgſql $$ BEGIN PERFORM '{{name}}'; END $$"},
		{"quoted name in code in a string", `DO $$ BEGIN EXECUTE 'CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE ''plperlu'' AS ''my $n = "{{name}}";'''; END $$`},
		{"name spelt with escapes in code", `DO $$ BEGIN EXECUTE E'CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE pl\x70erlu AS $f$ my $n = "{{name}}"; $f$'; END $$`},
		{"comment before the name in code", `DO $$ BEGIN EXECUTE 'CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE/**/plperlu AS ''my $n = "{{name}}";'''; END $$`},
		{"clause glued into an EXECUTE command", `DO $$ BEGIN EXECUTE 'CREATE FUNCTION pg_temp.f() RETURNS void' || ' LANGUAGE plperlu AS ' || quote_literal('my $n = "{{name}}";'); END $$`},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			_, err := Render([]string{tc.stmt}, v)
			if err == nil || !strings.Contains(err.Error(), "only for SQL and PL/pgSQL") {
				t.Fatalf("%s\nrendered, error %v; want a refusal naming the language", tc.stmt, err)
			}
		})
	}
	accepted := []struct{ name, stmt string }{
		{"plpgsql body", `DO LANGUAGE plpgsql ` + plpgsql},
		{"DO without LANGUAGE", `DO $$ BEGIN EXECUTE 'ALTER ROLE "{{name}}" NOLOGIN'; END $$`},
		{"sql body", `CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql AS $$ SELECT '{{name}}' $$`},
		{"values outside the other-language body", `CREATE FUNCTION pg_temp.f() RETURNS void AS $$ plpy.notice("hi") $$ LANGUAGE plpython3u; COMMENT ON ROLE "{{name}}" IS 'x'`},
		{"upper-case unquoted PLPGSQL", `DO LANGUAGE PLPGSQL ` + plpgsql},
		{"quoted plpgsql", `DO LANGUAGE "plpgsql" ` + plpgsql},
		{"dollar-quoted plpgsql", `DO LANGUAGE $l$plpgsql$l$ ` + plpgsql},
		{"other language in a comment before plpgsql", `DO LANGUAGE /* plperlu */ plpgsql ` + plpgsql},
		{"LANGUAGE in a string literal", `COMMENT ON ROLE "{{name}}" IS 'written in LANGUAGE plperlu'; DO ` + plpgsql},
		{"LANGUAGE in a line comment", "-- not LANGUAGE plperlu\nDO " + plpgsql},
		{"LANGUAGE in a comment in the body", `DO $$ BEGIN /* LANGUAGE plperlu */ EXECUTE format('ALTER ROLE %I NOLOGIN', '{{name}}'); END $$`},
	}
	for _, tc := range accepted {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			if _, err := Render([]string{tc.stmt}, v); err != nil {
				t.Fatalf("%s\nrefused: %v", tc.stmt, err)
			}
		})
	}
}

// TestRenderRefusesPlaceholderAsLanguage: a value must not choose the
// language a body runs in. Bare, LANGUAGE {{name}} even made the body that
// follows plain data, so a value in it was refused nowhere.
func TestRenderRefusesPlaceholderAsLanguage(t *testing.T) {
	v := NewValues("plperlu").WithPassword(`p'w`)
	for _, tc := range []struct{ name, stmt string }{
		{"bare placeholder names the language", `DO LANGUAGE {{name}} $$ my $p = '{{password}}'; $$`},
		{"quoted placeholder names the language", `DO LANGUAGE '{{name}}' $$ BEGIN NULL; END $$`},
		{"placeholder in a quoted identifier names the language", `CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE "{{name}}" AS $$ SELECT 1 $$`},
		{"placeholder names the language of code in a string", `DO $$ BEGIN EXECUTE 'DO LANGUAGE {{name}} $i$ BEGIN NULL; END $i$'; END $$`},
		{"placeholder names a language after another one", `DO LANGUAGE plpython3u $$ pass $$; DO LANGUAGE {{name}} $$ BEGIN NULL; END $$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render([]string{tc.stmt}, v)
			if err == nil || !strings.Contains(err.Error(), "a placeholder names the language") {
				t.Fatalf("%s\nrendered, error %v; want a refusal", tc.stmt, err)
			}
			if strings.Contains(err.Error(), v.Password) || strings.Contains(err.Error(), v.Username) {
				t.Fatalf("error leaks a value: %v", err)
			}
		})
	}
}

// TestRenderQuotedLanguageNameBodyAsCode: DO takes its language as a name or
// a string (DO LANGUAGE 'plpgsql' $$…$$, the quoted form older scripts use).
// The body after a quoted language name is code, like the body after a bare
// one: a value in it is escaped for PL/pgSQL, not pasted verbatim.
func TestRenderQuotedLanguageNameBodyAsCode(t *testing.T) {
	v := NewValues(`n"'`).WithPassword(`p'`)
	for _, tc := range []struct{ in, want string }{
		{`DO LANGUAGE 'plpgsql' $$ BEGIN PERFORM '{{password}}', {{name}}; END $$`, `DO LANGUAGE 'plpgsql' $$ BEGIN PERFORM 'p''', "n""'"; END $$`},
		{`DO LANGUAGE E'plpgsql' 'BEGIN PERFORM ''{{password}}''; END'`, `DO LANGUAGE E'plpgsql' 'BEGIN PERFORM ''p''''''; END'`},
	} {
		got, err := renderSQL(tc.in, v)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("\n got %s\nwant %s", got, tc.want)
		}
	}

}

func TestDollarQuote(t *testing.T) {
	for _, body := range []string{
		"", "x", "$pgvault$", "a$pgvault$b$pgvault_1$c", "ends $pgvault", "ends $", "$pgvault_1", "$$",
	} {
		q := DollarQuote(body)
		end := strings.Index(q[1:], "$") + 2
		tag := q[:end]
		if !strings.HasPrefix(tag, "$pgvault") || !strings.HasSuffix(q, tag) {
			t.Fatalf("DollarQuote(%q) = %q: not wrapped in one tag", body, q)
		}
		// PostgreSQL ends the string at the first closing tag after the
		// opening one: it must be the last one.
		if i := strings.Index(q[len(tag):], tag); i != len(body) {
			t.Fatalf("DollarQuote(%q) = %q: the body closes the quote early", body, q)
		}
		if q[len(tag):len(q)-len(tag)] != body {
			t.Fatalf("DollarQuote(%q) = %q: body changed", body, q)
		}
	}
}
