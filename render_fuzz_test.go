package postgres

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// fuzzContexts set a role's comment to the password through every quoting
// context the renderer knows, the name standing in another context each time.
// The comment must then equal the password exactly: any escape from a quote
// would change it, fail, or run other SQL.
var fuzzContexts = []string{
	`COMMENT ON ROLE {{name}} IS '{{password}}';`,
	`COMMENT ON ROLE U&"{{name}}" IS E'{{password}}';`,
	`COMMENT ON ROLE "{{name}}" IS {{password}};`,
	"COMMENT ON ROLE \"{{name}}\" IS E'' -- c\r\n  '{{password}}';",
	"COMMENT ON ROLE \"{{name}}\" IS -- c\r'{{password}}';",
	`COMMENT ON ROLE "{{name}}" IS U&'{{password}}' UESCAPE '!';`,
	`DO $fz$ BEGIN EXECUTE 'COMMENT ON ROLE "{{name}}" IS ''{{password}}'''; END $fz$;`,
	`DO $fz$ BEGIN EXECUTE E'COMMENT ON ROLE {{name}} IS {{password}}'; END $fz$;`,
	`DO $fz$ BEGIN EXECUTE $q$COMMENT ON ROLE U&"{{name}}" IS E'{{password}}'$q$; END $fz$;`,
	`DO $fz$ BEGIN EXECUTE 'DO $i$ BEGIN EXECUTE ''COMMENT ON ROLE "{{name}}" IS ''''{{password}}''''''; END $i$'; END $fz$;`,
	`DO $fz$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', '{{name}}', '{{password}}'); END $fz$;`,
	`DO $fz$ BEGIN EXECUTE "pg_catalog"./**/format('COMMENT ON ROLE "{{name}}" IS ''{{password}}'''); END $fz$;`,
	`COMMENT ON ROLE "{{name}}" IS $d${{password}}$d$;`,
}

// FuzzRenderedValuesStayInTheirQuotes renders hostile names and passwords
// into every context above and runs the result on the real server.
// `make fuzz` explores further; `make test` runs the seeds and a short fuzz.
func FuzzRenderedValuesStayInTheirQuotes(f *testing.F) {
	for _, seed := range [][2]string{
		{`plain`, `plain`},
		{`a"b`, `x'y`},
		{`"; DROP ROLE postgres; --`, `'); DROP TABLE x; --`},
		{`\`, `\'`},
		{`/* c`, `-- c`},
		{`$x$`, `$x$`},
		{`{{name}}`, `{{password}}`},
		{`ä ß 日本`, "tab\there\nnewline\rcr"},
		{`E'`, `E'\''`},
		{`a\';CREATE TABLE x();--`, `''''`},
		{`postgres", PUBLIC --`, `!0041!!`},
		{`$d`, `$d$`},
		{`x$`, `ends$`},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, name, password string) {
		needPG(t)
		name = "fz-" + randSuffix() + "-" + name
		if len(name) > maxIdentifierLength || !utf8.ValidString(name) || !utf8.ValidString(password) || strings.ContainsRune(name+password, 0) {
			t.Skip("not a value PostgreSQL can store")
		}
		vals := render.NewValues(name).WithPassword(password)
		create, err := render.Render([]string{`CREATE ROLE "{{name}}" NOLOGIN;`}, vals)
		if err != nil {
			t.Fatal(err)
		}
		a := admin(t)
		if err := execAtomic(testCtx(t), a, create); err != nil {
			t.Fatalf("creating role %q: %v", name, err)
		}
		t.Cleanup(func() { _, _ = a.Exec(testCtx(t), "DROP ROLE IF EXISTS "+render.QuoteIdent(name)) })
		for i, stmt := range fuzzContexts {
			sql, err := render.Render([]string{stmt}, vals)
			if err != nil {
				// Only a dollar-quoted string cannot hold every value.
				if !strings.Contains(err.Error(), "dollar-quoted") || !strings.Contains(name+password, "$") {
					t.Fatalf("context %d: %v", i, err)
				}
				continue
			}
			if err := execAtomic(testCtx(t), a, sql); err != nil {
				t.Fatalf("context %d failed for name %q password %q: %v\n%s", i, name, password, err, sql)
			}
			comment, _, err := pgtest.RoleComment(testCtx(t), a, name)
			if err != nil {
				t.Fatalf("context %d: role %q not found after rendering: %v\n%s", i, name, err, sql)
			}
			if comment != password {
				t.Fatalf("context %d: comment = %q, want %q\n%s", i, comment, password, sql)
			}
			if _, err := a.Exec(testCtx(t), "COMMENT ON ROLE "+render.QuoteIdent(name)+" IS NULL"); err != nil {
				t.Fatal(err)
			}
		}
	})
}
