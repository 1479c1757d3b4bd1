package postgres

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
)

// TestLoad runs 64 workers that create, renew, rotate and revoke users for a
// bounded time, under -race: no request may fail, no role may be left, and
// after Close no plugin connection may remain.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	const workers = 64
	duration := 8 * time.Second
	prefix := "ld" + randSuffix()
	app := "pgvault-load-" + randSuffix()
	cfg := map[string]interface{}{
		"username_template":    fmt.Sprintf(`{{ printf "%s-%%s" (random 16) }}`, prefix),
		"max_open_connections": 8,
		"connection_url":       pg.TemplateURL("") + "&application_name=" + app,
	}
	db := newDB(t, cfg)
	a := admin(t)

	var ops, failures atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	fail := func(op string, err error) {
		failures.Add(1)
		firstErr.Do(func() { t.Errorf("%s: %v", op, err) })
	}
	stop := time.Now().Add(duration)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				loadCycle(db, &ops, fail)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d operations by %d workers in %s, %d failed", ops.Load(), workers, duration, failures.Load())

	var left int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", prefix+"-%").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d roles left behind", left)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		var n int
		_ = a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n)
		return n == 0
	})
}

// loadCycle creates, renews, rotates and revokes one user, counting each
// request in ops and reporting each failure to fail.
func loadCycle(db *Postgres, ops *atomic.Int64, fail func(op string, err error)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := newUserReq(createStmt)
	resp, err := db.NewUser(ctx, req)
	ops.Add(1)
	if err != nil {
		fail("NewUser", err)
		return
	}
	user := resp.Username
	_, err = db.UpdateUser(ctx, dbplugin.UpdateUserRequest{Username: user,
		Expiration: &dbplugin.ChangeExpiration{NewExpiration: time.Now().Add(2 * time.Hour)}})
	ops.Add(1)
	if err != nil {
		fail("renew", err)
	}
	_, err = db.UpdateUser(ctx, dbplugin.UpdateUserRequest{Username: user,
		Password: &dbplugin.ChangePassword{NewPassword: "Rot-" + randSuffix()}})
	ops.Add(1)
	if err != nil {
		fail("rotate", err)
	}
	_, err = db.DeleteUser(ctx, dbplugin.DeleteUserRequest{Username: user})
	ops.Add(1)
	if err != nil {
		fail("revoke", err)
	}
}
