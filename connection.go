package postgres

// From config to pgxpool (poolConfig: runtime parameters, keepalives, the
// ping bound), and how statements run on it: one transaction, run again on
// a transient failure (transientFailures, which the revocation's exception
// handler also gets as SQL).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// poolConfig turns the configuration into a pgxpool configuration. The root
// credentials are never spliced into text that could be logged: placeholders
// are replaced by random tokens, the URL is parsed, and the tokens are then
// swapped for the real values in the parsed configuration.
func (c *config) poolConfig() (*pgxpool.Config, error) {
	connURL := c.ConnectionURL
	userTok, passTok := randomToken(), randomToken()
	if c.DisableEscaping {
		// The operator escaped the values themselves: insert them verbatim,
		// once the placeholders are known to stand where fillTokens allows.
		if err := placeholdersPlaced(connURL); err != nil {
			return nil, err
		}
		connURL = strings.ReplaceAll(connURL, "{{username}}", c.Username)
		connURL = strings.ReplaceAll(connURL, "{{password}}", c.Password)
	} else {
		connURL = strings.ReplaceAll(connURL, "{{username}}", userTok)
		connURL = strings.ReplaceAll(connURL, "{{password}}", passTok)
	}
	sslmode, sslmodeSet := sslmodeSetting(connURL)
	if c.wantsTLS() && !sslmodeSet {
		// A CA or client certificate says the operator wants verified
		// TLS; libpq's default (prefer) would fall back to plaintext.
		connURL = withSSLMode(connURL, defaultSSLModeWithTLS)
		sslmode = defaultSSLModeWithTLS
	}
	pc, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		// pgx errors can quote the input; never echo a URL that may hold a password.
		return nil, errors.New("connection_url could not be parsed: use postgres://{{username}}:{{password}}@host:5432/db?sslmode=… or a keyword/value string")
	}
	cc := pc.ConnConfig
	if err := fillTokens(cc, userTok, passTok, c.Username, c.Password); err != nil {
		return nil, err
	}
	if cc.User == "" {
		return nil, errors.New("connection_url has no user: add {{username}} and set username")
	}
	c.setRuntimeParams(cc)
	if err := c.applyTLS(cc, sslmode); err != nil {
		return nil, err
	}
	if !c.AllowCleartextPassword {
		// BuildFrontend is part of the shared pgconn.Config, so the guard
		// covers the primary host, every fallback and every copy of this
		// configuration (other databases, connections as another user).
		cc.BuildFrontend = guardedFrontend
		if unverifiedTLS(cc) {
			// TLS that accepts any certificate proves nothing about the
			// server: guard those connections as if they had no TLS.
			cc.BuildFrontend = guardedFrontendAll
		}
	}
	// No named prepared statements: they live in a server session, which a
	// transaction-pooling PgBouncer hands to another client after each
	// transaction. QueryExecModeExec sends each query with its arguments in
	// one round trip on the unnamed statement.
	cc.DefaultQueryExecMode = pgx.QueryExecModeExec
	c.setPoolLimits(pc)
	return pc, nil
}

// fillTokens puts the root credentials where connection_url held their
// placeholders, in the parsed configuration. {{username}} may stand in the
// user, the database and parameters' values, as the built-in fills it
// anywhere; {{password}} only in the password, so that it never reaches a
// setting the server shows (application_name) or a host name.
func fillTokens(cc *pgx.ConnConfig, userTok, passTok, user, password string) error {
	fill := func(v string) string { return strings.ReplaceAll(v, userTok, user) }
	cc.User, cc.Database = fill(cc.User), fill(cc.Database)
	cc.Password = strings.ReplaceAll(cc.Password, passTok, password)
	if strings.Contains(cc.User+cc.Database, passTok) {
		return errPasswordPlace
	}
	for k, v := range cc.RuntimeParams {
		if strings.Contains(v, passTok) {
			return errPasswordPlace
		}
		cc.RuntimeParams[k] = fill(v)
	}
	hosts := []string{cc.Host}
	for _, fb := range cc.Fallbacks {
		hosts = append(hosts, fb.Host)
	}
	for _, h := range hosts {
		if strings.Contains(h, userTok) || strings.Contains(h, passTok) {
			return errors.New("connection_url: {{username}} and {{password}} may not stand in a host name")
		}
	}
	return nil
}

// placeholdersPlaced checks where connection_url's placeholders stand, as
// fillTokens does, for disable_escaping, which splices the values into the
// text before parsing.
func placeholdersPlaced(connURL string) error {
	userTok, passTok := randomToken(), randomToken()
	u := strings.ReplaceAll(strings.ReplaceAll(connURL, "{{username}}", userTok), "{{password}}", passTok)
	pc, err := pgx.ParseConfig(u)
	if err != nil {
		// The values might complete what the text leaves open (a % before
		// {{password}}): where they stand cannot be told, so refused.
		return errors.New("connection_url with disable_escaping could not be parsed with its placeholders in place: put {{username}} and {{password}} only where a user name and a password stand (postgres://{{username}}:{{password}}@host:5432/db)")
	}
	if strings.Count(u, passTok) != strings.Count(pc.Password, passTok) {
		// A parameter the parse dropped (its escapes broken by the
		// placeholder) might hold it once the value completes them.
		return errPasswordPlace
	}
	return fillTokens(pc, userTok, passTok, "", "")
}

var errPasswordPlace = errors.New("connection_url: {{password}} may stand only in the password (postgres://{{username}}:{{password}}@… or password={{password}})")

// pgxV4Params are connection_url parameters of pgx v4 that pgx v5 does not
// know (it reads statement_cache_capacity and description_cache_capacity).
var pgxV4Params = []string{"prefer_simple_protocol", "statement_cache_mode", "min_read_buffer_size"}

// setRuntimeParams sets what every session starts with, in the startup
// packet.
func (c *config) setRuntimeParams(cc *pgx.ConnConfig) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	// pgx v4 (the built-in plugin's driver) read these from connection_url,
	// and operators behind PgBouncer set them; pgx v5 would send them to
	// the server as settings, which it refuses. This plugin never uses
	// named prepared statements (QueryExecModeExec), which is what they
	// were for.
	for _, k := range pgxV4Params {
		delete(cc.RuntimeParams, k)
	}
	// The built-in plugin's sessions run in UTC (it adds timezone=UTC to
	// connection_url): statements that write a timestamp without a zone,
	// or take a date of now(), behave the same here. A TimeZone in
	// connection_url wins.
	if _, ok := cc.RuntimeParams["timezone"]; !ok {
		if _, ok := cc.RuntimeParams["TimeZone"]; !ok {
			cc.RuntimeParams["timezone"] = "UTC"
		}
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = productName
	}
	// Statement rendering escapes literals the standard way ('' only);
	// pin the setting in the startup packet (no extra round trip) so a
	// server, database or role default of off cannot reinterpret a
	// backslash in a password.
	cc.RuntimeParams["standard_conforming_strings"] = "on"
	// lock_timeout is not here: a connection pooler (PgBouncer) refuses
	// startup parameters it does not know, and a session setting would not
	// survive its transaction pooling anyway. Every transaction sets it
	// (txSettings).
}

// txSettings is what every transaction of the plugin starts with, after
// sessionReset, in the same query string: the lock bound, and the
// search_path of statements that run code, pg_catalog then pg_temp, which no
// role but a superuser can put a routine or operator in (PostgreSQL never
// looks up routines or operators in pg_temp). The session's own path would
// let a role that can create in one of its schemas, or that leaves a
// routine there before it loses the right, plant a better-matching overload
// (format(text, text) beats format(text, VARIADIC "any")) for the admin to
// run; and any check of those schemas made when the transaction starts can
// be overtaken by a grant another request commits while this one waits for a
// lock. Both are LOCAL, so they hold through a transaction-pooling PgBouncer
// and end with the transaction.
func (c *config) txSettings() string {
	return lockTimeoutSQL(c.LockTimeout) + pinPathSQL
}

// lockTimeoutSQL sets lock_timeout for the rest of the transaction.
func lockTimeoutSQL(d time.Duration) string {
	return "SET LOCAL lock_timeout = " + strconv.FormatInt(d.Milliseconds(), 10) + ";\n"
}

// setPoolLimits bounds connection attempts, keeps idle connections alive,
// and sizes the pool.
func (c *config) setPoolLimits(pc *pgxpool.Config) {
	cc := pc.ConnConfig
	if cc.ConnectTimeout == 0 {
		// A host that drops packets must not hold a request until Vault's
		// own deadline: each host gets this long to answer.
		cc.ConnectTimeout = defaultConnectTimeout
	}
	// Keepalive probes keep NAT and load-balancer mappings of idle pooled
	// connections alive (AWS drops them after 350 s idle), and notice a
	// dead peer in about a minute instead of pgx's 5-minute default.
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}}
	cc.DialFunc = dialer.DialContext
	pc.ShouldPing = shouldPing

	pc.MaxConns = int32(c.MaxOpenConnections)
	pc.MinConns = 0
	if c.MaxConnectionLifetime > 0 {
		pc.MaxConnLifetime = c.MaxConnectionLifetime
	}
}

func randomToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "pgvaulttok" + hex.EncodeToString(b)
}

// shouldPing is the pool's liveness check for a connection it hands out: one
// idle for more than a second is pinged, as pgxpool does by default, but the
// ping gets pingTimeout, not the request's whole deadline. A connection whose
// NAT mapping was dropped swallows the ping without an answer; this way it is
// replaced by a fresh one and the request still succeeds. prepareSession
// clears the deadline again.
func shouldPing(_ context.Context, p pgxpool.ShouldPingParams) bool {
	if p.IdleDuration <= time.Second {
		return false
	}
	_ = p.Conn.PgConn().Conn().SetDeadline(time.Now().Add(pingTimeout))
	return true
}

// connLost reports a failure of the connection, not of the statements: the
// server went away (restart, failover, pg_terminate_backend, a dropped
// network path) before or while the request ran.
func connLost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// admin_shutdown, crash_shutdown, cannot_connect_now, and
		// connection exceptions: the session ended under the request.
		return strings.HasPrefix(pgErr.Code, "57P0") || strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return false // could not connect at all: retrying now will not help
	}
	return true
}

// execer is what exec needs: a pool, or a single connection.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// exec runs sql like execAtomic, after the transaction's settings
// (txSettings): the lock bound and a search_path no other role can write.
// Every statement an operator wrote runs this way.
func (st *state) exec(ctx context.Context, db execer, sql string) error {
	return execAtomic(ctx, db, st.withSettings(sql))
}

// execTagged is exec with a session tag (newSessionTag) it returns.
func (st *state) execTagged(ctx context.Context, db execer, sql string) (string, error) {
	tag := newSessionTag()
	return tag, execTagged(ctx, db, tag, st.withSettings(sql))
}

// withSettings is sql with what its transaction starts with (the lock bound)
// and the path each statement runs with. Statements that run no code
// (render.Split: roles created, altered, granted and commented on,
// privileges granted and revoked) run with the session's own search_path,
// as with the built-in plugin: it decides only which objects they name. But
// where the database has an event trigger, whose function a GRANT fires as
// the admin with the caller's path, they too run with pg_catalog, pg_temp.
// Every other statement (DO, SELECT, DML, COMMIT, …) runs with pg_catalog,
// pg_temp (txSettings), set LOCAL right before it: whatever ran before it
// (a COMMIT, a RESET ALL, a routine's set_config) may have undone the last
// setting. A statement that sets this session's search_path itself (SET
// search_path …, RESET search_path; a value cannot write one, values are
// rendered inside quotes) ends the switching: the statements after it run
// with what it set. SQL the splitter cannot follow runs with pg_catalog,
// pg_temp throughout. Statements with a SAVEPOINT, which PostgreSQL takes
// only in an explicit transaction block (the built-in runs every request in
// one), run between BEGIN and COMMIT; a BEGIN after statements of the same
// query string carries their transaction on, so the settings hold.
func (st *state) withSettings(sql string) string {
	stmts, ok := render.Split(sql)
	if !ok {
		return st.txSettings + sql
	}
	if slices.ContainsFunc(stmts, func(s render.Statement) bool { return s.Savepoint }) {
		return lockTimeoutSQL(st.cfg.LockTimeout) + "BEGIN;\n" + pathSwitches(stmts) + "COMMIT;\n"
	}
	return lockTimeoutSQL(st.cfg.LockTimeout) + pathSwitches(stmts)
}

// The statements that keep the session's search_path, pin it, and give it
// back, or keep it pinned where an event trigger may run (qualified calls
// and no operators, so they mean the same under either path).
const (
	keepSessionPath    = "SELECT pg_catalog.set_config('pgvault.session_path', pg_catalog.current_setting('search_path'), true);\n"
	pinPathSQL         = "SET LOCAL search_path = " + pinnedPath + ";\n"
	restoreSessionPath = "SELECT pg_catalog.set_config('search_path', CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_event_trigger) THEN '" + pinnedPath + "' ELSE pg_catalog.current_setting('pgvault.session_path') END, true);\n"
)

// pathSwitches is stmts with the path switches withSettings describes.
func pathSwitches(stmts []render.Statement) string {
	var b strings.Builder
	b.WriteString(keepSessionPath)
	restore := true // the session's path may not be the one in effect
	switching := true
	for _, s := range stmts {
		if switching && s.RunsCode {
			b.WriteString(pinPathSQL)
			restore = true
		} else if switching && restore && strings.TrimSpace(s.SQL) != ";" && strings.TrimSpace(s.SQL) != "" {
			b.WriteString(restoreSessionPath)
			restore = false
		}
		b.WriteString(s.SQL)
		b.WriteString("\n")
		if s.SetsSearchPath {
			switching = false
		}
		if s.EndsTransaction && switching {
			// SET LOCAL ended with the transaction: the path in effect
			// is the session's again.
			b.WriteString(keepSessionPath)
			restore = true
		}
	}
	return b.String()
}

// execAtomic runs sql (several statements) with the simple protocol in one
// round trip; PostgreSQL runs it as one implicit transaction. Transient
// failures of the whole transaction are retried with bounded, jittered
// exponential backoff, within the request's deadline. The statements start
// from a clean session (sessionReset).
func execAtomic(ctx context.Context, db execer, sql string) error {
	return execTagged(ctx, db, "", sql)
}

// execTagged is execAtomic with a session tag in front of everything (see
// newSessionTag). The session reset also follows the statements: a session
// setting they made (SET search_path, SET ROLE) must not reach the plugin's
// own queries that run on the connection next without a reset of their own
// (the role checks, session ending: one statement each, with parameters).
// A failed transaction undoes such settings by itself, except what a COMMIT
// among the statements made final, so a failure also resets the session.
func execTagged(ctx context.Context, db execer, tag, sql string) error {
	return withRetry(ctx, func() error {
		on := db
		if pool, ok := db.(*pgxpool.Pool); ok {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			on = conn.Conn()
		}
		_, err := on.Exec(ctx, tag+sessionReset+sql+"\n;\n"+sessionReset)
		if err != nil {
			resetAfterFailure(ctx, on)
			return err
		}
		return commitLeftOpen(ctx, on, tag)
	})
}

// commitLeftOpen commits the transaction block statements opened and left
// open (a BEGIN without COMMIT), as the built-in's own commit does; a pool
// would otherwise discard the connection, and with it everything they did.
// The COMMIT carries the request's session tag, as the statements did: after
// a lost reply, endSession must find the session that may still commit. The
// pinned path comes back first (the closing reset ran inside the block):
// deferred triggers run at COMMIT.
func commitLeftOpen(ctx context.Context, db execer, tag string) error {
	c, ok := db.(*pgx.Conn)
	if !ok || c.IsClosed() || c.PgConn().TxStatus() != 'T' {
		return nil
	}
	_, err := c.Exec(ctx, tag+pinPathSQL+"COMMIT;\n"+sessionReset)
	return err
}

// resetAfterFailure returns a connection whose statements failed to a clean
// session: it rolls back the explicit transaction block a failed statement
// left open (statements with BEGIN, withSettings' for a SAVEPOINT or the
// operator's own), which would refuse every later query, a retry's
// included, and resets what a COMMIT among the statements made final.
func resetAfterFailure(ctx context.Context, db execer) {
	c, ok := db.(*pgx.Conn)
	if !ok || c.IsClosed() {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if c.PgConn().TxStatus() != 'I' {
		_, _ = c.Exec(rctx, "ROLLBACK")
	}
	if _, err := c.Exec(rctx, sessionReset); err != nil {
		// A pool must not hand it out again.
		_ = c.Close(rctx)
	}
}

// A session tag is a comment that starts the query text a request sends, so
// that the server session running it can be found in pg_stat_activity after
// the connection to it was lost (endSession). The backend pid the client
// knows is not enough: behind PgBouncer it is PgBouncer's own key.
func newSessionTag() string { return "/* pgvault session " + randomToken() + " */ " }

const (
	// retryAttempts bounds how often a transaction that failed transiently
	// (deadlock, concurrent catalog update) is run again.
	retryAttempts  = 8
	retryBaseDelay = 10 * time.Millisecond
)

// withRetry runs f again while it fails transiently, up to retryAttempts
// times, sleeping a jittered, doubling delay between attempts. It gives up
// early, returning the last error, when ctx ends.
func withRetry(ctx context.Context, f func() error) error {
	return retryWhile(ctx, isTransient, f)
}

// retryWhile runs f again while its error is retryable, up to
// retryAttempts times, with withRetry's backoff, and returns the last error
// (or nil). It gives up early when ctx ends.
func retryWhile(ctx context.Context, retryable func(error) bool, f func() error) error {
	var err error
	for attempt := 0; attempt < retryAttempts; attempt++ {
		if attempt > 0 {
			if werr := sleepCtx(ctx, backoff(attempt)); werr != nil {
				return err
			}
		}
		if err = f(); err == nil || !retryable(err) {
			return err
		}
	}
	return err
}

func backoff(attempt int) time.Duration {
	d := retryBaseDelay << (attempt - 1)
	j, _ := rand.Int(rand.Reader, big.NewInt(int64(d)))
	return d/2 + time.Duration(j.Int64())/2
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// transientFailure is one kind of failure that running the same transaction
// again fixes. The list is the one source for both sides that classify
// them: isTransient in Go, and the revocation's exception handler, which
// gets it as an SQL condition (transientCondition) and re-raises exactly
// these for the caller to retry instead of disabling the role.
type transientFailure struct {
	code string
	// messageHas, when set, narrows the code to messages that contain it.
	messageHas string
	// constraintPrefix, when set, narrows the code to constraints whose
	// name starts with it.
	constraintPrefix string
}

var transientFailures = []transientFailure{
	{code: pgerrcode.DeadlockDetected},
	{code: pgerrcode.SerializationFailure},
	// NOWAIT lost a race, or lock_timeout expired: isTransient retries only
	// the first; the caller reports the second.
	{code: pgerrcode.LockNotAvailable},
	// "tuple concurrently updated": concurrent GRANTs on one object.
	{code: pgerrcode.InternalError, messageHas: "concurrently"},
	// Two CREATE/GRANT racing on a catalog row.
	{code: pgerrcode.UniqueViolation, constraintPrefix: "pg_"},
}

func (f transientFailure) matches(e *pgconn.PgError) bool {
	return e.Code == f.code &&
		strings.Contains(e.Message, f.messageHas) &&
		strings.HasPrefix(e.ConstraintName, f.constraintPrefix)
}

// isTransient reports failures that a retry of the same transaction fixes
// (transientFailures), except an expired lock_timeout: someone holds the
// lock for long, and trying again at once would only stall their table
// again.
func isTransient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || isLockTimeout(err) {
		return false
	}
	return slices.ContainsFunc(transientFailures, func(f transientFailure) bool { return f.matches(pgErr) })
}

// transientSQL is transientCondition, built once: every revocation uses it.
var transientSQL = transientCondition()

// transientCondition is transientFailures as a PL/pgSQL condition for an
// exception handler, over SQLSTATE, SQLERRM and a variable cname that holds
// GET STACKED DIAGNOSTICS' CONSTRAINT_NAME. It keeps lock timeouts: the
// caller tells them apart.
func transientCondition() string {
	parts := make([]string, 0, len(transientFailures))
	for _, f := range transientFailures {
		c := "SQLSTATE = " + render.QuoteLiteral(f.code)
		if f.messageHas != "" {
			c += " AND pg_catalog.strpos(SQLERRM, " + render.QuoteLiteral(f.messageHas) + ") > 0"
		}
		if f.constraintPrefix != "" {
			c += " AND pg_catalog.starts_with(cname, " + render.QuoteLiteral(f.constraintPrefix) + ")"
		}
		parts = append(parts, "("+c+")")
	}
	return strings.Join(parts, "\n\t\t\tOR ")
}

// isLockTimeout reports an error from lock_timeout.
func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable && strings.Contains(pgErr.Message, "lock timeout")
}

// sqlState returns the SQLSTATE of err, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
