package postgres

import "testing"

// TestSessionResetDropsTempObjects: a temporary table one request's
// statements create would stay on the pooled session and, where pg_temp
// comes first in the search path (a session's default), take the next
// request's GRANT on the real table of that name, silently. The session
// reset (DISCARD TEMP) drops it, and operator statements search pg_temp
// last.
func TestSessionResetDropsTempObjects(t *testing.T) {
	// A database of its own, whose public schema only its owner may create
	// in (PUBLIC may on 14): operator statements search public only then
	// (safe_search_path.sql), whatever other tests granted elsewhere.
	dbname, a := isolatedDB(t)
	execSQL(t, a, "REVOKE CREATE ON SCHEMA public FROM PUBLIC; CREATE TABLE public.orders (id int)")
	db := newDB(t, map[string]interface{}{"max_open_connections": 1, "connection_url": pg.TemplateURL(dbname)})

	first := newUserReq(createStmt, "CREATE TEMP TABLE orders (id int);")
	if _, err := db.NewUser(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	second := newUserReq(createStmt, `GRANT SELECT ON orders TO "{{name}}";`)
	resp, err := db.NewUser(testCtx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, resp.Username, second.Password, dbname)
	if _, err := c.Exec(testCtx(t), "SELECT * FROM public.orders"); err != nil {
		t.Fatalf("the grant went elsewhere (a temporary table left by an earlier request?): %v", err)
	}
}
