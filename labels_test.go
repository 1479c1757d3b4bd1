package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

func TestLabelContent(t *testing.T) {
	db := newDB(t, map[string]interface{}{"username_template": `{{ printf "lbl-%s" (random 12) }}`})
	a := admin(t)
	hostile := []string{`a"b`, `x'y`, `back\slash\\`, `$$`, `$pgvault$`, "new\nline\r\ttab", `E'\'`, `a\';DROP ROLE x;--`, `{"managed_by":"x"}`, `<script>&amp;`, `@role@@label@@expires@`, "\u2028sep", "ünï😀", ""}
	for i, display := range hostile {
		t.Run(fmt.Sprintf("%d %q", i, display), func(t *testing.T) {
			t.Parallel()
			req := newUserReq(createStmt)
			req.UsernameConfig.DisplayName = display
			req.UsernameConfig.RoleName = "role " + display
			req.Expiration = time.Date(2031, 2, 3, 4, 5, 6, 789, time.FixedZone("x", 5*3600))
			before := time.Now().UTC().Truncate(time.Second)
			user := dbtesting.AssertNewUser(t, db, req).Username
			after := time.Now().UTC()
			assertLogin(t, user, req.Password)
			l := readLabel(t, a, user)
			want := map[string]string{
				"managed_by":   "vault-plugin-database-postgres",
				"vault_role":   "role " + display,
				"display_name": display,
				"expires":      "2031-02-02T23:05:06Z",
			}
			for k, v := range want {
				if l[k] != v {
					t.Errorf("label %s = %q, want %q", k, l[k], v)
				}
			}
			created, err := time.Parse(time.RFC3339, l["created"])
			if err != nil || !strings.HasSuffix(l["created"], "Z") || created.Before(before) || created.After(after) {
				t.Errorf("label created = %q (%v), want RFC 3339 UTC between %s and %s", l["created"], err, before, after)
			}
			if len(l) != 5 {
				t.Errorf("label has keys %v, want exactly managed_by, vault_role, display_name, created, expires", l)
			}
		})
	}
	t.Run("NUL in the display name", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		req.UsernameConfig.DisplayName = "nul\x00byte"
		user := dbtesting.AssertNewUser(t, db, req).Username
		if got := readLabel(t, a, user)["display_name"]; got != "nul\uFFFDbyte" {
			t.Fatalf("display_name = %q, want the NUL replaced by U+FFFD (jsonb refuses \\u0000)", got)
		}
	})
	t.Run("field order as documented", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		c, _ := roleComment(t, a, user)
		if !strings.HasPrefix(c, `{"managed_by":"vault-plugin-database-postgres","vault_role":"app","display_name":"test","created":"`) {
			t.Fatalf("comment = %s", c)
		}
	})
}

func TestLabelSameTransaction(t *testing.T) {
	db := newDB(t, map[string]interface{}{"username_template": `{{ printf "lbltx-%s" (random 12) }}`})
	a := admin(t)

	t.Run("one query with the creation", func(t *testing.T) {
		t.Parallel()
		if pg.LogFile == "" {
			t.Skip("needs the server log")
		}
		user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt)).Username
		log, err := pg.ReadLog()
		if err != nil {
			t.Fatal(err)
		}
		// The simple protocol sends the creation and the label as one
		// query message, which PostgreSQL logs as one entry and runs as
		// one implicit transaction.
		entry := logEntry(log, `CREATE ROLE "`+user+`"`)
		if !strings.Contains(entry, "statement: ") || !strings.Contains(entry, "COMMENT ON ROLE "+render.QuoteIdent(user)) || strings.Contains(entry, "COMMIT") {
			t.Fatalf("the creation and the label were not one query:\n%s", entry)
		}
	})
	t.Run("a failure after the creation leaves nothing", func(t *testing.T) {
		t.Parallel()
		_, err := db.NewUser(testCtx(t), newUserReq(createStmt, `SELECT 1/0;`))
		if err == nil || !strings.Contains(err.Error(), "division by zero") {
			t.Fatalf("NewUser error = %v", err)
		}
		_, rest, _ := strings.Cut(err.Error(), `creating user "`)
		user, _, _ := strings.Cut(rest, `"`)
		if user == "" {
			t.Fatalf("no user name in the error %q", err)
		}
		if roleExists(t, a, user) {
			t.Fatalf("role %q exists after a failed creation", user)
		}
		var n int
		if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_shdescription WHERE strpos(description, $1) > 0", user).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d comments mention %q (%v)", n, user, err)
		}
	})
	t.Run("creation statements that change the session's role", func(t *testing.T) {
		t.Parallel()
		// The label is the plugin's to write, whatever role the creation
		// statements leave the session in.
		nopriv := "lblnopriv-" + randSuffix()
		execSQL(t, a, fmt.Sprintf("CREATE ROLE %s NOLOGIN", render.QuoteIdent(nopriv)))
		t.Cleanup(func() { execSQL(t, a, fmt.Sprintf("DROP ROLE %s", render.QuoteIdent(nopriv))) })
		for _, set := range []string{"SET ROLE %s;", "SET SESSION AUTHORIZATION %s;", "SET LOCAL ROLE %s;"} {
			user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt, fmt.Sprintf(set, render.QuoteIdent(nopriv)))).Username
			if l := readLabel(t, a, user); l["managed_by"] != labelManagedBy {
				t.Fatalf("%s: label = %v", set, l)
			}
			dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, Expiration: &dbplugin.ChangeExpiration{
				NewExpiration: time.Now().Add(30 * time.Hour),
				Statements:    dbplugin.Statements{Commands: []string{`ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';` + fmt.Sprintf(set, render.QuoteIdent(nopriv))}},
			}})
		}
	})
}

// logEntry returns the server log entry (a prefixed line and its
// continuation lines) that contains s.
func logEntry(log, s string) string {
	var entry []string
	for _, line := range strings.Split(log, "\n") {
		if len(line) > 20 && line[4] == '-' && line[7] == '-' && line[10] == ' ' && line[13] == ':' {
			if e := strings.Join(entry, "\n"); strings.Contains(e, s) {
				return e
			}
			entry = entry[:0]
		}
		entry = append(entry, line)
	}
	if e := strings.Join(entry, "\n"); strings.Contains(e, s) {
		return e
	}
	return ""
}

func TestLabelKeepsCreationComment(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	req := newUserReq(createStmt, `COMMENT ON ROLE "{{name}}" IS 'payments app, ask #dba';`)
	user := dbtesting.AssertNewUser(t, db, req).Username
	if c, _ := roleComment(t, a, user); c != "payments app, ask #dba" {
		t.Fatalf("comment = %q, want the creation statements' own", c)
	}
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(5 * time.Hour)}})
	if c, _ := roleComment(t, a, user); c != "payments app, ask #dba" {
		t.Fatalf("comment after renewal = %q, want the creation statements' own", c)
	}
}

func TestLabelRenewal(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)

	t.Run("expires moves, nothing else", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		req.UsernameConfig.DisplayName = `"expires":"2000-01-01T00:00:00Z"`
		user := dbtesting.AssertNewUser(t, db, req).Username
		before, _ := roleComment(t, a, user)
		exp := time.Now().Add(50 * time.Hour).Truncate(time.Second)
		renew(t, db, a, user, exp)
		after, _ := roleComment(t, a, user)
		want := strings.Replace(before, `"expires":"`+labelTime(req.Expiration)+`"`, `"expires":"`+labelTime(exp)+`"`, 1)
		if after != want || after == before {
			t.Fatalf("label after renewal:\n%s\nwant:\n%s", after, want)
		}
		if l := readLabel(t, a, user); l["display_name"] != req.UsernameConfig.DisplayName {
			t.Fatalf("display_name changed to %q", l["display_name"])
		}
	})
	t.Run("a label a DBA reformatted", func(t *testing.T) {
		t.Parallel()
		user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt)).Username
		c, _ := roleComment(t, a, user)
		execSQL(t, a, fmt.Sprintf("COMMENT ON ROLE %s IS %s", render.QuoteIdent(user), render.QuoteLiteral(`{"team": {"expires": "x"}, `+strings.TrimPrefix(c, "{"))))
		exp := time.Now().Add(7 * time.Hour).Truncate(time.Second)
		renew(t, db, a, user, exp)
		var expires, by, team string
		if err := a.QueryRow(testCtx(t), `SELECT l->>'expires', l->>'managed_by', l#>>'{team,expires}'
			FROM (SELECT shobj_description(oid, 'pg_authid')::jsonb AS l FROM pg_roles WHERE rolname = $1) s`, user).Scan(&expires, &by, &team); err != nil {
			t.Fatal(err)
		}
		if expires != labelTime(exp) || by != labelManagedBy || team != "x" {
			t.Fatalf("after renewal: expires %q, managed_by %q, the DBA's team.expires %q; want %q, ours, kept", expires, by, team, labelTime(exp))
		}
	})
	t.Run("failed renewal leaves the label", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		user := dbtesting.AssertNewUser(t, db, req).Username
		before, _ := roleComment(t, a, user)
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: user, Expiration: &dbplugin.ChangeExpiration{
			NewExpiration: time.Now().Add(9 * time.Hour),
			Statements:    dbplugin.Statements{Commands: []string{`ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}'; SELECT 1/0;`}},
		}})
		if err == nil {
			t.Fatal("renewal succeeded")
		}
		if after, _ := roleComment(t, a, user); after != before {
			t.Fatalf("label changed by a failed renewal:\n%s\n%s", before, after)
		}
	})
}

func TestLabelRenewalKeepsForeignComments(t *testing.T) {
	t.Parallel()
	db := newDB(t, nil)
	a := admin(t)
	for _, c := range []string{"plain words", `{"managed_by":"someone-else","expires":"2000-01-01T00:00:00Z"}`, `{"managed_by":"vault-plugin-database-postgres", broken`, `["managed_by"]`} {
		user := "lblforeign-" + randSuffix()
		execSQL(t, a, fmt.Sprintf("CREATE ROLE %s; COMMENT ON ROLE %s IS %s", render.QuoteIdent(user), render.QuoteIdent(user), render.QuoteLiteral(c)))
		t.Cleanup(func() { execSQL(t, a, "DROP ROLE "+render.QuoteIdent(user)) })
		renew(t, db, a, user, time.Now().Add(3*time.Hour).Truncate(time.Second))
		if got, _ := roleComment(t, a, user); got != c {
			t.Fatalf("comment %q became %q", c, got)
		}
	}
}

// TestLabelRenewalWithLabelRolesOff renews, with label_roles=false, a role
// created with a label.
func TestLabelRenewalWithLabelRolesOff(t *testing.T) {
	t.Parallel()
	a := admin(t)
	user := dbtesting.AssertNewUser(t, newDB(t, nil), newUserReq(createStmt)).Username
	off := newDB(t, map[string]interface{}{"label_roles": false})
	exp := time.Now().Add(11 * time.Hour).Truncate(time.Second)
	renew(t, off, a, user, exp)
	if l := readLabel(t, a, user); l["expires"] != labelTime(exp) {
		t.Fatalf("expires = %q, want %q: a stale label would make a renewed role look orphaned", l["expires"], labelTime(exp))
	}
}

// TestStaticAndRootNotLabelled: password changes (static roles, root) never
// write a label, and leave an existing one as it is.
func TestStaticAndRootNotLabelled(t *testing.T) {
	needPG(t)
	a := admin(t)
	root, rootPw := "lblroot-"+randSuffix(), "Root-"+randSuffix()
	static := "lblstatic-" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s", render.QuoteIdent(root), render.QuoteLiteral(rootPw)))
	// ADMIN OPTION: from PostgreSQL 16, CREATEROLE alone does not let root
	// change a role it did not create.
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN; GRANT %s TO %s WITH ADMIN OPTION", render.QuoteIdent(static), render.QuoteIdent(static), render.QuoteIdent(root)))
	t.Cleanup(func() {
		execSQL(t, a, fmt.Sprintf("DROP ROLE %s; DROP ROLE %s", render.QuoteIdent(static), render.QuoteIdent(root)))
	})
	db := newDB(t, map[string]interface{}{"username": root, "password": rootPw})
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: static, Password: &dbplugin.ChangePassword{NewPassword: "Static-" + randSuffix()}})
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: static,
		Password:   &dbplugin.ChangePassword{NewPassword: "Static-" + randSuffix()},
		Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(time.Hour)}})
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: root, Password: &dbplugin.ChangePassword{NewPassword: "Root2-" + randSuffix()}})
	for _, u := range []string{static, root} {
		if c, ok := roleComment(t, a, u); ok {
			t.Fatalf("%q got a comment: %s", u, c)
		}
	}
	// A password change on a labelled role leaves the label alone.
	user := dbtesting.AssertNewUser(t, newDB(t, nil), newUserReq(createStmt)).Username
	before, _ := roleComment(t, a, user)
	dbtesting.AssertUpdateUser(t, newDB(t, nil), dbplugin.UpdateUserRequest{Username: user,
		Password:   &dbplugin.ChangePassword{NewPassword: "Rot-" + randSuffix()},
		Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(40 * time.Hour)}})
	if after, _ := roleComment(t, a, user); after != before {
		t.Fatalf("a password change rewrote the label:\n%s\n%s", before, after)
	}
}

func TestLabelRolesOff(t *testing.T) {
	db := newDB(t, map[string]interface{}{"label_roles": "false"})
	a := admin(t)
	user := dbtesting.AssertNewUser(t, db, newUserReq(createStmt)).Username
	if c, ok := roleComment(t, a, user); ok {
		t.Fatalf("label_roles=false, yet the role got a comment: %s", c)
	}
}

func TestParseLabel(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		comment string
		ok      bool
	}{
		{newLabel(dbplugin.UsernameMetadata{RoleName: "r", DisplayName: "d"}, time.Now(), exp), true},
		{`{"created": "x", "expires": "2030-01-02T03:04:05Z", "managed_by": "vault-plugin-database-postgres"}`, true},
		{`{"Managed_By":"vault-plugin-database-postgres","expires":"2030-01-02T03:04:05Z"}`, false},
		{`{"managed_by":"vault-plugin-database-postgres"}`, false},
		{`{"managed_by":"vault-plugin-database-postgres","expires":1893553445}`, false},
		{`{"managed_by":"vault-plugin-database-postgres","expires":"soon"}`, false},
		{`{"managed_by":"other","expires":"2030-01-02T03:04:05Z"}`, false},
		{`{"managed_by":"vault-plugin-database-postgres","expires":"2030-01-02T03:04:05Z"`, false},
		{`["managed_by"]`, false},
		{`dba note`, false},
		{``, false},
	}
	for _, c := range cases {
		got, ok := parseLabel(c.comment)
		if ok != c.ok || ok && !got.Equal(exp) {
			t.Errorf("parseLabel(%s) = %s, %v; want %v", c.comment, got, ok, c.ok)
		}
	}
	if l := newLabel(dbplugin.UsernameMetadata{}, time.Now(), time.Time{}); strings.Contains(l, "expires") {
		t.Errorf("a role without expiration got %s", l)
	}
}

// TestLabelStatementsThatDoNotCreateName: creation statements that do not
// leave a role named {{name}} (Vault's "reproduce GH-6098" among them)
// succeed, and only a role they created is labelled.
func TestLabelStatementsThatDoNotCreateName(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	existing, other, renamed := "lblexisting-"+randSuffix(), "lblother-"+randSuffix(), "lblrenamed-"+randSuffix()
	execSQL(t, a, "CREATE ROLE "+render.QuoteIdent(existing))
	t.Cleanup(func() {
		execSQL(t, a, "DROP OWNED BY "+render.QuoteIdent(existing)) // the grant
		for _, r := range []string{existing, other, renamed, "my_role"} {
			execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(r))
		}
	})
	cases := []struct {
		name      string
		stmts     []string
		exists    bool   // whether the role named {{name}} exists afterwards
		bystander string // a role the statements touched, which must stay unlabelled
	}{
		{"GH-6098", []string{`DO $$ BEGIN IF NOT EXISTS (SELECT * FROM pg_catalog.pg_roles WHERE rolname='my_role') THEN CREATE ROLE my_role; END IF; END $$`}, false, "my_role"},
		{"grant to an existing role", []string{"GRANT USAGE ON SCHEMA public TO " + render.QuoteIdent(existing) + ";"}, false, existing},
		{"a differently named role", []string{"CREATE ROLE " + render.QuoteIdent(other) + ";"}, false, other},
		{"created, then dropped", []string{createStmt, `DROP ROLE "{{name}}";`}, false, ""},
		{"created, then renamed", []string{createStmt, `ALTER ROLE "{{name}}" RENAME TO ` + render.QuoteIdent(renamed) + ";"}, false, renamed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := dbtesting.AssertNewUser(t, db, newUserReq(tc.stmts...)).Username
			if user == "" {
				t.Fatal("no username returned")
			}
			if roleExists(t, a, user) != tc.exists {
				t.Fatalf("role %q exists = %v, want %v", user, !tc.exists, tc.exists)
			}
			if tc.bystander != "" {
				if c, ok := roleComment(t, a, tc.bystander); ok {
					t.Fatalf("%q, which the plugin did not create as the user, got a comment: %s", tc.bystander, c)
				}
			}
		})
	}
	t.Run("the normal case still labels", func(t *testing.T) {
		req := newUserReq(createStmt, `GRANT USAGE ON SCHEMA public TO "{{name}}";`)
		user := dbtesting.AssertNewUser(t, db, req).Username
		if l := readLabel(t, a, user); l["managed_by"] != labelManagedBy || l["vault_role"] != "app" {
			t.Fatalf("label = %v", l)
		}
		assertLogin(t, user, req.Password)
	})
}

// TestLabelThatCannotBeWritten: a label the server refuses leaves the
// creation standing, with a warning in the server log.
func TestLabelThatCannotBeWritten(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)
	// A read-only transaction refuses the COMMENT; the role it follows
	// was created before, and stays.
	req := newUserReq(createStmt, `SET transaction_read_only = on;`)
	user := dbtesting.AssertNewUser(t, db, req).Username
	assertLogin(t, user, req.Password)
	if c, ok := roleComment(t, a, user); ok {
		t.Fatalf("role got a comment in a read-only transaction: %s", c)
	}
	if pg.LogFile == "" {
		return
	}
	log, err := pg.ReadLog()
	if err != nil {
		t.Fatal(err)
	}
	if e := logEntry(log, "WARNING:  role "+render.QuoteIdent(user)); !strings.Contains(e, "not labelled") {
		t.Fatalf("no warning in the server log that %q was not labelled", user)
	}
}

// createPlain is a creation statement that labels with a plain COMMENT.
const createPlain = `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`

// TestLabelPathIgnoresDisplayName: the path is chosen from the statements
// as written: no display name moves a creation onto the plain COMMENT, or
// off it.
func TestLabelPathIgnoresDisplayName(t *testing.T) {
	st := &state{cfg: &config{LabelRoles: true}}
	for _, display := range []string{`x"; DROP ROLE "{{name}}"; --`, "comment", `{{name}}`} {
		for stmts, plain := range map[string]bool{createPlain: true, createPlain + `DROP ROLE "{{name}}";`: false} {
			req := newUserReq(stmts)
			req.UsernameConfig.DisplayName = display
			sql, err := st.labelStatement("v-x", req)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(sql, "COMMENT ON ROLE") != plain {
				t.Errorf("display name %q, statements %q: label statement %q", display, stmts, sql)
			}
		}
	}
}
