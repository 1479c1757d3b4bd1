package postgres

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// createdByAnother creates a login role as creator, a CREATEROLE role that
// is neither the superuser nor the plugin's admin: a static role, or a
// lease left by an earlier admin.
func createdByAnother(t *testing.T, a *pgxpool.Pool) (user, password, creator string) {
	t.Helper()
	creator = "creator-" + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s CREATEROLE`, render.QuoteIdent(creator)))
	user, password = "other-"+randSuffix(), "Other-"+randSuffix()
	execSQL(t, a, fmt.Sprintf(`SET ROLE %s; CREATE ROLE %s LOGIN PASSWORD %s; RESET ROLE`,
		render.QuoteIdent(creator), render.QuoteIdent(user), render.QuoteLiteral(password)))
	return user, password, creator
}

// TestRolesCreatedByAnotherRole rotates and revokes roles the plugin's admin
// did not create. A superuser may always; a CREATEROLE admin may before
// PostgreSQL 16, and from 16 on only once it holds ADMIN OPTION on the role.
// Until then the request fails, names the missing ADMIN option, and changes
// nothing.
func TestRolesCreatedByAnotherRole(t *testing.T) {
	needPG(t)
	a := admin(t)
	crUser, crPw := createroleAdmin(t, a)
	admins := []struct {
		name, user, password string
		limited              bool // a CREATEROLE admin on PostgreSQL 16 or later
	}{
		{"superuser", pg.SuperUser, pg.SuperPassword, false},
		{"createrole admin", crUser, crPw, pg.VersionNum >= pg16},
	}
	for _, adm := range admins {
		t.Run(adm.name, func(t *testing.T) {
			t.Parallel()
			db := newDB(t, map[string]interface{}{"username": adm.user, "password": adm.password})
			// refusedUntilGranted: a limited admin's attempt is refused and
			// changes nothing, until the operator's fix on PostgreSQL 16 and
			// later (GRANT ... WITH ADMIN OPTION) lets the next one through.
			refusedUntilGranted := func(t *testing.T, user, pw string, attempt func() error) {
				t.Helper()
				if !adm.limited {
					return
				}
				assertNeedsAdminOption(t, attempt(), user)
				assertLogin(t, user, pw)
				execSQL(t, a, fmt.Sprintf(`GRANT %s TO %s WITH ADMIN OPTION`, render.QuoteIdent(user), render.QuoteIdent(adm.user)))
			}

			t.Run("rotate password", func(t *testing.T) {
				t.Parallel()
				user, pw, _ := createdByAnother(t, a)
				newPw := "Rotated-" + randSuffix()
				req := dbplugin.UpdateUserRequest{Username: user, Password: &dbplugin.ChangePassword{NewPassword: newPw}}
				refusedUntilGranted(t, user, pw, func() error { _, err := db.UpdateUser(testCtx(t), req); return err })
				dbtesting.AssertUpdateUser(t, db, req)
				assertLogin(t, user, newPw)
			})

			t.Run("revoke", func(t *testing.T) {
				t.Parallel()
				user, pw, _ := createdByAnother(t, a)
				refusedUntilGranted(t, user, pw, func() error {
					_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
					return err
				})
				revokeDropped(t, db, a, user)
			})
		})
	}
}

// assertNeedsAdminOption checks that a CREATEROLE admin on PostgreSQL 16+
// was refused with an error that says what to grant.
func assertNeedsAdminOption(t *testing.T, err error, user string) {
	t.Helper()
	if err == nil {
		t.Fatalf("a CREATEROLE admin without ADMIN OPTION changed %q created by another role", user)
	}
	t.Logf("refused as expected: %v", err)
	for _, want := range []string{user, "permission denied", "ADMIN option"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestCreateroleAdminMemberships issues and revokes a user as CREATEROLE
// admins whose membership in the roles they create differs from the
// default: createrole_self_grant (PostgreSQL 16+) makes the admin a member
// of every role it creates, with SET and/or INHERIT; a NOINHERIT admin gets
// memberships without inheritance. REASSIGN OWNED needs the privileges of
// the role (an INHERIT membership); from PostgreSQL 16 the admin can give
// itself one (GRANT ... WITH INHERIT TRUE) and the role must be dropped, its
// table the holding role's.
// Before 16 a NOINHERIT admin cannot, and the role must end up disabled.
func TestCreateroleAdminMemberships(t *testing.T) {
	needPG(t)
	a := admin(t)
	cases := []struct {
		name, alter string
		minVersion  int
		selfGrant   bool // createrole_self_grant makes the admin a member
	}{
		{"createrole_self_grant set", `SET createrole_self_grant = 'set'`, pg16, true},
		{"createrole_self_grant inherit", `SET createrole_self_grant = 'inherit'`, pg16, true},
		{"createrole_self_grant set, inherit", `SET createrole_self_grant = 'set, inherit'`, pg16, true},
		{"NOINHERIT admin", `NOINHERIT`, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if pg.VersionNum < tc.minVersion {
				t.Skipf("needs server_version_num %d; the server runs %d", tc.minVersion, pg.VersionNum)
			}
			t.Parallel()
			user, pw := createroleAdmin(t, a)
			execSQL(t, a, fmt.Sprintf(`ALTER ROLE %s %s`, render.QuoteIdent(user), tc.alter))
			schema := "members_" + randSuffix()
			execSQL(t, a, fmt.Sprintf(`CREATE SCHEMA %s AUTHORIZATION %s`, render.QuoteIdent(schema), render.QuoteIdent(user)))
			db := newDB(t, map[string]interface{}{"username": user, "password": pw})
			req := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)))
			created := dbtesting.AssertNewUser(t, db, req).Username
			assertLogin(t, created, req.Password)
			if tc.selfGrant {
				var member bool
				if err := a.QueryRow(testCtx(t), `SELECT pg_has_role($1, $2, 'MEMBER')`, user, created).Scan(&member); err != nil || !member {
					t.Fatalf("createrole_self_grant did not make the admin a member (%v): the test proves nothing", err)
				}
			}
			c := connectAs(t, created, req.Password, "")
			tbl := "owned_" + randSuffix()
			if _, err := c.Exec(testCtx(t), fmt.Sprintf("CREATE TABLE %s.%s (id int)", render.QuoteIdent(schema), tbl)); err != nil {
				t.Fatal(err)
			}
			c.Close(testCtx(t))
			if pg.VersionNum < pg16 && !tc.selfGrant {
				assertNoinheritAdminTold(t, db, a, user, created, req.Password)
			}
			dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: created})
			if roleExists(t, a, created) {
				t.Fatalf("role %q still exists", created)
			}
			var owner string
			if err := a.QueryRow(testCtx(t), "SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = $2", schema, tbl).Scan(&owner); err != nil || owner != holdingRole {
				t.Fatalf("table owner = %q (%v), want the holding role %s", owner, err, holdingRole)
			}
		})
	}
}

// assertNoinheritAdminTold: a NOINHERIT admin on 14-15 has no way to the
// user's privileges, so the revocation fails, saying what to change, with
// logins blocked; it makes the admin INHERIT, after which it goes through.
func assertNoinheritAdminTold(t *testing.T, db *Postgres, a *pgxpool.Pool, admin, user, password string) {
	t.Helper()
	_, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: user})
	if err == nil || !strings.Contains(err.Error(), "INHERIT") {
		t.Fatalf("DeleteUser by a NOINHERIT admin on %d: error = %v, want one that says to make it INHERIT", pg.VersionNum, err)
	}
	assertNoLogin(t, user, password)
	execSQL(t, a, fmt.Sprintf(`ALTER ROLE %s INHERIT`, render.QuoteIdent(admin)))
}

// TestCreateroleAdminHandsOverAPublication: a non-superuser may give a
// publication only to a role that may create in the database. A CREATEROLE
// admin whose dynamic users may create schemas (CREATE on the database, here
// one the admin owns) revokes a user that published its own table: the
// holding role is lent CREATE on the database for the length of the
// hand-over, and the revocation goes through.
func TestCreateroleAdminHandsOverAPublication(t *testing.T) {
	dbname, a := isolatedDB(t)
	user, pw := createroleAdmin(t, a)
	execSQL(t, a, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", render.QuoteIdent(dbname), render.QuoteIdent(user)))
	schema := "crp_" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", render.QuoteIdent(schema), render.QuoteIdent(user)))
	db := newDB(t, map[string]interface{}{"connection_url": pg.TemplateURL(dbname), "username": user, "password": pw})
	req := newUserReq(createStmt, fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO "{{name}}"; GRANT USAGE, CREATE ON SCHEMA %s TO "{{name}}";`,
		render.QuoteIdent(dbname), render.QuoteIdent(schema)))
	created := dbtesting.AssertNewUser(t, db, req).Username
	pub := "p_" + randSuffix()
	execSQL(t, connectAs(t, created, req.Password, dbname), fmt.Sprintf(
		"CREATE TABLE %[1]s.t (id int PRIMARY KEY); CREATE PUBLICATION %[2]s FOR TABLE %[1]s.t", render.QuoteIdent(schema), pub))
	t.Cleanup(func() { _, _ = a.Exec(testCtx(t), "DROP OWNED BY "+render.QuoteIdent(created)) })
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: created}); err != nil {
		t.Fatalf("revoking a user that owns a publication, as a CREATEROLE admin: %v", err)
	}
	if roleExists(t, a, created) {
		t.Errorf("role %s survived", created)
	}
	var owner string
	var canCreate bool
	if err := a.QueryRow(testCtx(t), "SELECT pg_get_userbyid(pubowner), has_database_privilege($2, current_database(), 'CREATE') FROM pg_publication WHERE pubname = $1",
		pub, holdingRole).Scan(&owner, &canCreate); err != nil {
		t.Fatal(err)
	}
	if owner != holdingRole || canCreate {
		t.Errorf("the publication is %s's (want %s), and the holding role may create in the database: %v (want false)", owner, holdingRole, canCreate)
	}
}
