package postgres

import (
	"testing"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
)

// BenchmarkNewUser measures creating users in parallel on the pool; the
// server's CPU cost of CREATE ROLE bounds it.
func BenchmarkNewUser(b *testing.B) {
	db := newDB(b, map[string]interface{}{"max_open_connections": 8})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := db.NewUser(testCtx(b), newUserReq(createStmt))
			if err != nil {
				b.Error(err)
				return
			}
			b.StopTimer()
			if _, err := db.DeleteUser(testCtx(b), dbplugin.DeleteUserRequest{Username: resp.Username}); err != nil {
				b.Error(err)
			}
			b.StartTimer()
		}
	})
}

// BenchmarkDeleteUser measures the default revocation of a user that holds
// a privilege, in parallel.
func BenchmarkDeleteUser(b *testing.B) {
	db := newDB(b, map[string]interface{}{"max_open_connections": 8})
	execSQL(b, admin(b), "CREATE TABLE IF NOT EXISTS bench_delete (id int)")
	users := make(chan string, b.N)
	for i := 0; i < b.N; i++ {
		resp, err := db.NewUser(testCtx(b), newUserReq(createStmt, `GRANT SELECT ON bench_delete TO "{{name}}";`))
		if err != nil {
			b.Fatal(err)
		}
		users <- resp.Username
	}
	close(users)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := db.DeleteUser(testCtx(b), dbplugin.DeleteUserRequest{Username: <-users}); err != nil {
				b.Error(err)
			}
		}
	})
}

// BenchmarkDeleteUserOneByOne measures one revocation at a time, as Vault
// revokes a prefix of leases, of a user that is a member of a group (the
// benchmark's and most roles' creation statements grant one).
func BenchmarkDeleteUserOneByOne(b *testing.B) {
	db := newDB(b, map[string]interface{}{"max_open_connections": 4})
	execSQL(b, admin(b), "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_readers') THEN CREATE ROLE bench_readers NOLOGIN; END IF; END $$")
	users := make([]string, b.N)
	for i := range users {
		resp, err := db.NewUser(testCtx(b), newUserReq(createStmt, `GRANT bench_readers TO "{{name}}";`))
		if err != nil {
			b.Fatal(err)
		}
		users[i] = resp.Username
	}
	b.ResetTimer()
	for _, u := range users {
		if _, err := db.DeleteUser(testCtx(b), dbplugin.DeleteUserRequest{Username: u}); err != nil {
			b.Fatal(err)
		}
	}
}
