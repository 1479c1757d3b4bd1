package postgres

// UpdateUser: renewal, static-role and root rotation, and a rotation whose
// reply is lost on the way back.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

func TestUpdateUser(t *testing.T) {
	db := newDB(t, nil)
	a := admin(t)

	t.Run("password and expiration in one request", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		resp := dbtesting.AssertNewUser(t, db, req)
		exp := time.Now().Add(72 * time.Hour).Truncate(time.Second)
		newPw := "New-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{
			Username:   resp.Username,
			Password:   &dbplugin.ChangePassword{NewPassword: newPw},
			Expiration: &dbplugin.ChangeExpiration{NewExpiration: exp},
		})
		assertLogin(t, resp.Username, newPw)
		assertNoLogin(t, resp.Username, req.Password)
		if until := validUntil(t, a, resp.Username); !until.Equal(exp) {
			t.Fatalf("rolvaliduntil = %s, want %s", until, exp)
		}
	})
	t.Run("custom rotation statements", func(t *testing.T) {
		t.Parallel()
		req := newUserReq(createStmt)
		resp := dbtesting.AssertNewUser(t, db, req)
		newPw := "Custom-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{
			Username: resp.Username,
			Password: &dbplugin.ChangePassword{NewPassword: newPw, Statements: dbplugin.Statements{Commands: []string{
				`ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'; COMMENT ON ROLE "{{name}}" IS 'rotated';`}}},
		})
		assertLogin(t, resp.Username, newPw)
	})
	t.Run("self-managed password", func(t *testing.T) {
		t.Parallel()
		user, pw := "selfmanaged-"+randSuffix(), "Self-"+randSuffix()
		execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD %s`, render.QuoteIdent(user), render.QuoteLiteral(pw)))
		newPw := "Self2-" + randSuffix()
		dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, SelfManagedPassword: pw, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
		assertLogin(t, user, newPw)
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: user, SelfManagedPassword: "wrong", Password: &dbplugin.ChangePassword{NewPassword: "whatever-1"}})
		if err == nil {
			t.Fatal("a wrong self-managed password was accepted")
		}
		assertLogin(t, user, newPw)
	})
}

func TestUpdateUserRefusals(t *testing.T) {
	db := newDB(t, nil)
	t.Run("missing user", func(t *testing.T) {
		t.Parallel()
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: "no-such-user-" + randSuffix(), Password: &dbplugin.ChangePassword{NewPassword: "x-pw"}})
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("error = %v, want 'does not exist'", err)
		}
	})
	t.Run("nothing to change", func(t *testing.T) {
		t.Parallel()
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: "whoever"})
		if err == nil || !strings.Contains(err.Error(), "no change requested") {
			t.Fatalf("error = %v", err)
		}
	})
}

// TestRootRotation follows Vault's rotate-root: UpdateUser on the root user,
// then Initialize again with the new password.
func TestRootRotation(t *testing.T) {
	needPG(t)
	a := admin(t)
	root, pw := "rootrot-"+randSuffix(), `R@/#{}%?&'`+randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(root), render.QuoteLiteral(pw)))
	db := newDB(t, map[string]interface{}{"username": root, "password": pw})
	newPw := `N3w@/#{}%?&'` + randSuffix()
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: root, Password: &dbplugin.ChangePassword{NewPassword: newPw}})
	assertNoLogin(t, root, pw)
	cfg := baseConfig()
	cfg["username"], cfg["password"] = root, newPw
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
	req := newUserReq(createStmt)
	resp := dbtesting.AssertNewUser(t, db, req)
	assertLogin(t, resp.Username, req.Password)
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: resp.Username})
	if roleExists(t, a, resp.Username) {
		t.Fatal("role still exists")
	}
}

// TestRotationLostReply cuts the connection right after (or right before)
// the root rotation's ALTER ROLE reaches the server. The plugin must answer
// with what the database holds: success when the new password is in place;
// when the change provably did not apply, it runs it again on a fresh
// connection, and succeeds.
func TestRotationLostReply(t *testing.T) {
	needPG(t)
	a := admin(t)
	for _, tc := range []struct {
		name    string
		mode    pgtest.CutMode
		changed bool
	}{
		{"reply lost after the change was sent", pgtest.CutAfter, true},
		{"connection lost before the change arrived", pgtest.CutBefore, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root, pw := "lc-root-"+randSuffix(), `R@/#{}%?&'`+randSuffix()
			execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(root), render.QuoteLiteral(pw)))
			t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(root)) })
			proxy := newPGProxy(t)
			db := newDB(t, map[string]interface{}{"connection_url": proxyURL(proxy), "username": root, "password": pw})

			proxy.Arm(tc.mode)
			newPw := `N3w@/#{}%?&'` + randSuffix()
			_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: root, CredentialType: dbplugin.CredentialTypePassword,
				Password: &dbplugin.ChangePassword{NewPassword: newPw}})
			select {
			case <-proxy.Fired():
			default:
				t.Fatalf("the proxy never cut the connection (UpdateUser error: %v): the test proves nothing", err)
			}
			if err != nil && (strings.Contains(err.Error(), newPw) || strings.Contains(err.Error(), pw)) {
				t.Fatalf("error holds a password: %v", err)
			}
			if tc.changed {
				if err != nil {
					t.Fatalf("the password changed but UpdateUser failed: %v", err)
				}
				assertLogin(t, root, newPw)
				assertNoLogin(t, root, pw)
				return
			}
			if err == nil {
				t.Fatal("the password did not change but UpdateUser succeeded")
			}
			if !strings.Contains(err.Error(), "not changed") {
				t.Fatalf("error does not say the password was not changed: %v", err)
			}
			t.Log(err)
			assertLogin(t, root, pw)
			assertNoLogin(t, root, newPw)
		})
	}
}

// TestRotationStatementsMayNotNeedTheRole: nothing checks first that the
// user is a role, as with the built-in: rotation statements may keep an
// application's own credentials table, or create the role they rotate. A
// "does not exist" about another object names that object; only a missing
// user is reported as one.
func TestRotationStatementsMayNotNeedTheRole(t *testing.T) {
	a := admin(t)
	rotate := func(db *Postgres, user, pw string, stmts ...string) error {
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: user,
			Password: &dbplugin.ChangePassword{NewPassword: pw, Statements: dbplugin.Statements{Commands: stmts}}})
		return err
	}
	t.Run("a user that is not a role", func(t *testing.T) {
		table := "appcreds_" + randSuffix()
		execSQL(t, a, "CREATE TABLE public."+table+" (u text PRIMARY KEY, p text); INSERT INTO public."+table+" VALUES ('svc_account', 'old')")
		t.Cleanup(func() { execSQL(t, a, "DROP TABLE public."+table) })
		pw := "New-" + randSuffix()
		if err := rotate(newDB(t, map[string]interface{}{"password_authentication": "password"}), "svc_account", pw,
			`UPDATE public.`+table+` SET p = '{{password}}' WHERE u = '{{username}}';`); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := a.QueryRow(testCtx(t), "SELECT p FROM public."+table+" WHERE u = 'svc_account'").Scan(&got); err != nil || got != pw {
			t.Fatalf("the row holds %q (%v), want the new password", got, err)
		}
	})
	t.Run("statements that create the role", func(t *testing.T) {
		user := "provisioned_" + randSuffix()
		t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
		pw := "New-" + randSuffix()
		if err := rotate(newDB(t, nil), user, pw, `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{{name}}') THEN CREATE ROLE "{{name}}" LOGIN; END IF;
END $$;`, `ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}';`); err != nil {
			t.Fatal(err)
		}
		assertLogin(t, user, pw)
	})
	t.Run("another object is missing", func(t *testing.T) {
		user := "rot_" + randSuffix()
		execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN", render.QuoteIdent(user)))
		t.Cleanup(func() { execSQL(t, a, "DROP ROLE "+render.QuoteIdent(user)) })
		err := rotate(newDB(t, nil), user, "New-"+randSuffix(), `ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'; GRANT "reporting_group_gone" TO "{{name}}";`)
		if err == nil || !strings.Contains(err.Error(), "reporting_group_gone") {
			t.Fatalf("error = %v, want one naming the missing group", err)
		}
	})
	t.Run("the user is missing", func(t *testing.T) {
		err := rotate(newDB(t, nil), "nobody_"+randSuffix(), "New-"+randSuffix())
		if err == nil || !strings.Contains(err.Error(), "the user does not exist") {
			t.Fatalf("error = %v, want one saying the user does not exist", err)
		}
	})
}
