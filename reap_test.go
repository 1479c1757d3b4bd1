package postgres

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// reapEvery holds the reaper interval a test chose for its plugin
// (setReapEvery); plugins without one get the production interval.
var reapEvery sync.Map // *Postgres → time.Duration

// init makes reapInterval read reapEvery. It runs before any test, so no
// reaper reads the variable while it changes.
func init() {
	production := reapInterval
	reapInterval = func(p *Postgres, after time.Duration) time.Duration {
		if every, ok := reapEvery.Load(p); ok {
			return every.(time.Duration)
		}
		return production(p, after)
	}
}

// The reaper tests are not parallel: roles are cluster-wide, so a pass would
// reap the orphans of any test running beside it.

// staleLabel is a label of this plugin that expired long ago.
const staleLabel = `{"managed_by":"vault-plugin-database-postgres","vault_role":"x","display_name":"y","created":"1999-01-01T00:00:00Z","expires":"2000-01-01T00:00:00Z"}`

// keptRoles makes the roles a pass must leave alone, keyed by why each stays.
func keptRoles(t *testing.T, db *Postgres, a *pgxpool.Pool, keeper string, now time.Time) map[string]string {
	t.Helper()
	return map[string]string{
		"in its grace period":     orphanUser(t, db, now.Add(-time.Minute)),
		"live":                    orphanUser(t, db, now.Add(time.Hour)),
		"commented at creation":   orphanUser(t, db, now.Add(-2*time.Hour), `COMMENT ON ROLE "{{name}}" IS 'owned by billing';`),
		"unlabelled":              plainRole(t, a, "reapplain", ""),
		"a DBA's note":            plainRole(t, a, "reapnote", "vault-plugin-database-postgres managed_by nobody"),
		"someone else's label":    plainRole(t, a, "reapother", strings.Replace(staleLabel, "vault-plugin-database-postgres", "teleport", 1)),
		"broken JSON":             plainRole(t, a, "reapbroken", strings.TrimSuffix(staleLabel, "}")),
		"label without expires":   plainRole(t, a, "reapnoexp", `{"managed_by":"vault-plugin-database-postgres"}`),
		"expires not a string":    plainRole(t, a, "reapnum", `{"managed_by":"vault-plugin-database-postgres","expires":946684800}`),
		"key in other case":       plainRole(t, a, "reapcase", `{"Managed_By":"vault-plugin-database-postgres","expires":"2000-01-01T00:00:00Z"}`),
		"label in a JSON array":   plainRole(t, a, "reaparray", "["+staleLabel+"]"),
		"the reassign_owned_to":   keeper,
		"the connection's user":   pg.SuperUser,
		"expires far in a string": plainRole(t, a, "reapfar", strings.Replace(staleLabel, "2000-01-01", "2999-01-01", 1)),
	}
}

// labelStale gives an existing role staleLabel until the test ends.
func labelStale(t *testing.T, a *pgxpool.Pool, role string) {
	t.Helper()
	execSQL(t, a, fmt.Sprintf("COMMENT ON ROLE %s IS %s", render.QuoteIdent(role), render.QuoteLiteral(staleLabel)))
	t.Cleanup(func() { execSQL(t, a, fmt.Sprintf("COMMENT ON ROLE %s IS NULL", render.QuoteIdent(role))) })
}

// tableOwnedBy creates public.<prefix><random> (id int) owned by owner and
// drops it when the test ends.
func tableOwnedBy(t *testing.T, a *pgxpool.Pool, prefix, owner string) string {
	t.Helper()
	tbl := prefix + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE TABLE public.%s (id int); ALTER TABLE public.%s OWNER TO %s", tbl, tbl, render.QuoteIdent(owner)))
	t.Cleanup(func() { execSQL(t, a, "DROP TABLE IF EXISTS public."+tbl) })
	return tbl
}

func TestReaperReapsOnlyExpiredLabelledRoles(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "reapkeeper", "")
	db, logs := newReaperDB(t, map[string]interface{}{"reassign_owned_to": keeper, "reap_orphans_after": "1h"}, 24*time.Hour, true)
	now := time.Now()
	orphan := orphanUser(t, db, now.Add(-2*time.Hour))
	tbl := tableOwnedBy(t, a, "reaped_", orphan)
	execSQL(t, a, fmt.Sprintf("INSERT INTO public.%s VALUES (42)", tbl))
	orphan2 := orphanUser(t, db, now.Add(-3*time.Hour))
	keep := keptRoles(t, db, a, keeper, now)
	labelStale(t, a, keeper)
	comments := map[string]string{}
	for _, r := range keep {
		comments[r], _ = roleComment(t, a, r)
	}
	if c, _ := roleComment(t, a, pg.SuperUser); c != "" {
		t.Fatalf("the superuser has a comment already: %s", c)
	}
	labelStale(t, a, pg.SuperUser)
	comments[pg.SuperUser] = staleLabel

	res := reapNow(t, db)
	if res.reaped < 2 || res.failed != 0 || res.disabled != 0 {
		t.Fatalf("pass = %+v, want both orphans reaped and nothing failed", res)
	}
	for _, r := range []string{orphan, orphan2} {
		if roleExists(t, a, r) {
			t.Fatalf("orphan %q survived the pass", r)
		}
	}
	var owner string
	var n int
	if err := a.QueryRow(testCtx(t), fmt.Sprintf("SELECT (SELECT tableowner FROM pg_tables WHERE tablename = '%s'), (SELECT id FROM public.%s)", tbl, tbl)).Scan(&owner, &n); err != nil || owner != keeper || n != 42 {
		t.Fatalf("orphan's table: owner %q, row %d (%v); want kept, owned by %q", owner, n, err, keeper)
	}
	assertKept(t, a, keep, comments)
	assertReapLogged(t, logs.String(), orphan, orphan2)
	if again := reapNow(t, db); again.expired != 0 {
		t.Fatalf("second pass = %+v, want nothing left", again)
	}
}

// assertKept checks that each role in keep exists with the comment it had.
func assertKept(t *testing.T, a *pgxpool.Pool, keep, comments map[string]string) {
	t.Helper()
	for why, r := range keep {
		if !roleExists(t, a, r) {
			t.Errorf("%s: role %q was reaped", why, r)
			continue
		}
		if c, _ := roleComment(t, a, r); c != comments[r] {
			t.Errorf("%s: comment of %q changed to %q", why, r, c)
		}
	}
}

// assertReapLogged checks the log has an info line for each reaped role,
// their labels and the pass's summary.
func assertReapLogged(t *testing.T, out string, reaped ...string) {
	t.Helper()
	for _, r := range reaped {
		if !strings.Contains(out, "revoked an orphaned role") || !strings.Contains(out, r) {
			t.Errorf("no info line for %q in the log", r)
		}
	}
	if !strings.Contains(out, `\"managed_by\":\"vault-plugin-database-postgres\"`) || !strings.Contains(out, "pass done") {
		t.Errorf("the log lacks the labels or the summary:\n%s", out)
	}
}

func TestReaperSparesItsUserAndReassignTarget(t *testing.T) {
	needPG(t)
	a := admin(t)
	adm, pw := "reapadm-"+randSuffix(), "Adm-"+randSuffix()
	tgt := plainRole(t, a, "reaptgt", staleLabel)
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s; GRANT %s TO %s; COMMENT ON ROLE %s IS %s",
		render.QuoteIdent(adm), render.QuoteLiteral(pw), render.QuoteIdent(tgt), render.QuoteIdent(adm), render.QuoteIdent(adm), render.QuoteLiteral(staleLabel)))
	db, _ := newReaperDB(t, map[string]interface{}{"username": adm, "password": pw, "reassign_owned_to": tgt, "reap_orphans_after": "1s"}, 24*time.Hour, true)
	// After the plugin's sessions end: they own its revocation functions.
	t.Cleanup(func() {
		_ = db.Close()
		execSQL(t, a, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1", adm)
		execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(adm))
	})
	// A CREATEROLE admin labels its users and reaps them.
	orphan := orphanUser(t, db, time.Now().Add(-time.Hour))
	if l := readLabel(t, a, orphan); l["managed_by"] != labelManagedBy {
		t.Fatalf("label of a CREATEROLE admin's user = %v", l)
	}
	// Another admin's orphan: from PostgreSQL 16 this one may not drop
	// it, and leaves it to its own reaper without a warning.
	superDB, _ := newReaperDB(t, nil, 24*time.Hour, true)
	foreign := orphanUser(t, superDB, time.Now().Add(-time.Hour))
	res := reapNow(t, db)
	if res.failed != 0 || roleExists(t, a, orphan) {
		t.Fatalf("pass = %+v; orphan exists: %v", res, roleExists(t, a, orphan))
	}
	var version int
	if err := a.QueryRow(testCtx(t), "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version >= 160000 && (!roleExists(t, a, foreign) || res.beyond == 0) {
		t.Fatalf("PostgreSQL %d: the superuser's orphan exists: %v, pass %+v; want it left alone and counted", version, roleExists(t, a, foreign), res)
	}
	for _, r := range []string{adm, tgt} {
		if !roleExists(t, a, r) {
			t.Fatalf("%q was reaped", r)
		}
	}
}

// reapAtOnce runs one pass of each plugin at the same time.
func reapAtOnce(t *testing.T, dbs ...*Postgres) []reapResult {
	t.Helper()
	results := make([]reapResult, len(dbs))
	errs := make([]error, len(dbs))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = reapPass(ctx, db)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return results
}

// TestReaperTwoInstancesAtOnce: two reapers take no lock to keep apart, so
// neither skips its pass or waits for the other's: while one pass waits
// for a lock on an orphan's table, the other's runs and waits beside it.
// Released, both finish: every orphan is gone, its table handed over once
// with its rows, and neither pass fails or warns.
func TestReaperTwoInstancesAtOnce(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "reapkeeper", "")
	cfg := map[string]interface{}{"reassign_owned_to": keeper, "reap_orphans_after": "1s", "lock_timeout": "20s"}
	dbs := make([]*Postgres, 2)
	logs := make([]*logBuffer, 2)
	for i := range dbs {
		dbs[i], logs[i] = newReaperDB(t, cfg, 24*time.Hour, true)
	}
	var orphans, tables []string
	for i := 0; i < 6; i++ {
		o := orphanUser(t, dbs[i%2], time.Now().Add(-time.Hour))
		tbl := tableOwnedBy(t, a, "reaped3_", o)
		execSQL(t, a, fmt.Sprintf("INSERT INTO public.%s VALUES (42)", tbl))
		orphans, tables = append(orphans, o), append(tables, tbl)
	}
	results := reapBesideAStuckPass(t, a, dbs, tables)
	for i, res := range results {
		if res.expired != len(orphans) || res.failed != 0 || res.disabled != 0 || strings.Contains(logs[i].String(), "[WARN]") || strings.Contains(logs[i].String(), "[ERROR]") {
			t.Errorf("instance %d: pass %+v, want all %d orphans seen and none failed; log:\n%s", i, res, len(orphans), logs[i])
		}
	}
	for i, r := range orphans {
		if roleExists(t, a, r) {
			t.Errorf("orphan %q survived; passes %+v", r, results)
		}
		var owner string
		var rows int
		if err := a.QueryRow(testCtx(t), fmt.Sprintf("SELECT (SELECT tableowner FROM pg_tables WHERE tablename = $1), (SELECT count(*) FROM public.%s WHERE id = 42)", tables[i]), tables[i]).Scan(&owner, &rows); err != nil || owner != keeper || rows != 1 {
			t.Errorf("table %s: owner %q, %d rows (%v); want %q, its one row", tables[i], owner, rows, err, keeper)
		}
	}
}

// reapBesideAStuckPass holds every table, runs the first plugin's pass
// until it waits for one, then the second's until it waits too (or ends),
// then releases the tables and returns both passes' results.
func reapBesideAStuckPass(t *testing.T, a *pgxpool.Pool, dbs []*Postgres, tables []string) []reapResult {
	t.Helper()
	commit := holdTables(t, tables...)
	ctx := testCtx(t)
	results := make([]reapResult, len(dbs))
	errs := make([]error, len(dbs))
	var ended sync.WaitGroup
	var done atomic.Int32
	pass := func(i int) {
		ended.Add(1)
		go func() {
			defer ended.Done()
			results[i], errs[i] = reapPass(ctx, dbs[i])
			done.Add(1)
		}()
	}
	pass(0)
	waitFor(t, func() bool { return lockWaiters(t, a, tables) >= 1 || done.Load() > 0 })
	pass(1)
	waitFor(t, func() bool { return lockWaiters(t, a, tables) >= 2 || done.Load() > 0 })
	commit()
	ended.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return results
}

func TestReaperTwoDatabasesOfOneClusterAtOnce(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "reapkeeper", "")
	// Roles are per cluster: both reapers find the same orphans, and only
	// the revocation's own idempotence keeps them apart.
	other := "reapdb_" + randSuffix()
	execSQL(t, a, "CREATE DATABASE "+other)
	t.Cleanup(func() { execSQL(t, a, "DROP DATABASE "+other+" WITH (FORCE)") })
	cfg := map[string]interface{}{"reassign_owned_to": keeper, "reap_orphans_after": "1s"}
	dbA, logA := newReaperDB(t, cfg, 24*time.Hour, true)
	cfgB := map[string]interface{}{"reassign_owned_to": keeper, "reap_orphans_after": "1s", "connection_url": pg.TemplateURL(other)}
	dbB, logB := newReaperDB(t, cfgB, 24*time.Hour, true)
	var orphans, tables []string
	for i := 0; i < 6; i++ {
		o := orphanUser(t, dbA, time.Now().Add(-time.Hour))
		orphans, tables = append(orphans, o), append(tables, tableOwnedBy(t, a, "reaped2_", o))
	}
	results := reapAtOnce(t, dbA, dbB)
	for i, r := range orphans {
		if roleExists(t, a, r) {
			t.Fatalf("orphan %q survived; passes %+v", r, results)
		}
		var owner string
		if err := a.QueryRow(testCtx(t), "SELECT tableowner FROM pg_tables WHERE tablename = $1", tables[i]).Scan(&owner); err != nil || owner != keeper {
			t.Fatalf("table %s: owner %q (%v), want %q", tables[i], owner, err, keeper)
		}
	}
	for i, l := range []*logBuffer{logA, logB} {
		if results[i].failed != 0 || strings.Contains(l.String(), "[ERROR]") {
			t.Fatalf("instance %d: pass %+v, log:\n%s", i, results[i], l)
		}
	}
	t.Logf("passes: %+v", results)
}

func TestReaperLoopReapsAndCloseStopsIt(t *testing.T) {
	needPG(t)
	a := admin(t)
	keeper := plainRole(t, a, "reapkeeper", "")
	cfg := map[string]interface{}{"reassign_owned_to": keeper, "reap_orphans_after": "1s"}
	db, logs := newReaperDB(t, cfg, 20*time.Millisecond, true)
	orphan := orphanUser(t, db, time.Now().Add(-time.Hour))
	// The log line follows the drop: wait for both.
	waitFor(t, func() bool { return !roleExists(t, a, orphan) && strings.Contains(logs.String(), orphan) })
	if !strings.Contains(logs.String(), orphan) {
		t.Fatalf("no log line for %q:\n%s", orphan, logs)
	}
	first := db.state.Load().reaper
	// Initialize again: the old state's reaper ends, a new one starts.
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: mergeConfig(cfg), VerifyConnection: true})
	assertStopped(t, first)
	second := db.state.Load().reaper
	if second == nil || second == first {
		t.Fatal("no new reaper after Initialize")
	}
	orphan2 := orphanUser(t, db, time.Now().Add(-time.Hour))
	waitFor(t, func() bool { return !roleExists(t, a, orphan2) })
	dbtesting.AssertClose(t, db)
	assertStopped(t, second)
}

func TestReaperOffByDefault(t *testing.T) {
	db := newDB(t, nil)
	if r := db.state.Load().reaper; r != nil {
		t.Fatal("a reaper runs without reap_orphans_after")
	}
}

func TestReaperDatabaseDown(t *testing.T) {
	needPG(t)
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", port)
	db, logs := newReaperDB(t, map[string]interface{}{"connection_url": url, "reap_orphans_after": "1s"}, 10*time.Millisecond, false)
	waitFor(t, func() bool { return strings.Count(logs.String(), "orphan reaper: pass failed") >= 2 })
	dbtesting.AssertClose(t, db)
	out := logs.String()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(line, "[WARN]") && !strings.Contains(line, "initialized") {
			t.Errorf("unexpected log line: %s", line)
		}
	}
	if strings.Contains(out, pg.SuperPassword) {
		t.Fatal("the log holds the password")
	}
}

// assertStopped checks that the reaper's goroutine has ended: stop waits for
// it, so by the time Initialize or Close returns, done is closed.
func assertStopped(t *testing.T, r *reaper) {
	t.Helper()
	if r == nil {
		t.Fatal("no reaper")
	}
	select {
	case <-r.done:
	default:
		t.Fatal("the reaper goroutine still runs after its state was retired")
	}
}

func TestReaperConfig(t *testing.T) {
	c, _, err := parseConfig(map[string]interface{}{"connection_url": "postgres://x"})
	if err != nil || !c.LabelRoles || c.ReapOrphansAfter != 0 {
		t.Fatalf("defaults: label_roles %v, reap_orphans_after %s (%v); want true, 0", c.LabelRoles, c.ReapOrphansAfter, err)
	}
	c, _, err = parseConfig(map[string]interface{}{"connection_url": "postgres://x", "label_roles": "false", "reap_orphans_after": "72h"})
	if err != nil || c.LabelRoles || c.ReapOrphansAfter != 72*time.Hour {
		t.Fatalf("label_roles %v, reap_orphans_after %s (%v)", c.LabelRoles, c.ReapOrphansAfter, err)
	}
	c, _, err = parseConfig(map[string]interface{}{"connection_url": "postgres://x", "reap_orphans_after": float64(3600)})
	if err != nil || c.ReapOrphansAfter != time.Hour {
		t.Fatalf("reap_orphans_after in seconds: %s (%v)", c.ReapOrphansAfter, err)
	}
	if _, _, err = parseConfig(map[string]interface{}{"connection_url": "postgres://x", "reap_orphans_after": "-1s"}); err == nil || !strings.Contains(err.Error(), "reap_orphans_after") {
		t.Fatalf("negative reap_orphans_after: %v", err)
	}
	for every, want := range map[time.Duration][2]time.Duration{time.Second: {time.Second / 2, time.Second}, time.Hour: {30 * time.Minute, time.Hour}} {
		for i := 0; i < 100; i++ {
			if d := jittered(every); d <= want[0] || d > want[1] {
				t.Fatalf("jittered(%s) = %s, want in (%s, %s]", every, d, want[0], want[1])
			}
		}
	}
}

// TestReaperCloseLeavesNoGoroutines: Close stops the reaper, and the reaper
// does not keep the retired state (its pools) alive.
func TestReaperCloseLeavesNoGoroutines(t *testing.T) {
	needPG(t)
	before := runtime.NumGoroutine()
	logger, logs := testLogger(t, hclog.Debug)
	db := newPostgres(logger)
	setReapEvery(t, db, 5*time.Millisecond)
	cfg := mergeConfig(map[string]interface{}{"reap_orphans_after": "1h"})
	dbtesting.AssertInitialize(t, db, dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true})
	waitFor(t, func() bool { return strings.Count(logs.String(), "pass done") >= 3 })
	st := db.state.Load()
	dbtesting.AssertClose(t, db)
	if !st.closed.Load() {
		t.Fatal("the retired state's pools are still open after Close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		// The configuration warning about a superuser reassign target is
		// expected here; a warning from the reaper is not.
		if strings.Contains(line, "[WARN]") && !strings.Contains(line, "reassign_owned_to is a superuser") {
			t.Fatalf("warnings:\n%s", logs)
		}
	}
}
