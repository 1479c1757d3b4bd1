package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	needPG(t)
	cfg := mergeConfig(extra)
	db := newPostgres(hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testWriter{t}}))
	if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: cfg, VerifyConnection: true}); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
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

// execSQL runs sql as the superuser and fails the test on error.
func execSQL(t testing.TB, a *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	// Parallel tests GRANT on shared objects: retry "tuple concurrently
	// updated" and other transient failures, as the plugin does.
	err := withRetry(testCtx(t), func() error {
		_, err := a.Exec(testCtx(t), sql, args...)
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
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

// mustExec runs sql on c and fails the test on error.
func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(testCtx(t), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// revokeDropped revokes user through the plugin and checks the role is gone.
func revokeDropped(t *testing.T, db *Postgres, a *pgxpool.Pool, user string) {
	t.Helper()
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	if roleExists(t, a, user) {
		t.Fatalf("role %q still exists", user)
	}
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

// newLoggedDB is newDB whose warnings are also kept in a logBuffer.
func newLoggedDB(t testing.TB, extra map[string]interface{}) (*Postgres, *logBuffer) {
	t.Helper()
	needPG(t)
	logs := &logBuffer{}
	db := newPostgres(hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: io.MultiWriter(testWriter{t}, logs)}))
	if _, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: mergeConfig(extra), VerifyConnection: true}); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, logs
}

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

// attackerAccount is a login role the holder of a lease also controls (an
// ordinary application account): the prize of an escalation.
func attackerAccount(t *testing.T, a *pgxpool.Pool) (string, string) {
	t.Helper()
	user, password := "acct_"+randSuffix(), "Aa1-"+randSuffix()
	execSQL(t, a, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", render.QuoteIdent(user), render.QuoteLiteral(password)))
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+render.QuoteIdent(user)) })
	return user, password
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

// plantFormat creates public.format(text, text) and public.format(text,
// text, text), better matches than pg_catalog's variadic format() for a
// call with two or three text arguments, which make acct a superuser when a
// superuser calls them, and otherwise do format's work.
func plantFormat(t *testing.T, c *pgx.Conn, acct string) {
	t.Helper()
	mustExec(t, c, fmt.Sprintf(`
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
	mustExec(t, l.c, fmt.Sprintf(`
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
