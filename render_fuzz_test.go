package postgres

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRenderedValuesStayInTheirQuotes renders hostile names and passwords
// into identifier, literal and dollar-quoted contexts and runs the result on
// the real server: the role must exist with exactly that name and comment.
// Any escape from a quote would change the name, the comment, or fail.
// (An empty comment is stored as no comment, hence the coalesce.)
// `go test -fuzz FuzzRendered` explores further; the seeds run in `make test`.
func FuzzRenderedValuesStayInTheirQuotes(f *testing.F) {
	for _, seed := range [][2]string{
		{`plain`, `plain`},
		{`a"b`, `x'y`},
		{`"; DROP ROLE postgres; --`, `'); DROP TABLE x; --`},
		{`\`, `\'`},
		{`/* c`, `-- c`},
		{`$x$`, `$x$`},
		{`{{name}}`, `{{password}}`},
		{`ä ß 日本`, "tab\there\nnewline"},
		{`E'`, `E'\''`},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, name, password string) {
		needPG(t)
		name = "fz-" + randSuffix() + "-" + name
		if len(name) > maxIdentifierLength || !utf8.ValidString(name) || !utf8.ValidString(password) || strings.ContainsRune(name+password, 0) {
			t.Skip("not a value PostgreSQL can store")
		}
		vals := newTemplateValues(name).withPassword(password)
		sql, err := renderStatements([]string{
			`CREATE ROLE "{{name}}" NOLOGIN;`,
			`COMMENT ON ROLE {{name}} IS '{{password}}';`,
			`ALTER ROLE U&"{{name}}" NOLOGIN;`,
			`DO $fz$ BEGIN IF U&'{{password}}' <> E'{{password}}' THEN RAISE EXCEPTION 'mismatch'; END IF; END $fz$;`,
			`DO $fz$ BEGIN IF '{{password}}' <> {{password}} THEN RAISE EXCEPTION 'mismatch'; END IF; END $fz$;`,
		}, vals)
		if strings.Contains(name+password, "$fz$") {
			if err == nil {
				t.Fatal("a value containing the closing dollar tag was rendered")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		a := admin(t)
		if err := execAtomic(testCtx(t), a, sql); err != nil {
			t.Fatalf("rendered SQL failed for name %q password %q: %v\n%s", name, password, err, sql)
		}
		t.Cleanup(func() { _, _ = a.Exec(testCtx(t), fmt.Sprintf("DROP ROLE IF EXISTS %s", quoteIdent(name))) })
		var comment string
		if err := a.QueryRow(testCtx(t), "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1", name).Scan(&comment); err != nil {
			t.Fatalf("role %q not found after rendering: %v\n%s", name, err, sql)
		}
		if comment != password {
			t.Fatalf("comment = %q, want %q", comment, password)
		}
	})
}
