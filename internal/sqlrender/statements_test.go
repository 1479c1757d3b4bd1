package sqlrender

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

// TestCreatesName: the plain COMMENT is chosen only when the statements, as
// written, create the role named {{name}}, leave it in place and stay the
// role that created it; anything else takes the block that looks first.
func TestCreatesName(t *testing.T) {
	for _, tc := range createsNameCases {
		if got := CreatesName(tc.stmts); got != tc.want {
			t.Errorf("CreatesName(%q) = %v, want %v", tc.stmts, got, tc.want)
		}
	}
}

const createPlain = `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`

var createsNameCases = []struct {
	stmts []string
	want  bool
}{
	{[]string{createPlain}, true},
	{[]string{createPlain, `GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";`}, true},
	{[]string{`create user {{ username }} password '{{password}}'; alter user "{{name}}" set search_path = app`}, true},
	{[]string{`CREATE GROUP "{{name}}"`, `GRANT "{{name}}" TO app`}, true},
	{[]string{createPlain + ` -- DROP ROLE "{{name}}";`}, true},
	{[]string{`CREATE ROLE "{{name}}" LOGIN PASSWORD 'x; DROP ROLE "{{name}}"'`}, true},
	{[]string{`CREATE ROLE "{{name}}" /* ; DROP ROLE "{{name}}" */ LOGIN`}, true},
	{[]string{createPlain, `REVOKE ALL ON SCHEMA public FROM "{{name}}";`}, true},
	{[]string{createPlain, `ALTER ROLE "{{name}}" CONNECTION LIMIT 3; ALTER ROLE "{{name}}" IN DATABASE app SET work_mem = '8MB'`}, true},

	{[]string{`DO $$ BEGIN IF NOT EXISTS (SELECT * FROM pg_catalog.pg_roles WHERE rolname='my_role') THEN CREATE ROLE my_role; END IF; END $$`}, false},
	{[]string{`GRANT app TO "{{name}}"`}, false},
	{[]string{`CREATE ROLE other`}, false},
	{[]string{`CREATE ROLE "{{name}}x"`}, false},
	{[]string{`CREATE ROLE "v-{{name}}"`}, false},
	{[]string{`CREATE ROLE U&"{{name}}"`}, false},
	{[]string{`CREATE USER MAPPING FOR "{{name}}" SERVER s`}, false},
	{[]string{createPlain, `DROP ROLE "{{name}}";`}, false},
	{[]string{createPlain, `ALTER ROLE "{{name}}" RENAME TO x`}, false},
	{[]string{createPlain, `ALTER ROLE CURRENT_USER NOCREATEROLE`}, false},
	{[]string{createPlain, `ALTER GROUP "{{name}}" DROP USER admin`}, false},
	{[]string{createPlain, `REVOKE "{{name}}" FROM CURRENT_USER`}, false},
	{[]string{createPlain, `REVOKE ADMIN OPTION FOR "{{name}}" FROM admin`}, false},
	{[]string{`SET ROLE creator; ` + createPlain}, false},
	{[]string{createPlain, `SET ROLE other`}, false},
	{[]string{createPlain, `SET transaction_read_only = on`}, false},
	{[]string{createPlain, `COMMENT ON ROLE "{{name}}" IS 'payments'`}, false},
	{[]string{createPlain, `SELECT drop_it('{{name}}')`}, false},
	{[]string{createPlain, `DO $$ BEGIN EXECUTE 'DROP ROLE ' || quote_ident('{{name}}'); END $$`}, false},
	{[]string{createPlain, `COMMIT; BEGIN`}, false},
	{[]string{`/* CREATE ROLE "{{name}}"; */ SELECT 1`}, false},
	{[]string{`SELECT 'CREATE ROLE "{{name}}"'`}, false},
	{[]string{`SELECT $x$; CREATE ROLE "{{name}}"; $x$`}, false},
	{[]string{`CREATE ROLE "{{name}}"; 'unterminated`}, false},
	{nil, false},
}

func TestDecode(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	create := `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}';`
	grant := `GRANT r TO "{{name}}";`
	array := `["` + strings.ReplaceAll(create, `"`, `\"`) + `", "` + strings.ReplaceAll(grant, `"`, `\"`) + `"]`
	cases := []struct {
		name string
		in   []string
		want []string
	}{
		{"plain SQL", []string{create, grant}, []string{create, grant}},
		{"base64", []string{b64(create)}, []string{create}},
		{"JSON array", []string{array}, []string{create, grant}},
		{"base64 of a JSON array", []string{b64(array)}, []string{create, grant}},
		{"base64 beside plain SQL", []string{b64(create), grant}, []string{create, grant}},
		// Valid base64 that decodes to bytes, not text: SQL as written.
		{"ROLLBACK", []string{"ROLLBACK"}, []string{"ROLLBACK"}},
		{"a word of four letters", []string{"abcd"}, []string{"abcd"}},
		{"empty", []string{"", "  "}, []string{"", "  "}},
		{"not a JSON array of strings", []string{"[1, 2]"}, []string{"[1, 2]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decode(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("Decode(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestRunsNoCode: which statements Split marks as running no code.
func TestRunsNoCode(t *testing.T) {
	for sql, want := range map[string]bool{
		`CREATE ROLE "v-1" WITH LOGIN PASSWORD 'p' VALID UNTIL '2030-01-01'; GRANT readers TO "v-1";`: true,
		`GRANT SELECT ON orders TO "v-1"; REVOKE ALL ON SCHEMA s FROM "v-1"`:                          true,
		`ALTER ROLE "v-1" VALID UNTIL 'infinity'; COMMENT ON ROLE "v-1" IS '{"a": "b; DO"}'`:          true,
		`DROP ROLE IF EXISTS "v-1";`:                                       true,
		`CREATE ROLE "DO $$ x"; GRANT "SELECT format(1)" TO "v-1"`:         true,
		`SELECT format('%I', 'x')`:                                         false,
		`CREATE ROLE a; DO $$ BEGIN NULL; END $$`:                          false,
		`INSERT INTO audit VALUES ('v-1')`:                                 false,
		`CREATE TABLE t (x int DEFAULT f())`:                               false,
		`COMMENT ON TABLE t IS 'x'; COMMENT ON FUNCTION f(int) IS NULL`:    true,
		`ALTER TABLE t ALTER COLUMN c SET DEFAULT 'x'`:                     false,
		`CREATE POLICY p ON t USING (true)`:                                false,
		`CREATE ROLE a PASSWORD 'unterminated`:                             false,
		`CALL p()`:                                                         false,
		`CREATE USER MAPPING FOR "v-1" SERVER s OPTIONS (user 'v-1')`:      false,
		`ALTER USER MAPPING FOR "v-1" SERVER s OPTIONS (SET password 'p')`: false,
		`DROP USER MAPPING IF EXISTS FOR "v-1" SERVER s`:                   false,
	} {
		stmts, ok := Split(sql)
		got := ok && !slices.ContainsFunc(stmts, func(s Statement) bool { return s.RunsCode })
		if got != want {
			t.Errorf("%q runs no code: %v, want %v", sql, got, want)
		}
	}
}

func TestSplit(t *testing.T) {
	sql := "CREATE ROLE \"a;b\" PASSWORD 'x;y';\nDO $$ BEGIN PERFORM 1; END $$;\n-- c;\nGRANT r TO \"search_path\"; SET search_path = app; SELECT 'search_path'"
	got, ok := Split(sql)
	if !ok {
		t.Fatal("Split refused rendered SQL")
	}
	want := []Statement{
		{SQL: "CREATE ROLE \"a;b\" PASSWORD 'x;y';"},
		{SQL: "\nDO $$ BEGIN PERFORM 1; END $$;", RunsCode: true},
		{SQL: "\n-- c;\nGRANT r TO \"search_path\";"},
		{SQL: " SET search_path = app;", RunsCode: true, SetsSearchPath: true},
		{SQL: " SELECT 'search_path'", RunsCode: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Split(%q) =\n%+v\nwant\n%+v", sql, got, want)
	}
	for _, sql := range []string{
		"SELECT 'open",
		"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
	} {
		if _, ok := Split(sql); ok {
			t.Errorf("Split(%q) split what it cannot follow", sql)
		}
	}
	ends := map[string]bool{"COMMIT": true, "END": true, "ABORT": true, "ROLLBACK": true, "PREPARE TRANSACTION 'x'": true,
		"ROLLBACK TO SAVEPOINT a": false, "BEGIN": false, "SAVEPOINT a": false}
	for sql, want := range ends {
		if got, _ := Split(sql); got[0].EndsTransaction != want {
			t.Errorf("Split(%q).EndsTransaction = %v, want %v", sql, got[0].EndsTransaction, want)
		}
	}
	for sql, want := range map[string]bool{"SAVEPOINT a": true, "RELEASE SAVEPOINT a": false, `GRANT "SAVEPOINT" TO x`: false} {
		if got, _ := Split(sql); got[0].Savepoint != want {
			t.Errorf("Split(%q).Savepoint = %v, want %v", sql, got[0].Savepoint, want)
		}
	}
	sets := map[string]bool{"SET search_path = a": true, "SET LOCAL search_path TO a": true, "RESET search_path": true,
		`ALTER ROLE "x" SET search_path = a`: false, "SHOW search_path": false}
	for sql, want := range sets {
		if got, _ := Split(sql); got[0].SetsSearchPath != want {
			t.Errorf("Split(%q).SetsSearchPath = %v, want %v", sql, got[0].SetsSearchPath, want)
		}
	}
}
