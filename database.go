// Package postgres is a HashiCorp Vault database secrets plugin for
// PostgreSQL built on pgx: dynamic users, static-role and root rotation, and a
// revocation that always finishes without losing data.
//
// This file holds the dbplugin methods; each validates, renders (render.go),
// executes and maps the error (errors.go). The long SQL they run lives in
// sql/*.sql, embedded and filled by sqltemplate.go. DEVELOPERS.md maps the
// rest.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/hashicorp/vault/sdk/helper/template"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// typeName is what Type reports to Vault.
const typeName = "postgres"

// Default statements, used when a role or Vault sends none.
const (
	defaultChangePassword   = `ALTER ROLE "{{username}}" WITH PASSWORD '{{password}}';`
	defaultChangeExpiration = `ALTER ROLE "{{username}}" VALID UNTIL '{{expiration}}';`
)

var (
	_ dbplugin.Database       = (*Postgres)(nil)
	_ logical.PluginVersioner = (*Postgres)(nil)
)

// Postgres implements dbplugin.Database. Its state is built whole by
// Initialize and swapped atomically; requests only read it, so they run in
// parallel on the pool with no plugin-wide lock. A request holds a reference
// to the state it started with, so re-initializing or closing the plugin
// never closes a pool under a request in flight.
type Postgres struct {
	state  atomic.Pointer[state]
	logger hclog.Logger
	// reapEvery, when set, replaces the orphan reaper's interval (tests).
	reapEvery time.Duration
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

	// dbPools are pools to the cluster's other databases, opened on demand
	// by revocation (an object owned in another database can only be
	// reassigned from a connection to it).
	dbPools sync.Map // database name → *pgxpool.Pool

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

// Initialize decodes and validates the configuration, builds a pool and, when
// Vault asks, proves the connection works with a real round trip. The config
// it returns is what Vault stores: the input unchanged plus the supported
// credential types, so it round-trips on the next start.
func (p *Postgres) Initialize(ctx context.Context, req dbplugin.InitializeRequest) (dbplugin.InitializeResponse, error) {
	cfg, unknown, err := parseConfig(req.Config)
	if err != nil {
		return dbplugin.InitializeResponse{}, err
	}
	if len(unknown) > 0 {
		p.logger.Warn("ignoring unknown configuration keys", "keys", strings.Join(unknown, ", "))
	}
	tmpl, err := newUsernameTemplate(cfg.UsernameTemplate)
	if err != nil {
		return dbplugin.InitializeResponse{}, err
	}
	poolCfg, err := cfg.poolConfig()
	if err != nil {
		return dbplugin.InitializeResponse{}, err
	}
	// Per-database pools copy poolCfg, hook included.
	poolCfg.PrepareConn = prepareSession
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return dbplugin.InitializeResponse{}, fmt.Errorf("creating connection pool: %w", err)
	}
	st := &state{cfg: cfg, txSettings: cfg.txSettings(), revokeTx: revokeTxSettings(cfg.LockTimeout),
		logger: p.logger, pool: pool, poolCfg: poolCfg, username: tmpl,
		revokeSlots: make(chan struct{}, max(1, cfg.MaxOpenConnections-1))}
	if req.VerifyConnection {
		if err := p.verifyConnection(ctx, st); err != nil {
			pool.Close()
			return dbplugin.InitializeResponse{}, err
		}
	}
	st.reaper = p.startReaper(st)
	p.retire(st)
	p.logger.Info("initialized", "hosts", hostList(poolCfg), "user", poolCfg.ConnConfig.User,
		"password_authentication", cfg.PasswordAuthentication, "max_open_connections", cfg.MaxOpenConnections)

	out := make(map[string]interface{}, len(req.Config)+1)
	for k, v := range req.Config {
		out[k] = v
	}
	resp := dbplugin.InitializeResponse{Config: out}
	resp.SetSupportedCredentialTypes([]dbplugin.CredentialType{dbplugin.CredentialTypePassword, dbplugin.CredentialTypeClientCertificate})
	return resp, nil
}

// verifyConnection proves the connection with one round trip, which also
// reads scram_iterations and checks the role revoked users' objects go to.
func (p *Postgres) verifyConnection(ctx context.Context, st *state) error {
	cfg := st.cfg
	var iterations *int64
	var exists, privileged bool
	err := st.pool.QueryRow(ctx, `SELECT `+scramIterationsSQL+`,
		r.oid IS NOT NULL,
		coalesce(r.rolsuper OR r.rolname = current_user OR pg_catalog.pg_has_role(r.oid, current_user, 'USAGE'), false)
		FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_roles r ON r.rolname = $1`,
		cfg.reassignTarget()).Scan(&iterations, &exists, &privileged)
	if err != nil {
		// The user the pool logs in as: connection_url may name it without
		// a username parameter.
		return failed(fmt.Sprintf("verifying connection to %s as %q", hostList(st.poolCfg), st.poolCfg.ConnConfig.User), err)
	}
	st.storeSCRAMIterations(iterations)
	return checkReassignTarget(cfg, exists, privileged)
}

// checkReassignTarget refuses a receiving role that would lend revoked
// users' code more rights than the holding role has, unless the operator
// opted in, and a configured one that does not exist.
func checkReassignTarget(cfg *config, exists, privileged bool) error {
	target := cfg.reassignTarget()
	if cfg.ReassignOwnedTo != "" && cfg.ReassignOwnedTo != holdingRole && !exists {
		return fmt.Errorf("reassign_owned_to: role %q does not exist (create it NOLOGIN, or leave the parameter out to use the plugin's holding role %s)", target, holdingRole)
	}
	if privileged && !cfg.AllowPrivilegedReassign {
		return fmt.Errorf("reassign_owned_to: role %q is a superuser or has the rights of the connection's user, so code a revoked user left behind (a trigger, an index expression, a view) would run with them; name an unprivileged NOLOGIN role, leave the parameter out to use the holding role %s, or set allow_privileged_reassign=true to accept the risk", target, holdingRole)
	}
	return nil
}

// NewUser creates a user from the role's creation statements, all in one
// transaction: any failure leaves no role behind.
func (p *Postgres) NewUser(ctx context.Context, req dbplugin.NewUserRequest) (dbplugin.NewUserResponse, error) {
	st, err := p.acquire()
	if err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	defer st.release()
	if req.CredentialType == dbplugin.CredentialTypeClientCertificate {
		return p.newCertUser(ctx, st, req) // certs.go
	}
	if req.CredentialType != dbplugin.CredentialTypePassword {
		return dbplugin.NewUserResponse{}, fmt.Errorf("credential type %q is not supported; use password or client_certificate", req.CredentialType)
	}
	if !hasStatements(req.Statements.Commands) {
		return dbplugin.NewUserResponse{}, errors.New("the role has no creation_statements: add e.g. CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';")
	}
	if req.Password == "" {
		return dbplugin.NewUserResponse{}, errors.New("no password was generated for the new user")
	}
	username, err := st.username.Generate(req.UsernameConfig)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("generating username: %w", err)
	}
	username = safeUsername(username)
	if err := checkUsername(username); err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("username_template %w", err)
	}
	verifier, err := st.passwordFor(ctx, username, req.Password)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("creating user %q: %w", username, err)
	}
	vals := newTemplateValues(username).withPassword(verifier).withExpiration(req.Expiration)
	sql, err := renderStatements(req.Statements.Commands, vals)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("creation_statements: %w", err)
	}
	if err := p.createLabelled(ctx, st, req, username, sql, vals, req.Password, verifier); err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	p.logger.Debug("created user", "username", username)
	return dbplugin.NewUserResponse{Username: username}, nil
}

// createLabelled runs the rendered creation statements with the label
// appended (labels.go), and the rollback statements after a failure. The
// error names the user and hides secrets, the password and its verifier.
func (p *Postgres) createLabelled(ctx context.Context, st *state, req dbplugin.NewUserRequest, username, sql string, vals templateValues, secrets ...string) error {
	label, err := st.labelStatement(username, req)
	if err != nil {
		return err
	}
	if err := p.create(ctx, st, username, sql+label); err != nil {
		p.rollback(ctx, st, req.RollbackStatements.Commands, vals)
		return st.failed(fmt.Sprintf("creating user %q", username), err, secrets...)
	}
	return nil
}

// connRetries bounds how often a request runs again on a fresh connection
// after the one it used was lost (a restarted server, a killed backend).
const connRetries = 3

// create runs the creation statements. When the connection is lost, the
// creation runs again on a fresh connection only when that is safe: nothing
// was sent, or the session that got it has ended and the role does not exist
// (the statements are one transaction, so a role that exists means all of
// them committed, and that is success).
func (p *Postgres) create(ctx context.Context, st *state, username, sql string) error {
	tag, err := st.execPooled(ctx, sql)
	unknown := func(lost, checkErr error) error {
		return joined(st.describe(lost)+"; reconnecting to find out whether the creation committed failed: "+describe(checkErr), lost, checkErr)
	}
	for attempt := 0; attempt < connRetries && connLost(err) && ctx.Err() == nil; attempt++ {
		if tag != "" && !pgconn.SafeToRetry(err) {
			if eerr := st.endSession(ctx, st.poolCfg.ConnConfig.User, tag); eerr != nil {
				return unknown(err, eerr)
			}
			exists, cerr := st.roleExists(ctx, username)
			if cerr != nil {
				return unknown(err, cerr)
			}
			if exists {
				p.logger.Warn("the connection was lost after the creation was sent; the user exists, so it committed", "username", username)
				return nil
			}
		}
		p.logger.Debug("connection lost; creating the user again on a fresh connection", "username", username, "error", describe(err))
		tag, err = st.execPooled(ctx, sql)
	}
	return err
}

func (st *state) roleExists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := st.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", name).Scan(&ok)
	return ok, err
}

// rollback runs the role's rollback_statements after a failed creation. The
// creation itself is one transaction, so PostgreSQL has already undone it;
// rollback statements only matter for side effects outside the database's
// transaction (dblink, NOTIFY consumers, external tables), and a role that
// no longer exists is not an error.
func (p *Postgres) rollback(ctx context.Context, st *state, stmts []string, vals templateValues) {
	if !hasStatements(stmts) {
		return
	}
	sql, err := renderStatements(stmts, vals)
	if err == nil {
		err = st.exec(ctx, st.pool, sql)
	}
	if err != nil && sqlState(err) != pgerrcode.UndefinedObject {
		p.logger.Warn("rollback_statements failed", "username", vals.Username, "error", redact(describe(err), vals.Password))
	}
}

// UpdateUser changes a user's password and/or expiration in one transaction.
// It serves static-role rotation and root rotation alike.
func (p *Postgres) UpdateUser(ctx context.Context, req dbplugin.UpdateUserRequest) (dbplugin.UpdateUserResponse, error) {
	st, err := p.acquire()
	if err != nil {
		return dbplugin.UpdateUserResponse{}, err
	}
	defer st.release()
	if req.Username == "" {
		return dbplugin.UpdateUserResponse{}, errors.New("no username given")
	}
	if err := checkUpdateCredential(req); err != nil {
		return dbplugin.UpdateUserResponse{}, err
	}
	if req.Password == nil && req.Expiration == nil {
		return dbplugin.UpdateUserResponse{}, errors.New("no change requested: give a new password or expiration")
	}
	sql, vals, err := st.updateSQL(ctx, req)
	if err != nil {
		return dbplugin.UpdateUserResponse{}, err
	}
	newPassword := ""
	if req.Password != nil {
		newPassword = req.Password.NewPassword
	}
	if err := p.runUpdate(ctx, st, req, sql, newPassword); err != nil {
		if sqlState(err) == pgerrcode.UndefinedObject {
			return dbplugin.UpdateUserResponse{}, fmt.Errorf("updating user %q: the user does not exist in the database", req.Username)
		}
		return dbplugin.UpdateUserResponse{}, st.failed(fmt.Sprintf("updating user %q", req.Username), err, newPassword, vals.Password, req.SelfManagedPassword)
	}
	p.logger.Debug("updated user", "username", req.Username, "password", req.Password != nil, "expiration", req.Expiration != nil)
	return dbplugin.UpdateUserResponse{}, nil
}

// updateSQL renders the password and expiration statements of an update,
// the relabel of a renewal, and a check that the role exists first.
func (st *state) updateSQL(ctx context.Context, req dbplugin.UpdateUserRequest) (string, templateValues, error) {
	vals := newTemplateValues(req.Username)
	var stmts []string
	if req.Password != nil {
		if req.Password.NewPassword == "" {
			return "", vals, errors.New("the new password is empty")
		}
		verifier, err := st.passwordFor(ctx, req.Username, req.Password.NewPassword)
		if err != nil {
			return "", vals, fmt.Errorf("updating user %q: %w", req.Username, err)
		}
		vals = vals.withPassword(verifier)
		stmts = append(stmts, orDefault(req.Password.Statements.Commands, defaultChangePassword)...)
	}
	if req.Expiration != nil {
		vals = vals.withExpiration(req.Expiration.NewExpiration)
		stmts = append(stmts, orDefault(req.Expiration.Statements.Commands, defaultChangeExpiration)...)
	}
	sql, err := renderStatements(stmts, vals)
	if err != nil {
		return "", vals, fmt.Errorf("rotation statements: %w", err)
	}
	label, err := relabelStatement(req)
	if err != nil {
		return "", vals, err
	}
	// A role missing at the start makes ALTER ROLE fail with 42704; the check
	// gives that a clear message without an extra round trip.
	check := "DO " + dollarQuote(fmt.Sprintf(" BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s) THEN RAISE EXCEPTION USING ERRCODE = 'undefined_object', MESSAGE = 'role does not exist'; END IF; END ", quoteLiteral(req.Username))) + ";\n"
	return check + sql + label, vals, nil
}

// runUpdate runs an update's statements, as the plugin or, for a
// self-managed static role, as the user itself, again on a fresh connection
// after a lost one when that is safe.
func (p *Postgres) runUpdate(ctx context.Context, st *state, req dbplugin.UpdateUserRequest, sql, newPassword string) error {
	sessionUser := st.poolCfg.ConnConfig.User
	if req.SelfManagedPassword != "" {
		sessionUser = req.Username
	}
	run := func() (string, error) {
		if req.SelfManagedPassword != "" {
			return st.execAs(ctx, req.Username, req.SelfManagedPassword, sql)
		}
		return st.execPooled(ctx, sql)
	}
	tag, err := run() // tag: marks the session the statements went to; "" if none
	for attempt := 0; attempt < connRetries && connLost(err) && ctx.Err() == nil; attempt++ {
		if req.Password != nil && tag != "" && !pgconn.SafeToRetry(err) {
			// Vault keeps whichever password we report: answer with what
			// the database holds, or Vault is locked out.
			err = st.settleRotation(ctx, req.Username, newPassword, sessionUser, tag, err)
			if err == nil {
				p.logger.Warn("the connection was lost after the password change was sent; the new password works, so the change took effect", "username", req.Username)
				break
			}
			if !errors.Is(err, errNotApplied) {
				break
			}
		}
		// Nothing was sent, the change provably did not apply, or it only
		// sets an expiration (the same again is harmless): run it again.
		p.logger.Debug("connection lost; updating the user again on a fresh connection", "username", req.Username)
		tag, err = run()
	}
	return err
}

// errNotApplied says a password change whose reply was lost provably did not
// take effect, so running it again is safe.
var errNotApplied = errors.New("the connection was lost after the change was sent, and the password was not changed (the new one is refused)")

// settleRotation answers a password change whose reply was lost with what
// the database holds. A login with the new password proves the change
// committed. Otherwise the session that sent it (tag, logged in as
// sessionUser) is ended and awaited, so that its transaction is final, and
// the passwords are tried again: the new one refused and the old one
// accepted prove nothing changed, and cause is reported. Anything else is an
// error that says the outcome is unknown, and why.
func (st *state) settleRotation(ctx context.Context, user, newPassword, sessionUser, tag string, cause error) error {
	if st.loginAs(ctx, user, newPassword) == nil {
		return nil
	}
	ended := st.endSession(ctx, sessionUser, tag)
	newErr := st.loginAs(ctx, user, newPassword)
	if newErr == nil {
		return nil
	}
	if ended == nil && sqlState(newErr) == pgerrcode.InvalidPassword {
		// The session that sent the change has ended, so its transaction is
		// final, and the new password is refused: the change did not apply.
		return joined(errNotApplied.Error()+": "+st.describe(cause), errNotApplied, cause)
	}
	why := []string{"logging in with the new password failed: " + describe(newErr)}
	if ended != nil {
		why = append(why, "the session that sent the change may still be running: "+describe(ended))
	}
	return joined(fmt.Sprintf("the connection was lost after the change was sent, and whether it took effect is unknown (%s): %s; find out which password works before rotating again",
		strings.Join(why, "; "), st.describe(cause)), cause, newErr, ended)
}

// DeleteUser revokes a user. Without revocation_statements it runs the
// default revocation (revoke.go), which always finishes; custom statements
// run atomically, and a user that no longer exists counts as revoked.
func (p *Postgres) DeleteUser(ctx context.Context, req dbplugin.DeleteUserRequest) (dbplugin.DeleteUserResponse, error) {
	st, err := p.acquire()
	if err != nil {
		return dbplugin.DeleteUserResponse{}, err
	}
	defer st.release()
	if req.Username == "" {
		return dbplugin.DeleteUserResponse{}, errors.New("no username given")
	}
	release, err := st.revokeSlot(ctx)
	if err != nil {
		return dbplugin.DeleteUserResponse{}, fmt.Errorf("revoking user %q: waiting for one of the %d revocations in flight to finish: %w", req.Username, cap(st.revokeSlots), err)
	}
	defer release()
	if !hasStatements(req.Statements.Commands) {
		if err := p.defaultRevoke(ctx, st, req.Username); err != nil {
			return dbplugin.DeleteUserResponse{}, fmt.Errorf("revoking user %q: %w", req.Username, err)
		}
		return dbplugin.DeleteUserResponse{}, nil
	}
	sql, err := renderStatements(req.Statements.Commands, newTemplateValues(req.Username))
	if err != nil {
		return dbplugin.DeleteUserResponse{}, fmt.Errorf("revocation_statements: %w", err)
	}
	if err := st.exec(ctx, st.pool, sql); err != nil {
		if sqlState(err) == pgerrcode.UndefinedObject {
			p.logger.Debug("revocation: user already gone", "username", req.Username)
			return dbplugin.DeleteUserResponse{}, nil
		}
		return dbplugin.DeleteUserResponse{}, failed(fmt.Sprintf("revoking user %q", req.Username), err)
	}
	return dbplugin.DeleteUserResponse{}, nil
}

// revokeSlot waits for room among the revocations in flight (revokeSlots),
// within ctx, and returns the function that gives it back.
func (st *state) revokeSlot(ctx context.Context) (func(), error) {
	select {
	case st.revokeSlots <- struct{}{}:
		return func() { <-st.revokeSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Type reports the database type to Vault.
func (p *Postgres) Type() (string, error) { return typeName, nil }

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
	st.dbPools.Range(func(_, v any) bool {
		v.(*pgxpool.Pool).Close()
		return true
	})
}

// passwordFor returns the form of password to render into {{password}}.
func (st *state) passwordFor(ctx context.Context, username, password string) (string, error) {
	iterations := 0
	switch st.cfg.PasswordAuthentication {
	case passwordAuthAuto, passwordAuthSCRAM:
		var err error
		if iterations, err = st.serverSCRAMIterations(ctx); err != nil {
			return "", err
		}
	}
	return passwordVerifier(st.cfg.PasswordAuthentication, iterations, username, password)
}

// scramIterationsSQL is the scram_iterations a fresh session of the
// plugin's user has (pg_settings' reset_val: what RESET, and so
// sessionReset, gives every request), not what a previous request may have
// SET on the pooled connection; NULL before PostgreSQL 16.
const scramIterationsSQL = "(SELECT reset_val::bigint FROM pg_catalog.pg_settings WHERE name = 'scram_iterations')"

// serverSCRAMIterations reads the server's scram_iterations once and caches
// it; concurrent first reads are harmless. A verifier hashed with the
// server's count costs what the server's own hashing would: an operator who
// raised it gets the stronger verifier.
func (st *state) serverSCRAMIterations(ctx context.Context) (int, error) {
	if n := st.scramIterations.Load(); n > 0 {
		return int(n), nil
	}
	var n *int64
	if err := st.pool.QueryRow(ctx, "SELECT "+scramIterationsSQL).Scan(&n); err != nil {
		return 0, failed("reading scram_iterations", err)
	}
	return st.storeSCRAMIterations(n), nil
}

// storeSCRAMIterations caches n, or PostgreSQL's fixed count where the
// server has no scram_iterations (nil), and returns what it cached.
func (st *state) storeSCRAMIterations(n *int64) int {
	v := int64(defaultSCRAMIterations)
	if n != nil && *n > 0 {
		v = *n
	}
	st.scramIterations.Store(v)
	return int(v)
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

func hasStatements(stmts []string) bool {
	for _, s := range stmts {
		if strings.TrimSpace(s) != "" {
			return true
		}
	}
	return false
}

func orDefault(stmts []string, def string) []string {
	if hasStatements(stmts) {
		return stmts
	}
	return []string{def}
}

func hostList(pc *pgxpool.Config) string {
	hosts := []string{fmt.Sprintf("%s:%d", pc.ConnConfig.Host, pc.ConnConfig.Port)}
	for _, fb := range pc.ConnConfig.Fallbacks {
		h := fmt.Sprintf("%s:%d", fb.Host, fb.Port)
		if h != hosts[len(hosts)-1] {
			hosts = append(hosts, h)
		}
	}
	return strings.Join(hosts, ",")
}
