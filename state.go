package postgres

// The plugin's state: the Postgres struct Vault calls, and the immutable
// state each request holds a reference to (pool, configuration, logger),
// swapped whole by Initialize and Close.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/hashicorp/vault/sdk/helper/template"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres implements dbplugin.Database. Its state is built whole by
// Initialize and swapped atomically; requests only read it, so they run in
// parallel on the pool with no plugin-wide lock. A request holds a reference
// to the state it started with, so re-initializing or closing the plugin
// never closes a pool under a request in flight.
type Postgres struct {
	state  atomic.Pointer[state]
	logger hclog.Logger
}

// state is everything a request needs, immutable once published.
type state struct {
	// refs counts the plugin's own reference, held from publication until
	// Initialize or Close retires the state, plus one per request in
	// flight. Whoever drops it to zero closes the pools; once at zero it
	// never rises again (see ref).
	refs atomic.Int64
	// closed makes close idempotent.
	closed atomic.Bool

	cfg *config
	// txSettings starts every transaction of operator statements
	// (config.txSettings), revokeTx each of a revocation's.
	txSettings, revokeTx string
	logger               hclog.Logger
	// noTempFunctions: the admin may not create the revocation's temporary
	// functions here (revokefn.go), so revocations run as DO blocks.
	noTempFunctions atomic.Bool
	// revokeSlots bounds the revocations in flight to one connection less
	// than the pool holds, so revocations waiting for locks can never take
	// every connection from credential requests.
	revokeSlots chan struct{}
	pool        *pgxpool.Pool
	poolCfg     *pgxpool.Config
	username    template.StringTemplate

	// scramIterations caches the server's scram_iterations for client-side
	// SCRAM hashing; 0 until first read.
	scramIterations atomic.Int64

	// reaper runs the orphan reaper (reap.go); nil when it is off.
	reaper *reaper
}

// New returns a Postgres wrapped in the SDK's error sanitizer, which strips
// the root password from any error returned to Vault.
func New() (interface{}, error) {
	db := newPostgres(defaultLogger())
	return dbplugin.NewDatabaseErrorSanitizerMiddleware(db, db.secretValues), nil
}

func newPostgres(logger hclog.Logger) *Postgres {
	return &Postgres{logger: logger}
}

// logOutput is the process's stderr as it was at start-up. go-plugin's Serve
// later points os.Stderr at a pipe that Vault discards, so a logger built
// after that (every multiplexed instance is) must not read os.Stderr then.
var logOutput = os.Stderr

func defaultLogger() hclog.Logger {
	level := hclog.LevelFromString(os.Getenv("PGVAULT_LOG_LEVEL"))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	// JSON lines on stderr are parsed by go-plugin and re-logged by Vault.
	return hclog.New(&hclog.LoggerOptions{Name: "postgres", Level: level, JSONFormat: true, Output: logOutput})
}

func (p *Postgres) secretValues() map[string]string {
	st := p.state.Load()
	if st == nil || st.cfg.Password == "" {
		return nil
	}
	// Every form a server message can quote the password in (redact.go).
	forms := secretForms(st.cfg.Password)
	m := make(map[string]string, len(forms))
	for _, f := range forms {
		m[f] = "[password]"
	}
	return m
}

// acquire returns the current state with a reference held for the caller,
// who must release it when done. A state retired between the load and the
// reference is skipped: by then p.state holds its successor (or nil after
// Close), so the loop ends.
func (p *Postgres) acquire() (*state, error) {
	for {
		st := p.state.Load()
		if st == nil {
			return nil, errors.New("plugin is not initialized: configure the connection first")
		}
		if st.ref() {
			return st, nil
		}
	}
}

// ref takes a reference unless the state has already been released for
// good; it never revives a state whose pools are closing.
func (st *state) ref() bool {
	for {
		n := st.refs.Load()
		if n <= 0 {
			return false
		}
		if st.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one closes the pools.
func (st *state) release() {
	if st.refs.Add(-1) == 0 {
		st.close()
	}
}

// retire swaps in next (nil on Close) and drops the plugin's reference to
// the state it replaces; requests still using that state keep it open.
func (p *Postgres) retire(next *state) {
	if next != nil {
		next.refs.Store(1)
	}
	if old := p.state.Swap(next); old != nil {
		old.reaper.stop()
		old.release()
	}
}

// connRetries bounds how often a request runs again on a fresh connection
// after the one it used was lost (a restarted server, a killed backend).
const connRetries = 3

func (st *state) roleExists(ctx context.Context, name string) (bool, error) {
	exists, _, err := st.roleLogin(ctx, name)
	return exists, err
}

// roleLogin reports whether the role exists and whether it may log in.
//
// This and the plugin's other one-statement queries (parameters, no reset in
// front) spell pg_catalog's operators, OPERATOR(pg_catalog.=): behind a
// transaction-pooling PgBouncer they may run on a server session another
// client left with any search_path (a failed batch whose COMMIT made an
// operator's SET search_path final, reset on another session), where an =
// a dynamic user planted in public would otherwise run as the admin.
func (st *state) roleLogin(ctx context.Context, name string) (exists, canLogin bool, err error) {
	err = st.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1), coalesce((SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1), false)", name).Scan(&exists, &canLogin)
	return exists, canLogin, err
}

// Close retires the state: new requests are refused at once, and the pools
// close when the last request in flight ends.
func (p *Postgres) Close() error {
	p.retire(nil)
	return nil
}

// close closes the pools. It runs when the last reference is released, so
// no request is left that could open another per-database pool (revocation
// opens them only while it holds a reference); a second call does nothing.
func (st *state) close() {
	if !st.closed.CompareAndSwap(false, true) {
		return
	}
	st.pool.Close()
}

// execAs runs sql on a one-off connection authenticated as another user, for
// self-managed static roles whose password Vault does not own. It reports
// the session tag its statements carried, "" if it could not connect.
func (st *state) execAs(ctx context.Context, user, password, sql string) (string, error) {
	conn, err := st.connectAs(ctx, user, password)
	if err != nil {
		return "", fmt.Errorf("connecting as %q with its current password: %w", user, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return st.execTagged(ctx, conn, sql)
}

// execPooled runs sql like execAtomic on one pooled connection and reports
// the session tag its statements carried, "" if no connection could be
// acquired.
func (st *state) execPooled(ctx context.Context, sql string) (string, error) {
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	return st.execTagged(ctx, conn.Conn(), sql)
}
