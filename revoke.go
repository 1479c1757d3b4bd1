package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The default revocation of one user in the connected database is one
// simple-protocol query string, so one round trip:
//
//	BEGIN; DO <revoke_login.sql>; COMMIT; DO <revoke_role.sql>; <revoke_outcome.sql>
//
// revoke_login.sql commits NOLOGIN on its own, before anything that can
// fail, so that no new session can start while the old ones are ended and a
// failed revocation never leaves a usable login. revoke_role.sql then ends
// the sessions and removes the role; revoke_outcome.sql reports what
// happened (a revokePass).
// Both blocks take a transaction-level advisory lock on the role name (1260,
// pg_authid's oid, as the key's namespace; advisory locks are per database,
// and every pass runs on the plugin's own one), so concurrent revocations
// of one role take turns and the later ones find it gone.
//
// Markers (sqltemplate.go): @role is the role name as a literal, @target the
// reassign target as an SQL expression, @terminate whether to end sessions,
// @final whether this is the final pass, after which objects left in other
// databases disable the role, @hand_over the statements of hand_over.sql,
// @transient the failures to re-raise for a retry (transientCondition).

// revokeLoginSQL: the guards, then NOLOGIN. A missing role is left to
// revokeRoleSQL, which reports it.
var revokeLoginSQL = loadSQL("revoke_login.sql")

// revokeRoleSQL runs once NOLOGIN is committed. Steps:
//
//  1. a missing role is success;
//  2. revoke the role's group memberships (dropping it would anyway; a
//     disabled role must lose them; and a role that is a member of the
//     admin would make step 3 fail with 0LP01);
//  3. make the admin a member of the role when it is not a superuser: it
//     needs that to end the role's sessions and, on PostgreSQL 15, to
//     reassign and drop what it owns;
//  4. end the sessions, by role oid. A login that passed the NOLOGIN check
//     before it was committed may not show in pg_stat_activity yet: a
//     backend appears there only at the end of its startup (from
//     PostgreSQL 18 it appears as "starting", without a user), which a
//     client can delay at will with the post_auth_delay startup option. Such
//     backends hold a virtual transaction id, so pg_locks lists them; those
//     still hidden after a short wait are signalled while acting as the
//     role, which succeeds only for the role's own. (Logins still
//     authenticating read rolcanlogin afresh afterwards, and fail.) Once
//     every session found has ended, none can start again;
//  5. in a subtransaction: hand everything the user owns to the target,
//     drop what is left (privileges), and drop the role unless it still has
//     objects in other databases;
//  6. if step 5 fails, leave the role harmless: NOLOGIN, expired, no group
//     memberships; the reason is reported back for a warning.
//
// pg_stat_activity is read from a snapshot taken once per transaction, so
// every read that must see the present clears it first.
var revokeRoleSQL = loadSQL("revoke_role.sql")

// revokeOutcomeSQL reports revokeRoleSQL's outcome, its note, and the
// other databases that still hold the user's objects (a text[]).
var revokeOutcomeSQL = loadSQL("revoke_outcome.sql")

// reassignElsewhereSQL hands a user's objects and privileges in another
// database to the target role; the role itself is dropped afterwards from
// the main connection.
var reassignElsewhereSQL = loadSQL("reassign_elsewhere.sql")

// handOverSQL, shared by both, disarms what the user wrote, hands it to the
// target and drops the user's privileges (PL/pgSQL statements on the
// variables r and target, without the last semicolon: the marker's has it).
var handOverSQL = strings.TrimRight(loadSQL("hand_over.sql").src, "\n")

// errHandOverLocked: the user can no longer log in and has no session, but
// its objects are not handed over yet.
var errHandOverLocked = errors.New("logins are blocked and sessions ended")

// outcome is how a revocation pass ended, as revokeRoleSQL records it in
// pgvault.revoke_state.
type outcome string

const (
	outcomeGone     outcome = "gone"    // there was no such role
	outcomeDropped  outcome = "dropped" // handed over and dropped
	outcomeDisabled outcome = "disabled"
	// outcomeOtherDatabases: handed over here, but the role still owns
	// objects in other databases; a final pass follows.
	outcomeOtherDatabases outcome = "other-databases"
)

// disabledPrefix starts the recorded state of a role that could not be
// dropped and was disabled instead; the reason follows.
const disabledPrefix = "disabled: "

// revokePass is what one local revocation pass reports.
type revokePass struct {
	outcome outcome
	reason  string   // why the role was disabled (outcomeDisabled)
	note    string   // what the pass could not do on the way, for a warning
	others  []string // other databases that still hold the user's objects
}

// defaultRevoke removes a user for good without losing data: one round trip
// when the user owns nothing outside the connected database, otherwise one
// more per database it owns objects in, and a final one to drop the role.
func (p *Postgres) defaultRevoke(ctx context.Context, st *state, username string) error {
	pass, err := st.revokeOnce(ctx, username, false)
	if err != nil {
		if errors.Is(err, errHandOverLocked) {
			p.logger.Warn("revocation: logins and sessions ended; the hand-over of the user's objects waits for a lock, Vault will retry", "username", username)
		}
		return err
	}
	if pass.outcome == outcomeOtherDatabases {
		for _, dbname := range pass.others {
			// A database we cannot reach must not make the lease
			// irrevocable: the final pass disables the role instead.
			if err := st.reassignIn(ctx, dbname, username); err != nil {
				p.logger.Warn("revocation: could not reassign objects in another database", "username", username, "database", dbname, "error", err)
			}
		}
		if pass, err = st.revokeOnce(ctx, username, true); err != nil {
			return err
		}
	}
	switch pass.outcome {
	case outcomeGone:
		p.logger.Debug("revocation: user already gone", "username", username)
	case outcomeDropped:
		p.logger.Debug("revoked user", "username", username)
	case outcomeDisabled:
		p.logger.Warn("revocation: the role could not be dropped, so it was disabled instead (NOLOGIN, expired, memberships revoked)",
			"username", username, "reason", pass.reason)
		if pass.note != "" {
			p.logger.Warn("revocation: "+pass.note, "username", username)
		}
	default:
		return fmt.Errorf("unexpected revocation outcome %q", pass.outcome)
	}
	return nil
}

// reassignIn hands the user's objects in another database to the target.
func (st *state) reassignIn(ctx context.Context, dbname, username string) error {
	pool, err := st.databasePool(dbname)
	if err != nil {
		return err
	}
	vals := st.revokeValues(username)
	vals["hand_over"] = handOverSQL
	body, err := reassignElsewhereSQL.fill(vals)
	if err != nil {
		return err
	}
	if err := execAtomic(ctx, pool, pinnedSearchPath+"DO "+dollarQuote(body)); err != nil {
		return failed("", err)
	}
	return nil
}

// revokeValues are the @role and @target markers' values.
func (st *state) revokeValues(username string) map[string]string {
	target := "current_user"
	if st.cfg.ReassignOwnedTo != "" {
		target = quoteLiteral(st.cfg.ReassignOwnedTo)
	}
	return map[string]string{"role": quoteLiteral(username), "target": target}
}

// pinnedSearchPath comes before the plugin's own blocks. They run as the
// admin, often a superuser, and call format(), cardinality() and more
// unqualified: with the session's search_path, a role that can create in a
// schema on it (public, for everyone up to PostgreSQL 14) could plant a
// better-matching overload and have the admin run it. The next request's
// sessionReset restores the path. asPlugin pins the same path for the
// label blocks, LOCAL to their transaction.
const (
	pinnedPath       = "pg_catalog, pg_temp"
	pinnedSearchPath = "SET search_path = " + pinnedPath + ";\n"
)

// revokeSQL is the query string of one local revocation pass (see
// revokeLoginSQL).
func (st *state) revokeSQL(username string, final bool) (string, error) {
	vals := st.revokeValues(username)
	login, err1 := revokeLoginSQL.fill(vals)
	vals["terminate"] = strconv.FormatBool(st.cfg.TerminateSessions)
	vals["final"] = strconv.FormatBool(final)
	vals["hand_over"] = handOverSQL
	vals["transient"] = transientSQL
	role, err2 := revokeRoleSQL.fill(vals)
	report, err3 := revokeOutcomeSQL.fill(map[string]string{"role": vals["role"]})
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", err
	}
	return pinnedSearchPath + "BEGIN;\nDO " + dollarQuote(login) + ";\nCOMMIT;\n" +
		"DO " + dollarQuote(role) + ";\n" + report, nil
}

// dollarQuote wraps body in a dollar-quote tag that does not occur in it,
// so no body can end the quote early: $pgvault$, else $pgvault_1$, ...
func dollarQuote(body string) string {
	tag := "$pgvault$"
	for n := 1; strings.Index(body+tag, tag) < len(body); n++ {
		tag = "$pgvault_" + strconv.Itoa(n) + "$"
	}
	return tag + body + tag
}

// revokeOnce runs one local revocation pass and reads its outcome and the
// other databases that still hold the user's objects.
func (st *state) revokeOnce(ctx context.Context, username string, final bool) (revokePass, error) {
	sql, err := st.revokeSQL(username, final)
	if err != nil {
		return revokePass{}, err
	}
	var pass revokePass
	run := func() error {
		return withRetry(ctx, func() error {
			var err error
			pass, err = st.runRevoke(ctx, sql)
			return err
		})
	}
	err = run()
	// Revocation is idempotent: after a lost connection (a restarted
	// server, a killed backend) it simply runs again on a fresh one.
	for attempt := 0; attempt < connRetries && connLost(err) && ctx.Err() == nil; attempt++ {
		err = run()
	}
	if err != nil {
		// Someone else dropped the role between our check and our use.
		if sqlState(err) == pgerrcode.UndefinedObject {
			if exists, cerr := st.roleExists(ctx, username); cerr == nil && !exists {
				return revokePass{outcome: outcomeGone}, nil
			}
		}
		if isLockTimeout(err) {
			// NOLOGIN is committed and the sessions are ended before the
			// hand-over starts: only REASSIGN/DROP OWNED waited.
			return revokePass{}, fmt.Errorf("%w: handing over what the user owns waited longer than lock_timeout (%s) for a lock another session holds on one of its objects; Vault retries the revocation later", errHandOverLocked, st.cfg.LockTimeout)
		}
		return revokePass{}, st.failed("", err)
	}
	return pass, nil
}

// runRevoke sends one pass's query string on a pooled connection and reads
// the row of revokeOutcomeSQL.
func (st *state) runRevoke(ctx context.Context, sql string) (revokePass, error) {
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return revokePass{}, err
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	results, err := pc.Exec(ctx, sessionReset+sql).ReadAll()
	if err != nil {
		// A failure inside the explicit transaction leaves it open and
		// aborted; end it so the connection can go back to the pool.
		if pc.TxStatus() == 'E' {
			_ = pc.Exec(ctx, "ROLLBACK").Close()
		}
		return revokePass{}, err
	}
	last := results[len(results)-1]
	if len(last.Rows) != 1 || len(last.Rows[0]) != 3 {
		return revokePass{}, errors.New("revocation returned no outcome")
	}
	row := last.Rows[0]
	pass := revokePass{outcome: outcome(row[0]), note: string(row[1])}
	if reason, ok := strings.CutPrefix(string(row[0]), disabledPrefix); ok {
		pass.outcome, pass.reason = outcomeDisabled, reason
	}
	if pass.others, err = scanTextArray(conn.Conn().TypeMap(), row[2]); err != nil {
		return revokePass{}, fmt.Errorf("reading the revocation's other databases: %w", err)
	}
	return pass, nil
}

// scanTextArray reads a text[] in the text form the simple protocol
// returns ({a,"b c"}).
func scanTextArray(m *pgtype.Map, src []byte) ([]string, error) {
	var out []string
	err := m.Scan(pgtype.TextArrayOID, pgtype.TextFormatCode, src, &out)
	return out, err
}

// databasePool returns a pool to another database of the same cluster,
// connecting as the same admin. Pools are created lazily and kept until the
// next Initialize or Close.
func (st *state) databasePool(dbname string) (*pgxpool.Pool, error) {
	if p, ok := st.dbPools.Load(dbname); ok {
		return p.(*pgxpool.Pool), nil
	}
	pc := st.poolCfg.Copy()
	pc.ConnConfig.Database = dbname
	pc.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), pc) // lazy: no connection is made here
	if err != nil {
		return nil, fmt.Errorf("opening a pool to database %q: %w", dbname, err)
	}
	if prev, loaded := st.dbPools.LoadOrStore(dbname, pool); loaded {
		pool.Close()
		return prev.(*pgxpool.Pool), nil
	}
	return pool, nil
}
