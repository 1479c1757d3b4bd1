package postgres

import (
	"context"
	"testing"
)

// TestSessionResetDropsTempObjects: a temporary table one request's
// statements create would stay on the pooled session, and pg_temp comes
// first in the search path, so the next request's GRANT on the real table of
// that name would go to the leftover temporary one, silently. The session
// reset (DISCARD TEMP) drops it.
func TestSessionResetDropsTempObjects(t *testing.T) {
	db := newDB(t, map[string]interface{}{"max_open_connections": 1})
	a := admin(t)
	tbl := "orders_" + randSuffix()
	execSQL(t, a, "CREATE TABLE public."+tbl+" (id int)")
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS public."+tbl) })

	first := newUserReq(createStmt, "CREATE TEMP TABLE "+tbl+" (id int);")
	if _, err := db.NewUser(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	second := newUserReq(createStmt, "GRANT SELECT ON "+tbl+" TO \"{{name}}\";")
	resp, err := db.NewUser(testCtx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, resp.Username, second.Password, "")
	if _, err := c.Exec(testCtx(t), "SELECT * FROM public."+tbl); err != nil {
		t.Fatalf("the grant went elsewhere (a temporary table left by an earlier request?): %v", err)
	}
}
