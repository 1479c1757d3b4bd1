package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// --- The server, the plugin and the test's plumbing ---

// pg is the server every test in this package uses.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	flag.Parse() // so testing.Short can be read before m.Run
	if !testing.Short() {
		s, err := pgtest.Start(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer s.Stop()
		pg = s
		fmt.Fprintf(os.Stderr, "tests use PostgreSQL from %s on %s:%d\n", s.Source, s.Host, s.Port)
	}
	return m.Run()
}

func needPG(t testing.TB) {
	t.Helper()
	if pg == nil {
		t.Skip("needs PostgreSQL; skipped under -short")
	}
}

// needTestCA is needPG for a server that a test CA signed, as the local
// cluster is (not one from PG_URL or Docker).
func needTestCA(t testing.TB) {
	t.Helper()
	needPG(t)
	if pg.CAPEM == "" {
		t.Skip("server has no test CA (PG_URL or Docker)")
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// baseConfig is the plugin configuration for the superuser.
func baseConfig() map[string]interface{} {
	return map[string]interface{}{
		"connection_url": pg.TemplateURL(""),
		"username":       pg.SuperUser,
		"password":       pg.SuperPassword,
	}
}

// mergeConfig is baseConfig with the keys of extra set.
func mergeConfig(extra map[string]interface{}) map[string]interface{} {
	cfg := baseConfig()
	for k, v := range extra {
		cfg[k] = v
	}
	return cfg
}

// newDB returns an initialized plugin; extra overrides baseConfig keys.
func newDB(t testing.TB, extra map[string]interface{}) *Postgres {
	t.Helper()
	db, _ := newLoggedDB(t, extra)
	return db
}

// newLoggedDB is newDB with its warnings kept in a logBuffer.
func newLoggedDB(t testing.TB, extra map[string]interface{}) (*Postgres, *logBuffer) {
	t.Helper()
	needPG(t)
	logger, logs := testLogger(t, hclog.Warn)
	db := newPostgres(logger)
	if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: mergeConfig(extra), VerifyConnection: true}); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, logs
}

// logBuffer collects a plugin's log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testLogger is the one log sink of the tests: a logger at level whose
// lines are kept in the returned buffer, and shown in the test's output
// when the test fails.
func testLogger(t testing.TB, level hclog.Level) (hclog.Logger, *logBuffer) {
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() && logs.String() != "" {
			t.Logf("plugin log:\n%s", logs)
		}
	})
	return hclog.New(&hclog.LoggerOptions{Level: level, Output: logs}), logs
}

// appConfig returns plugin configuration overrides that tag every connection
// of one plugin instance with a unique application_name, so a test can count
// that instance's sessions in pg_stat_activity.
func appConfig(app string) map[string]interface{} {
	return map[string]interface{}{"connection_url": pg.TemplateURL("") + "&application_name=" + app}
}

// admin returns a superuser pool for checks from outside the plugin.
func admin(t testing.TB) *pgxpool.Pool {
	t.Helper()
	needPG(t)
	p, err := pg.Pool(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func randSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// execSQL runs sql (several statements at once when it has no args) on q
// (connection.go's execer: the superuser's pool, or a session)
// and fails the test on error. On a pool (parallel tests GRANT on shared
// objects) "tuple concurrently updated" and the other transient failures
// are retried, as the plugin does; a session's statement runs once, since
// it may be inside a transaction the test holds open.
func execSQL(t testing.TB, q execer, sql string, args ...any) {
	t.Helper()
	run := func() error {
		_, err := q.Exec(testCtx(t), sql, args...)
		return err
	}
	var err error
	if _, pooled := q.(*pgxpool.Pool); pooled {
		err = withRetry(testCtx(t), run)
	} else {
		err = run()
	}
	if c, ok := q.(*pgx.Conn); ok && err != nil {
		t.Fatalf("as %q: %s: %v", c.Config().User, sql, err)
	}
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// stallBound is how long a request may take where the old code waited for
// a lock without end.
const stallBound = 20 * time.Second

// boundedCtx is the test's context, cut to d.
func boundedCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(testCtx(t), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	err := pgtest.Poll(testCtx(t), 20*time.Second, 50*time.Millisecond, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal("condition not met within 20s")
	}
}

// refused reports whether err is a refusal whose text contains why.
func refused(err error, why string) bool {
	return err != nil && strings.Contains(err.Error(), why)
}

// unrelatedCert returns a fresh CA that the test server does not trust,
// and a client certificate with its key issued by it (all PEM).
func unrelatedCert(t testing.TB) (caPEM, certPEM, keyPEM string) {
	t.Helper()
	ca, err := pgtest.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = ca.Issue("client", "ec")
	if err != nil {
		t.Fatal(err)
	}
	return ca.PEM, certPEM, keyPEM
}

// --- Between the plugin and the server: the fault proxy and the fake server ---

// newProxy is a pgtest.Proxy in front of target (host:port), without a
// delay, closed when the test ends.
func newProxy(t testing.TB, target string) *pgtest.Proxy {
	t.Helper()
	p, err := pgtest.NewProxy(target, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// newPGProxy is newProxy in front of the test server.
func newPGProxy(t testing.TB) *pgtest.Proxy {
	t.Helper()
	needPG(t)
	return newProxy(t, net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
}

// proxyURL is a connection_url to the test server through p.
func proxyURL(p *pgtest.Proxy) string {
	through := *pg
	through.Port = p.Port()
	return through.TemplateURL("")
}

// newFakeServer is a pgtest.FakeServer (cert nil: it refuses TLS), closed
// when the test ends.
func newFakeServer(t testing.TB, cert *tls.Certificate) *pgtest.FakeServer {
	t.Helper()
	f, err := pgtest.NewFakeServer(cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// --- Catalog and server checks from outside the plugin ---

// roleExists reports whether the cluster has the role, read through a.
func roleExists(t testing.TB, a *pgxpool.Pool, name string) bool {
	t.Helper()
	ok, err := pgtest.RoleExists(testCtx(t), a, name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// roleComment reads a role's comment as a DBA would; ok is false when it
// has none.
func roleComment(t testing.TB, a *pgxpool.Pool, name string) (comment string, ok bool) {
	t.Helper()
	comment, ok, err := pgtest.RoleComment(testCtx(t), a, name)
	if err != nil {
		t.Fatalf("reading the comment of %q: %v", name, err)
	}
	return comment, ok
}

// validUntil reads a role's VALID UNTIL.
func validUntil(t testing.TB, a *pgxpool.Pool, name string) time.Time {
	t.Helper()
	until, err := pgtest.ValidUntil(testCtx(t), a, name)
	if err != nil {
		t.Fatalf("reading rolvaliduntil of %q: %v", name, err)
	}
	return until
}

func roleOID(t *testing.T, a *pgxpool.Pool, user string) uint32 {
	t.Helper()
	var oid uint32
	if err := a.QueryRow(testCtx(t), `SELECT oid FROM pg_roles WHERE rolname = $1`, user).Scan(&oid); err != nil {
		t.Fatalf("oid of %q: %v", user, err)
	}
	return oid
}

// readLabel reads a role's label through the README's DBA query (the
// ::jsonb cast) and decodes it.
func readLabel(t testing.TB, a *pgxpool.Pool, name string) map[string]string {
	t.Helper()
	var raw []byte
	if err := a.QueryRow(testCtx(t), "SELECT shobj_description(oid, 'pg_authid')::jsonb FROM pg_roles WHERE rolname = $1", name).Scan(&raw); err != nil {
		t.Fatalf("reading the label of %q with ::jsonb: %v", name, err)
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("label of %q is not an object of strings: %v (%s)", name, err, raw)
	}
	return m
}

// isSuper reports whether user is a superuser.
func isSuper(t *testing.T, a *pgxpool.Pool, user string) bool {
	t.Helper()
	var super bool
	if err := a.QueryRow(testCtx(t), "SELECT rolsuper FROM pg_roles WHERE rolname = $1", user).Scan(&super); err != nil {
		t.Fatal(err)
	}
	return super
}

// sessionsOf counts the server sessions tagged with application_name app.
func sessionsOf(t testing.TB, a *pgxpool.Pool, app string) int {
	t.Helper()
	var n int
	if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sessionsOf counts the sessions of a role by its oid: the sessions of a
// dropped role have no name.
func sessionsOfRole(t *testing.T, a *pgxpool.Pool, oid uint32) int {
	t.Helper()
	var n int
	if err := a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_stat_activity WHERE usesysid = $1`, oid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// safePathOf is the search_path the plugin's transaction settings give the
// statements that run code, in a fresh session of a.
func safePathOf(t testing.TB, a *pgxpool.Pool) string {
	t.Helper()
	return pathAfter(t, a, (&config{}).txSettings())
}

// sessionPathOf is a fresh session's own search_path, which the statements
// that run no code keep.
func sessionPathOf(t testing.TB, a *pgxpool.Pool) string {
	t.Helper()
	return pathAfter(t, a, "")
}

func pathAfter(t testing.TB, a *pgxpool.Pool, settings string) string {
	t.Helper()
	var path string
	err := pgx.BeginFunc(testCtx(t), a, func(tx pgx.Tx) error {
		if _, err := tx.Exec(testCtx(t), sessionReset+settings); err != nil {
			return err
		}
		return tx.QueryRow(testCtx(t), "SHOW search_path").Scan(&path)
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// holdTables opens a superuser transaction holding ACCESS SHARE on each
// table, which the hand-over's ALTER ... OWNER waits for; commit ends it.
func holdTables(t *testing.T, tables ...string) (commit func()) {
	t.Helper()
	c := connectAs(t, pg.SuperUser, pg.SuperPassword, "")
	execSQL(t, c, "BEGIN; LOCK TABLE public."+strings.Join(tables, ", public.")+" IN ACCESS SHARE MODE")
	return func() { execSQL(t, c, "COMMIT") }
}

// lockWaiters counts the backends waiting for a lock on any of the tables
// in public.
func lockWaiters(t *testing.T, a *pgxpool.Pool, tables []string) int {
	t.Helper()
	var n int
	err := a.QueryRow(testCtx(t), `SELECT count(DISTINCT pid) FROM pg_locks
		WHERE NOT granted AND relation IN (SELECT to_regclass('public.' || quote_ident(x)) FROM unnest($1::text[]) x)`, tables).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// lockWaiter waits until a backend other than pid not waits for a lock on
// public.table, and returns its pid.
func lockWaiter(t *testing.T, a *pgxpool.Pool, table string, not int) int {
	t.Helper()
	var pid int
	err := pgtest.Poll(testCtx(t), 20*time.Second, 20*time.Millisecond, func() error {
		return a.QueryRow(testCtx(t), `SELECT pid FROM pg_locks
			WHERE NOT granted AND relation = to_regclass('public.' || quote_ident($1)) AND pid <> $2
			LIMIT 1`, table, not).Scan(&pid)
	})
	if err != nil {
		t.Fatalf("no revocation waits for the lock on %s: %v", table, err)
	}
	return pid
}

// disabledUser makes, on a CREATEROLE admin's plugin, a user that its
// revocation can only disable: a third role granted it a privilege, which a
// CREATEROLE admin's DROP OWNED cannot take back.
func disabledUser(t *testing.T, db *Postgres, a *pgxpool.Pool, schema string, third thirdRole) (user, password string) {
	t.Helper()
	req := newUserReq(createStmt, fmt.Sprintf(`GRANT USAGE ON SCHEMA %s TO "{{name}}";`, render.QuoteIdent(schema)))
	user = dbtesting.AssertNewUser(t, db, req).Username
	t.Cleanup(func() {
		execSQL(t, a, "DO $$ BEGIN IF pg_catalog.to_regrole("+render.QuoteLiteral(render.QuoteIdent(user))+") IS NOT NULL THEN DROP OWNED BY "+render.QuoteIdent(user)+"; DROP ROLE "+render.QuoteIdent(user)+"; END IF; END $$")
	})
	third.grantTo(t, a, user)
	return user, req.Password
}

// disabledLab is a CREATEROLE admin's plugin on a database and schema of
// its own, and a third role whose table in that schema it can grant.
func disabledLab(t *testing.T) (*Postgres, *pgxpool.Pool, string, thirdRole) {
	t.Helper()
	a := admin(t)
	db, schema := revokeAdmins()[1].newDBAndSchema(t, a, "s5_")
	third := newThirdRole(t, a, schema)
	return db, a, schema, third
}

// lockWaiterOn waits until some backend waits for a lock on table (a qualified name).
func lockWaiterOn(t *testing.T, a *pgxpool.Pool, table string) {
	t.Helper()
	err := pgtest.Poll(testCtx(t), 20*time.Second, 20*time.Millisecond, func() error {
		var n int
		if err := a.QueryRow(testCtx(t), `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass`, table).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no waiter")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// --- Users, logins and sessions ---

func newUserReq(stmts ...string) dbplugin.NewUserRequest {
	return dbplugin.NewUserRequest{
		UsernameConfig: dbplugin.UsernameMetadata{DisplayName: "test", RoleName: "app"},
		Statements:     dbplugin.Statements{Commands: stmts},
		Password:       "Aa1-" + randSuffix() + "-pw",
		Expiration:     time.Now().Add(time.Hour),
	}
}

// createStmt is the creation statement most tests give their roles.
const createStmt = vaulttest.CreateRole

// connectAs opens a session as user.
func connectAs(t testing.TB, user, password, database string) *pgx.Conn {
	t.Helper()
	c, err := pg.Connect(testCtx(t), user, password, database)
	if err != nil {
		t.Fatalf("connect as %q: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// assertLogin proves the password works and a wrong one does not.
func assertLogin(t testing.TB, user, password string) {
	t.Helper()
	if err := pg.CanLogin(testCtx(t), user, password); err != nil {
		t.Fatalf("login as %q with the returned password failed: %v", user, err)
	}
	if err := pg.CanLogin(testCtx(t), user, password+"x"); err == nil {
		t.Fatalf("login as %q with a wrong password succeeded", user)
	}
}

func assertNoLogin(t testing.TB, user, password string) {
	t.Helper()
	if err := pg.CanLogin(testCtx(t), user, password); err == nil {
		t.Fatalf("login as %q still works", user)
	}
}

// userOwningTable creates a user that may create in schema public and, in a
// session as that user (left open), the table public.<prefix><random>.
func userOwningTable(t *testing.T, db *Postgres, prefix string) (user, password, table string, session *pgx.Conn) {
	t.Helper()
	req := newUserReq(createStmt, `GRANT CREATE ON SCHEMA public TO "{{name}}";`)
	user = dbtesting.AssertNewUser(t, db, req).Username
	table = prefix + randSuffix()
	session = connectAs(t, user, req.Password, "")
	if _, err := session.Exec(testCtx(t), fmt.Sprintf("CREATE TABLE public.%s (id int)", table)); err != nil {
		t.Fatal(err)
	}
	return user, req.Password, table, session
}

// leaseWithCreate is a dynamic user that may create in schema public (as
// on PostgreSQL ≤ 14 for everyone, or granted by the role's statements, as
// the package's own userOwningTable does), with an open session.
func leaseWithCreate(t *testing.T, db *Postgres, dbname string) (user, password string, c *pgx.Conn) {
	t.Helper()
	req := newUserReq(createStmt, `GRANT CREATE ON SCHEMA public TO "{{name}}";`)
	resp, err := db.NewUser(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Username, req.Password, connectAs(t, resp.Username, req.Password, dbname)
}

// plainRole creates a role outside the plugin, with comment unless "".
func plainRole(t *testing.T, a *pgxpool.Pool, prefix, comment string) string {
	t.Helper()
	name := prefix + "-" + randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s VALID UNTIL '2000-01-01'", render.QuoteIdent(name)))
	if comment != "" {
		execSQL(t, a, fmt.Sprintf("COMMENT ON ROLE %s IS %s", render.QuoteIdent(name), render.QuoteLiteral(comment)))
	}
	t.Cleanup(func() { execSQL(t, a, "DROP ROLE IF EXISTS "+render.QuoteIdent(name)) })
	return name
}

// renew renews user through db and checks rolvaliduntil.
func renew(t *testing.T, db *Postgres, a *pgxpool.Pool, user string, exp time.Time) {
	t.Helper()
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user, Expiration: &dbplugin.ChangeExpiration{NewExpiration: exp}})
	if until := validUntil(t, a, user); !until.Equal(exp) {
		t.Fatalf("rolvaliduntil = %s, want %s", until, exp)
	}
}

// orphanUser creates a labelled user whose lease ended at exp.
func orphanUser(t *testing.T, db *Postgres, exp time.Time, stmts ...string) string {
	t.Helper()
	req := newUserReq(append([]string{createStmt}, stmts...)...)
	req.Expiration = exp
	name := dbtesting.AssertNewUser(t, db, req).Username
	t.Cleanup(func() { execSQL(t, admin(t), "DROP ROLE IF EXISTS "+render.QuoteIdent(name)) })
	return name
}

// assertLoginOn proves the password works on s and a wrong one does not.
func assertLoginOn(t testing.TB, s *pgtest.Server, user, password string) {
	t.Helper()
	if err := s.CanLogin(testCtx(t), user, password); err != nil {
		t.Fatalf("login as %q on %s:%d failed: %v", user, s.Host, s.Port, err)
	}
	if err := s.CanLogin(testCtx(t), user, password+"x"); err == nil {
		t.Fatalf("login as %q on %s:%d with a wrong password succeeded", user, s.Host, s.Port)
	}
}

// cycleOn proves the plugin works on s: create, renew, rotate, revoke.
func cycleOn(t *testing.T, db *Postgres, s *pgtest.Server, a *pgxpool.Pool) {
	t.Helper()
	req := newUserReq(createStmt)
	user := dbtesting.AssertNewUser(t, db, req).Username
	assertLoginOn(t, s, user, req.Password)
	exp := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user,
		Expiration: &dbplugin.ChangeExpiration{NewExpiration: exp}})
	if until := validUntil(t, a, user); !until.Equal(exp) {
		t.Fatalf("renewal: rolvaliduntil = %s, want %s", until, exp)
	}
	rotateAndRevokeOn(t, db, s, a, user)
}

// rotateAndRevokeOn proves rotation and revocation of user on s.
func rotateAndRevokeOn(t *testing.T, db *Postgres, s *pgtest.Server, a *pgxpool.Pool, user string) {
	t.Helper()
	newPw := "Rot-" + randSuffix()
	dbtesting.AssertUpdateUser(t, db, dbplugin.UpdateUserRequest{Username: user,
		Password: &dbplugin.ChangePassword{NewPassword: newPw}})
	assertLoginOn(t, s, user, newPw)
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	if roleExists(t, a, user) {
		t.Fatalf("role %q survived revocation on %s:%d", user, s.Host, s.Port)
	}
}

// sessionDirt is what creation statements may leave on a session, by name:
// each a list of statements, with other a role to switch to.
func sessionDirt(other string) map[string][]string {
	return map[string][]string{
		"set role":                        {"SET ROLE " + render.QuoteIdent(other) + ";"},
		"set session authorization":       {"SET SESSION AUTHORIZATION " + render.QuoteIdent(other) + ";"},
		"standard_conforming_strings off": {"SET standard_conforming_strings = off;"},
		"search_path":                     {"SET search_path = lc_nowhere;"},
		"all at once": {"SET ROLE " + render.QuoteIdent(other) + ";", "SET standard_conforming_strings = off;",
			"SET search_path = lc_nowhere;", "SET password_encryption = md5;"},
		"local set role in DO": {"DO $$ BEGIN PERFORM set_config('role', " + render.QuoteLiteral(other) + ", false); END $$;"},
	}
}

// sessionProbe is a table that a creation statement, record, fills with
// what its session looks like: the role's name, current_user, session_user,
// standard_conforming_strings, search_path and the backend's pid.
type sessionProbe struct{ table, record string }

func newSessionProbe(t *testing.T, a *pgxpool.Pool) sessionProbe {
	t.Helper()
	p := sessionProbe{table: "lc_probe_" + randSuffix()}
	var others []string
	if err := a.QueryRow(testCtx(t), `SELECT coalesce(array_agg(a.grantee::regrole::text), '{}') FROM pg_namespace n, aclexplode(n.nspacl) a
		WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner`).Scan(&others); err != nil {
		t.Fatal(err)
	}
	if len(others) > 0 {
		t.Fatalf("an earlier test left CREATE on schema public to %v", others)
	}
	execSQL(t, a, "CREATE TABLE public."+p.table+" (name text, cu text, su text, scs text, sp text, pid int)")
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS public."+p.table) })
	// sp: the session's own search_path, which the plugin keeps for the
	// statements that run no code (an INSERT runs with pg_catalog, pg_temp).
	p.record = "INSERT INTO public." + p.table + " SELECT '{{name}}', current_user, session_user, current_setting('standard_conforming_strings'), current_setting('pgvault.session_path'), pg_backend_pid();"
	return p
}

// read returns what record saw when it ran for the role name.
func (p sessionProbe) read(t *testing.T, a *pgxpool.Pool, name string) (cu, su, scs, sp string, pid int) {
	t.Helper()
	if err := a.QueryRow(testCtx(t), "SELECT cu, su, scs, sp, pid FROM public."+p.table+" WHERE name = $1", name).Scan(&cu, &su, &scs, &sp, &pid); err != nil {
		t.Fatal(err)
	}
	return cu, su, scs, sp, pid
}

// --- Revocation: admins, third roles, reconnecting clients, the holding role ---

// revokeDropped revokes user through the plugin and checks the role is
// gone. DeleteUser is bounded by stallBound, so a revocation that waits on
// something the user holds fails the test instead of hanging it.
func revokeDropped(t *testing.T, db *Postgres, a *pgxpool.Pool, user string) {
	t.Helper()
	if _, err := db.DeleteUser(boundedCtx(t, stallBound), dbplugin.DeleteUserRequest{Username: user}); err != nil {
		t.Fatalf("DeleteUser(%q): %v", user, err)
	}
	if roleExists(t, a, user) {
		t.Fatalf("role %q survived DeleteUser", user)
	}
}

// assertRevoked checks the role is gone, or, where PostgreSQL would not let
// it be dropped, that it can no longer log in and belongs to no group.
func assertRevoked(t *testing.T, a *pgxpool.Pool, user, password string) {
	t.Helper()
	assertNoLogin(t, user, password)
	var canLogin bool
	var groups int
	err := a.QueryRow(testCtx(t), `SELECT rolcanlogin, (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = $1`, user).Scan(&canLogin, &groups)
	if err != nil {
		if strings.Contains(err.Error(), "no rows") {
			return // dropped
		}
		t.Fatal(err)
	}
	if canLogin || groups != 0 {
		t.Fatalf("role %q kept: rolcanlogin=%v, memberships=%d", user, canLogin, groups)
	}
}

// revokeAdmin is an admin configuration the revocation tests run under.
type revokeAdmin struct {
	name string
	user string // "" for the superuser
	// thirdRoleDrops says whether a role holding privileges granted by a
	// third role can be dropped: a superuser's DROP OWNED revokes them, a
	// CREATEROLE admin's cannot, so the role is disabled instead.
	thirdRoleDrops bool
	setup          func(t *testing.T, a *pgxpool.Pool, user, schema string)
}

func revokeAdmins() []revokeAdmin {
	return []revokeAdmin{
		{name: "superuser", thirdRoleDrops: true},
		{name: "createrole admin", user: "limited-" + randSuffix(), setup: func(t *testing.T, a *pgxpool.Pool, user, schema string) {
			// What managed services give: CREATEROLE, not superuser, owning
			// the application schema.
			execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD 'limited-pw'`, render.QuoteIdent(user)))
			shareHoldingRole(t, a, user)
			execSQL(t, a, fmt.Sprintf(`GRANT CREATE ON DATABASE postgres TO %s WITH GRANT OPTION`, render.QuoteIdent(user)))
			execSQL(t, a, fmt.Sprintf(`ALTER SCHEMA %s OWNER TO %s`, render.QuoteIdent(schema), render.QuoteIdent(user)))
		}},
	}
}

// newDBAndSchema creates a schema named prefix plus a random suffix and
// returns the plugin connected as adm: for the CREATEROLE admin, set up
// first to own the schema; for the superuser, as is.
func (adm revokeAdmin) newDBAndSchema(t *testing.T, a *pgxpool.Pool, prefix string) (*Postgres, string) {
	t.Helper()
	schema := prefix + randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE SCHEMA %s`, render.QuoteIdent(schema)))
	extra := map[string]interface{}{}
	if adm.user != "" {
		adm.setup(t, a, adm.user, schema)
		extra["username"], extra["password"] = adm.user, "limited-pw"
	}
	return newDB(t, extra), schema
}

// thirdRole is a role, neither the admin nor a dynamic user, that owns the
// table third_t in schema and grants on it.
type thirdRole struct{ name, schema string }

// newThirdRole makes the third role and its table, both dropped when the
// test ends.
func newThirdRole(t *testing.T, a *pgxpool.Pool, schema string) thirdRole {
	t.Helper()
	r := thirdRole{name: "grantor-" + randSuffix(), schema: schema}
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s`, render.QuoteIdent(r.name)))
	t.Cleanup(func() {
		execSQL(t, a, "DROP TABLE IF EXISTS "+r.table())
		execSQL(t, a, "DROP OWNED BY "+render.QuoteIdent(r.name)+"; DROP ROLE IF EXISTS "+render.QuoteIdent(r.name))
	})
	execSQL(t, a, fmt.Sprintf(`CREATE TABLE %s (id int)`, r.table()))
	execSQL(t, a, fmt.Sprintf(`ALTER TABLE %s OWNER TO %s`, r.table(), render.QuoteIdent(r.name)))
	execSQL(t, a, fmt.Sprintf(`GRANT USAGE ON SCHEMA %s TO %s`, render.QuoteIdent(schema), render.QuoteIdent(r.name)))
	return r
}

// table is the third role's table, qualified and quoted.
func (r thirdRole) table() string { return render.QuoteIdent(r.schema) + ".third_t" }

// grantTo has the third role grant SELECT on its table to user.
func (r thirdRole) grantTo(t *testing.T, a *pgxpool.Pool, user string) {
	t.Helper()
	execSQL(t, a, fmt.Sprintf(`SET ROLE %s; GRANT SELECT ON %s TO %s; RESET ROLE`, render.QuoteIdent(r.name), r.table(), render.QuoteIdent(user)))
}

// reconnectors are clients that log in as a user in a loop: each opens a
// session, runs query on it until the session is killed, and reconnects, as
// a connection pool does.
type reconnectors struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	attempts atomic.Int64
}

func startReconnectors(t *testing.T, n int, user, password, query string) *reconnectors {
	t.Helper()
	r := &reconnectors{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case <-r.stop:
					return
				default:
				}
				r.attempts.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := pg.Connect(ctx, user, password, "")
				cancel()
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				for {
					if _, err := c.Exec(context.Background(), query); err != nil {
						break
					}
					select {
					case <-r.stop:
						_ = c.Close(context.Background())
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
				_ = c.Close(context.Background())
			}
		}()
	}
	t.Cleanup(r.close)
	return r
}

func (r *reconnectors) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// waitAttempts waits until the clients made n more login attempts.
func (r *reconnectors) waitAttempts(t *testing.T, n int64) {
	t.Helper()
	from := r.attempts.Load()
	waitFor(t, func() bool { return r.attempts.Load() >= from+n })
}

// assertNoSessionSurvives checks, while the clients keep reconnecting, that
// no session of the revoked role is left and none can start.
func assertNoSessionSurvives(t *testing.T, a *pgxpool.Pool, r *reconnectors, oid uint32, user, password string) {
	t.Helper()
	if n := sessionsOfRole(t, a, oid); n != 0 {
		t.Fatalf("%d session(s) of %q alive after DeleteUser returned success", n, user)
	}
	r.waitAttempts(t, 20)
	if n := sessionsOfRole(t, a, oid); n != 0 {
		t.Fatalf("%d session(s) of %q started after DeleteUser returned success", n, user)
	}
	assertNoLogin(t, user, password)
}

// ensureHoldingRole makes the holding role as the plugin would, if no
// revocation has yet: a revocation that makes it while it waits for a lock
// holds up the others (TestLockoutFirstHandOverHoldsUpNoOther), which
// tests of something else must not depend on.
func ensureHoldingRole(t *testing.T, a *pgxpool.Pool) {
	t.Helper()
	execSQL(t, a, fmt.Sprintf(`DO $$ BEGIN
		IF to_regrole(%[1]s) IS NULL THEN
			CREATE ROLE %[2]s NOLOGIN NOINHERIT;
		END IF;
	EXCEPTION WHEN duplicate_object THEN
		NULL;
	END $$`, render.QuoteLiteral(holdingRole), render.QuoteIdent(holdingRole)))
}

// pg16 is server_version_num of PostgreSQL 16, which narrowed CREATEROLE: an
// admin that is not a superuser may alter, drop and grant only roles it
// holds ADMIN OPTION on, which it gets on the roles it creates itself.
const pg16 = 160000

// createroleAdmin makes a CREATEROLE admin (what managed services give) and
// returns its name and password.
func createroleAdmin(t *testing.T, a *pgxpool.Pool) (string, string) {
	t.Helper()
	user, pw := "cradmin-"+randSuffix(), "Cr-"+randSuffix()
	execSQL(t, a, fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD %s`, render.QuoteIdent(user), render.QuoteLiteral(pw)))
	shareHoldingRole(t, a, user)
	return user, pw
}

// shareHoldingRole makes the holding role if no revocation has yet, and
// lets admin, a CREATEROLE role, grant it to itself: what docs/revocation.md
// tells an operator to do as a superuser when several admins share a
// cluster (from PostgreSQL 16 only a role with ADMIN OPTION on a role may
// grant it, and the role that made it first holds that).
func shareHoldingRole(t *testing.T, a *pgxpool.Pool, admin string) {
	t.Helper()
	ensureHoldingRole(t, a)
	execSQL(t, a, fmt.Sprintf("GRANT %s TO %s WITH ADMIN OPTION", render.QuoteIdent(holdingRole), render.QuoteIdent(admin)))
}

// --- Attacks: an isolated database, an attacker, code that records whom it ran as ---

// isolatedDB creates a database of its own, so that objects a test plants
// in its public schema cannot reach other tests, and returns its name and a
// superuser pool to it.
func isolatedDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	a := admin(t)
	name := "rv_" + randSuffix()
	execSQL(t, a, "CREATE DATABASE "+render.QuoteIdent(name))
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP DATABASE IF EXISTS "+render.QuoteIdent(name)+" WITH (FORCE)")
	})
	cfg, err := pgxpool.ParseConfig(pg.URL(pg.SuperUser, pg.SuperPassword, name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgxpool.NewWithConfig(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return name, p
}

// newUserInBackground runs NewUser for req on a goroutine of its own; its
// error arrives on res, and once it has, *user is the username it returned.
func newUserInBackground(t *testing.T, db *Postgres, req dbplugin.NewUserRequest) (res chan error, user *string) {
	res, user = make(chan error, 1), new(string)
	go func() {
		resp, err := db.NewUser(testCtx(t), req)
		*user = resp.Username
		res <- err
	}()
	return res, user
}

// attackerAccount is a login role the holder of a lease also controls (an
// ordinary application account): the prize of an escalation.
func attackerAccount(t *testing.T, a *pgxpool.Pool) (string, string) {
	t.Helper()
	user, password := "acct_"+randSuffix(), "Aa1-"+randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", render.QuoteIdent(user), render.QuoteLiteral(password)))
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
	return user, password
}

// attackLab is what a test of a dynamic user's reach starts from: a
// database of its own, the plugin on it (extra merged into its
// configuration, its warnings kept in logs), acct (an ordinary login role
// the attacker also controls), and a dynamic user that may create in schema
// public, with an open session c.
type attackLab struct {
	dbname             string
	a                  *pgxpool.Pool // superuser, on dbname
	db                 *Postgres
	logs               *logBuffer
	acct, acctPassword string
	user, password     string
	c                  *pgx.Conn
}

func newAttackLab(t *testing.T, extra map[string]interface{}) *attackLab {
	t.Helper()
	l := &attackLab{}
	l.dbname, l.a = isolatedDB(t)
	cfg := map[string]interface{}{"connection_url": pg.TemplateURL(l.dbname)}
	maps.Copy(cfg, extra)
	l.db, l.logs = newLoggedDB(t, cfg)
	l.acct, l.acctPassword = attackerAccount(t, l.a)
	l.user, l.password, l.c = leaseWithCreate(t, l.db, l.dbname)
	return l
}

// asAcct opens a session as acct in the lab's database.
func (l *attackLab) asAcct(t *testing.T) *pgx.Conn {
	t.Helper()
	return connectAs(t, l.acct, l.acctPassword, l.dbname)
}

// asSuper opens a session as the superuser in the lab's database.
func (l *attackLab) asSuper(t *testing.T) *pgx.Conn {
	t.Helper()
	return connectAs(t, pg.SuperUser, pg.SuperPassword, l.dbname)
}

// escalate is a PL/pgSQL statement that makes acct a superuser, and does
// nothing (no error) unless a superuser runs it.
func escalate(acct string) string {
	return fmt.Sprintf(`BEGIN EXECUTE 'ALTER ROLE %s SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;`, render.QuoteIdent(acct))
}

// formatPlantedLab is an attack lab whose dynamic user planted format()
// in public (plantFormat) and then closed its session.
func formatPlantedLab(t *testing.T) *attackLab {
	t.Helper()
	l := newAttackLab(t, nil)
	plantFormat(t, l.c, l.acct)
	_ = l.c.Close(testCtx(t))
	return l
}

// plantFormat creates public.format(text, text) and public.format(text,
// text, text), better matches than pg_catalog's variadic format() for a
// call with two or three text arguments, which make acct a superuser when a
// superuser calls them, and otherwise do format's work.
func plantFormat(t *testing.T, c *pgx.Conn, acct string) {
	t.Helper()
	execSQL(t, c, fmt.Sprintf(`
CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
	%[1]s
	RETURN pg_catalog.format(f, a);
END $f$;
CREATE FUNCTION public.format(f text, a text, b text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
	%[1]s
	RETURN pg_catalog.format(f, a, b);
END $f$;`, escalate(acct)))
}

// plantEscalation gives the lab the revoked user's payload: public.ran_as,
// made by the superuser, which anyone may insert into; and, made by the
// dynamic user, public.esc(), a VOLATILE function that records current_user
// in public.ran_as and makes acct a superuser when a superuser runs it, and
// public.ix(int), an IMMUTABLE wrapper that index, statistics, partition
// key and CHECK expressions may call.
func (l *attackLab) plantEscalation(t *testing.T) {
	t.Helper()
	execSQL(t, l.a, `CREATE TABLE public.ran_as (who text); GRANT INSERT ON public.ran_as TO PUBLIC`)
	execSQL(t, l.c, fmt.Sprintf(`
CREATE FUNCTION public.esc() RETURNS void VOLATILE LANGUAGE plpgsql AS $f$
BEGIN
	INSERT INTO public.ran_as VALUES (current_user);
	IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
		EXECUTE 'ALTER ROLE ' || quote_ident(%s) || ' SUPERUSER';
	END IF;
END $f$;
CREATE FUNCTION public.ix(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
BEGIN
	PERFORM public.esc();
	RETURN x;
END $f$;`, render.QuoteLiteral(l.acct)))
}

// clearRanAs forgets who ran esc() so far (the user itself, making its
// objects).
func (l *attackLab) clearRanAs(t *testing.T) {
	t.Helper()
	execSQL(t, l.a, "TRUNCATE public.ran_as")
}

// ranAs lists the roles esc() ran as since clearRanAs.
func (l *attackLab) ranAs(t *testing.T) []string {
	t.Helper()
	var who []string
	if err := l.a.QueryRow(testCtx(t), "SELECT coalesce(array_agg(DISTINCT who ORDER BY who), '{}') FROM public.ran_as").Scan(&who); err != nil {
		t.Fatal(err)
	}
	return who
}

// assertRanAsHolding checks that what (the action that followed the
// revocation) ran the revoked user's code, as the holding role and no one
// else, and that acct did not become a superuser.
func (l *attackLab) assertRanAsHolding(t *testing.T, what string) {
	t.Helper()
	who := l.ranAs(t)
	if isSuper(t, l.a, l.acct) {
		t.Errorf("%s ran the revoked user's code as %v: %s is now a superuser", what, who, l.acct)
	}
	switch {
	case len(who) == 0:
		t.Errorf("%s did not run the revoked user's code at all: the test proves nothing", what)
	case !slices.Equal(who, []string{holdingRole}):
		t.Errorf("%s ran the revoked user's code as %v, want only the holding role %s", what, who, holdingRole)
	}
}

// --- The reaper ---

// newReaperDB is newDB with the reaper's interval set to every (24h: only
// the passes a test runs itself) and the log kept at info level.
func newReaperDB(t *testing.T, extra map[string]interface{}, every time.Duration, verify bool) (*Postgres, *logBuffer) {
	t.Helper()
	needPG(t)
	cfg := mergeConfig(extra)
	logger, logs := testLogger(t, hclog.Info)
	db := newPostgres(logger)
	setReapEvery(t, db, every)
	if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: verify}); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, logs
}

// setReapEvery sets db's reaper interval for the rest of the test. Call it
// before Initialize starts the reaper.
func setReapEvery(t *testing.T, db *Postgres, every time.Duration) {
	reapEvery.Store(db, every)
	t.Cleanup(func() { reapEvery.Delete(db) })
}

// reapPass is one reaper pass; it returns its error instead of failing the
// test, so that it can run in a goroutine.
func reapPass(ctx context.Context, db *Postgres) (reapResult, error) {
	st, err := db.acquire()
	if err != nil {
		return reapResult{}, err
	}
	defer st.release()
	res, err := db.reapOnce(ctx, st)
	if err != nil {
		return res, fmt.Errorf("reaper pass: %w", err)
	}
	return res, nil
}

// reapNow runs one pass as the background loop would.
func reapNow(t *testing.T, db *Postgres) reapResult {
	t.Helper()
	res, err := reapPass(testCtx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// mergeMaps returns the keys of a and then b in a new map.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	m := make(map[string]interface{}, len(a)+len(b))
	for _, x := range []map[string]interface{}{a, b} {
		for k, v := range x {
			m[k] = v
		}
	}
	return m
}
