package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// The default revocation of one user in the connected database is one
// simple-protocol query string, so one round trip:
//
//	BEGIN; <settings> <revoke_login.sql>; COMMIT;
//	BEGIN; <settings> <revoke_disarm.sql>; COMMIT;
//	<settings> <revoke_role.sql>; <revoke_outcome.sql>
//
// revoke_login.sql commits NOLOGIN on its own, before anything that can wait
// long or fail: a failed revocation never leaves a usable login.
// revoke_disarm.sql then commits, best effort and within a few seconds,
// the taking away of everything that lets others act with the user's
// rights (its memberships, its members, its SECURITY DEFINER routines,
// others' privileges on its views, the privileges others gave it, its
// rules), so that none of it is left while a lock holds the hand-over
// back. revoke_role.sql ends the sessions and removes the role;
// revoke_outcome.sql reports what happened (a revokePass).
//
// Nothing serialises revocations of one role: a lock any login could take
// (an advisory lock) would let a user hold off its own revocation. Running
// two at once is safe: both block logins, and the later one finds the role
// gone (or a catalog row updated under it, a transient failure retried).
//
// What the user owns goes to the holding role (holdingRole, or the
// configured reassign_owned_to), never to the admin: code the user left
// behind runs as its owner in more ways than any list could name (ANALYZE,
// foreign-key cascades, REINDEX), and the holding role has no rights to
// lend it.
//
// Markers (sqltemplate.go): @role is the role name as a literal, @target the
// receiving role's, @create_target whether the plugin makes that role on
// first need, @allow_privileged whether it may be privileged, @terminate
// whether to end sessions, @final whether this is the final pass, after
// which objects left in other databases disable the role, @hand_over the
// statements of hand_over.sql, @transient the failures to re-raise for a
// retry (transientCondition), @raise_prepared the error that hands the
// user's prepared transactions to the plugin (preparedTx).

// revokeLoginSQL: the guards, NOLOGIN and the early disarming. A missing
// role is left to revokeRoleSQL, which reports it.
var revokeLoginSQL = loadSQL("revoke_login.sql")

// revokeDisarmSQL takes away, in a transaction of its own after NOLOGIN,
// what lets others act with the user's rights; it never fails the
// revocation. Reassigning in another database runs it there first too.
var revokeDisarmSQL = loadSQL("revoke_disarm.sql")

// nologinContendedSQL replaces revoke_login's plain NOLOGIN when that waited
// too long for the user's row in pg_authid: it ends the user's sessions that
// hold it, and hands its prepared transactions to the plugin.
var nologinContendedSQL = loadSQL("nologin_contended.sql")

// plainNologin is revoke_login's NOLOGIN when nothing stands in its way.
const plainNologin = "EXECUTE pg_catalog.format('ALTER ROLE %I NOLOGIN', r)"

// revokeRoleSQL runs once NOLOGIN and the disarming are committed. Steps:
//
//  1. a missing role is success;
//  2. make the admin a member of the role when it is not a superuser: it
//     needs that to end the role's sessions and, on PostgreSQL 15, to
//     reassign and drop what it owns;
//  3. end the sessions, by role oid. A login that passed the NOLOGIN check
//     before it was committed may not show in pg_stat_activity yet: a
//     backend appears there only at the end of its startup (from
//     PostgreSQL 18 it appears as "starting", without a user), which a
//     client can delay at will with the post_auth_delay startup option. Such
//     backends hold a virtual transaction id, so pg_locks lists them; those
//     still hidden after a short wait are signalled while acting as the
//     role, which succeeds only for the role's own. (Logins still
//     authenticating read rolcanlogin afresh afterwards, and fail.) Once
//     every session found has ended, none can start again;
//  4. revoke the group memberships the disarming could not (a row another
//     transaction held): a note says which stay;
//  5. hand everything the user owns to the target and drop what is left
//     (privileges); a failure fails the revocation;
//  6. drop the role, unless it still has objects in other databases; if
//     the drop fails (privileges only a third role may revoke), disable
//     the role, which owns nothing here any more; the reason is reported
//     back for a warning. A lock on the role itself fails it (PV002).
//
// pg_stat_activity is read from a snapshot taken once per transaction, so
// every read that must see the present clears it first.
var revokeRoleSQL = loadSQL("revoke_role.sql")

// revokeOutcome reports revokeRoleSQL's outcome, its note, and the other
// databases that still hold the user's objects (a text[]), from the
// settings revokeRoleSQL leaves.
var revokeOutcome = mustFill(loadSQL("revoke_outcome.sql"), nil)

// reassignElsewhereSQL hands a user's objects and privileges in another
// database to the target role; the role itself is dropped afterwards from
// the main connection.
var reassignElsewhereSQL = loadSQL("reassign_elsewhere.sql")

// handOverSQL, shared by both, hands what the user owns to the target and
// drops the user's privileges (PL/pgSQL statements on the variables r and
// roid; the marker's semicolon ends them). reassignOwnedSQL, the hand-over
// itself, is a DO statement it runs only when the user owns something.
var (
	handOverSQL      = loadSQL("hand_over.sql")
	reassignOwnedSQL = loadSQL("reassign_owned.sql")
)

// holdingRole receives what revoked users own when reassign_owned_to is not
// set. The plugin creates it on first need (hand_over.sql), NOLOGIN and
// NOINHERIT, and refuses to hand anything to it once it has gained a login,
// an attribute, a membership or a member that is not an admin.
const holdingRole = "vault_revoked_owner"

// holdingComment is the comment the holding role is made with.
var holdingComment = render.QuoteLiteral("Owns what users revoked by " + productName + " left behind. Keep it NOLOGIN, without privileges, and grant it to no one.")

// errHandOverLocked: the user can no longer log in (and, with
// terminate_sessions, has no session), but its objects are not handed over
// yet.
var errHandOverLocked = errors.New("logins are blocked")

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
			p.logger.Warn("revocation failed after logins were blocked; Vault will retry", "username", username, "error", err)
		}
		return err
	}
	if pass.outcome == outcomeOtherDatabases {
		for _, dbname := range pass.others {
			if err := st.reassignIn(ctx, dbname, username); err != nil {
				// A concurrent revocation (nothing serialises them) may have
				// finished the role meanwhile: the final pass finds it gone.
				if exists, cerr := st.roleExists(ctx, username); cerr == nil && !exists {
					break
				}
				// A database that takes no connections (ALLOW_CONNECTIONS
				// false) runs nothing the user left: the final pass disables
				// the role instead. Any other failure leaves the user's
				// objects its own there, and fails the revocation.
				if closed, cerr := st.takesNoConnections(ctx, dbname); cerr != nil || !closed {
					return fmt.Errorf("%w, but handing over what the user owns in database %q failed: %w; Vault retries the revocation", errHandOverLocked, dbname, err)
				}
				p.logger.Warn("revocation: database takes no connections, so the user's objects there stay its own and the role is disabled", "username", username, "database", dbname, "error", err)
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

// reassignIn hands the user's objects in another database to the target, on
// a connection of its own (connTo).
func (st *state) reassignIn(ctx context.Context, dbname, username string) error {
	body, err := st.handOver(username)
	if err != nil {
		return err
	}
	body, err = reassignElsewhereSQL.fill(map[string]string{"role": render.QuoteLiteral(username), "hand_over": body, "raise_others_prepared": raiseOthersPreparedSQL})
	if err != nil {
		return err
	}
	disarm, err := revokeDisarmSQL.fill(map[string]string{"role": render.QuoteLiteral(username)})
	if err != nil {
		return err
	}
	conn, done, err := st.connTo(ctx, dbname)
	if err != nil {
		return err
	}
	defer done()
	// The disarming commits first, as in the connected database, so that a
	// hand-over held back by a lock leaves nothing there to act as the user.
	sql := "BEGIN;\n" + st.revokeTx + "DO " + render.DollarQuote(disarm) + ";\nCOMMIT;\n" + st.revokeTx + "DO " + render.DollarQuote(body)
	// revokeReset in front, as for the connected database: sessionReset's
	// DISCARD TEMP takes a snapshot, and the BEGIN after it would carry it
	// on, so that revokeTx could no longer set read committed.
	err = withRetry(ctx, func() error {
		_, err := conn.Exec(ctx, revokeReset+sql)
		if err != nil {
			resetAfterFailure(ctx, conn)
		}
		return err
	})
	if err != nil {
		return st.failed("", err)
	}
	return nil
}

// takesNoConnections reports whether dbname is closed to every login
// (ALLOW_CONNECTIONS false).
func (st *state) takesNoConnections(ctx context.Context, dbname string) (bool, error) {
	var allow bool
	err := st.pool.QueryRow(ctx, "SELECT datallowconn FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1", dbname).Scan(&allow)
	return !allow, err
}

// connTo is a connection to dbname as the configured user, and what gives
// it back: a pooled one for the configured database; for another database
// of the cluster, a connection of its own, closed when given back, so that
// no idle session of the plugin's stays there (it would make CREATE DATABASE
// from it, and DROP DATABASE, fail for everyone).
func (st *state) connTo(ctx context.Context, dbname string) (*pgx.Conn, func(), error) {
	if dbname == st.poolCfg.ConnConfig.Database {
		pc, err := st.pool.Acquire(ctx)
		if err != nil {
			return nil, nil, err
		}
		return pc.Conn(), pc.Release, nil
	}
	cc := st.poolCfg.ConnConfig.Copy()
	cc.Database = dbname
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, nil, st.failed(fmt.Sprintf("connecting to database %q", dbname), err)
	}
	return conn, func() { _ = conn.Close(context.WithoutCancel(ctx)) }, nil
}

// handOver is hand_over.sql filled for username.
func (st *state) handOver(username string) (string, error) {
	reassign, err := st.reassignDo(username)
	if err != nil {
		return "", err
	}
	sql, err := handOverSQL.fill(map[string]string{"reassign": render.QuoteLiteral(reassign)})
	return strings.TrimRight(sql, "\n"), err
}

// reassignDo is the DO statement of reassign_owned.sql for username.
func (st *state) reassignDo(username string) (string, error) {
	vals := st.revokeValues(username)
	vals["holding_comment"] = holdingComment
	vals["transient"] = transientSQL
	reassign, err := reassignOwnedSQL.fill(vals)
	if err != nil {
		return "", err
	}
	return "DO " + render.DollarQuote(reassign), nil
}

// revokeValues are the markers' values shared by the revocation blocks.
func (st *state) revokeValues(username string) map[string]string {
	target := st.cfg.reassignTarget()
	return map[string]string{
		"role":             render.QuoteLiteral(username),
		"target":           render.QuoteLiteral(target),
		"create_target":    strconv.FormatBool(target == holdingRole),
		"allow_privileged": strconv.FormatBool(st.cfg.AllowPrivilegedReassign),
	}
}

// pinnedPath is the search_path of the plugin's own blocks. They run as the
// admin, often a superuser, and call format(), cardinality() and more
// unqualified: with the session's search_path, a role that can create in a
// schema on it (public, for everyone up to PostgreSQL 14) could plant a
// better-matching overload and have the admin run it. asPlugin pins the
// same path for the label blocks.
const pinnedPath = "pg_catalog, pg_temp"

// revokeTxSettings starts each transaction of a revocation: read committed
// (its blocks wait for other transactions and then look again, which under
// a default_transaction_isolation of repeatable read would see nothing they
// did), the pinned path and the lock bound, LOCAL, so that they hold behind
// a transaction-pooling PgBouncer and end with the transaction.
func revokeTxSettings(lockTimeout time.Duration) string {
	return "SET TRANSACTION ISOLATION LEVEL READ COMMITTED;\n" + pinPathSQL + lockTimeoutSQL(lockTimeout)
}

// revokeOnce runs one local revocation pass and reads its outcome and the
// other databases that still hold the user's objects. A NOLOGIN that waited
// too long for the user's role row runs again in its contended form;
// prepared transactions of the user that stand in the way are rolled back,
// and the pass run again.
func (st *state) revokeOnce(ctx context.Context, username string, final bool) (revokePass, error) {
	var pass revokePass
	var lockedOut bool // NOLOGIN committed before the failure
	contended := false
	ensure := false // make the session's revocation functions first
	run := func() error {
		sql, err := st.revokeSQL(username, final, contended, ensure)
		if err != nil {
			return err
		}
		return withRetry(ctx, func() error {
			var err error
			pass, lockedOut, err = st.runRevoke(ctx, sql)
			return err
		})
	}
	err := run()
	// Revocation is idempotent: after a lost connection (a restarted
	// server, a killed backend) it simply runs again on a fresh one.
	for attempt := 0; err != nil && attempt < connRetries && ctx.Err() == nil; attempt++ {
		if fnMissing(err) && !ensure {
			ensure = true
		} else if tempRefused(err) && !lockedOut && !st.noTempFunctions.Load() {
			st.noTempFunctions.Store(true)
			st.logger.Warn("revocation: the connection's user may not create temporary functions in this database; revocations run as DO blocks, which costs the server more")
		} else if prepared, ok := preparedTxOf(err); ok {
			if perr := st.rollbackPrepared(ctx, username, prepared); perr != nil {
				return revokePass{}, perr
			}
		} else if isLockTimeout(err) && !lockedOut && !contended {
			contended = true
		} else if !connLost(err) {
			break
		}
		err = run()
	}
	if err != nil {
		// Someone else dropped the role between our check and our use: a
		// concurrent revocation (nothing serialises them), or a DBA. The
		// statement that noticed may say so with 42704, or as an invalid
		// value (22023, SET ROLE to it): whatever it said, a role that is
		// gone is revoked.
		// Whether logins are blocked is read from the database, not guessed
		// from where the query string failed: a cut connection leaves no
		// transaction status to go by.
		if ctx.Err() == nil {
			exists, canLogin, cerr := st.roleLogin(ctx, username)
			if cerr == nil && !exists {
				return revokePass{outcome: outcomeGone}, nil
			}
			if cerr == nil {
				lockedOut = !canLogin
			}
		}
		return revokePass{}, st.revokeFailed(err, lockedOut)
	}
	return pass, nil
}

// roleLockedState is what revoke_role.sql raises when a lock another
// session holds on the role itself (not on one of its objects) held DROP
// ROLE back after the hand-over went through.
const roleLockedState = "PV002"

// revokeFailed explains a failed pass, claiming only what happened: after a
// failure in the first transaction, nothing; after one in the second, that
// logins are blocked, and that the sessions ended only where the failure
// came after they did (a lock the hand-over or the drop waited for).
func (st *state) revokeFailed(err error, lockedOut bool) error {
	if !lockedOut {
		return st.failed("", err)
	}
	ended := ""
	if st.cfg.TerminateSessions {
		ended = " and the user's sessions ended"
	}
	switch {
	case sqlState(err) == roleLockedState:
		return fmt.Errorf("%w%s, but a lock on the role holds back its drop, and with it the hand-over of what it owns: %w; Vault retries the revocation later", errHandOverLocked, ended, st.failed("", err))
	case isLockTimeout(err):
		return fmt.Errorf("%w%s, but handing over what the user owns waited longer than lock_timeout (%s) for a lock another session holds: on one of its objects, or on the catalog row of something it was granted (an open GRANT or REVOKE on that object, by anyone; grant a group role instead of each user to avoid this); Vault retries the revocation later", errHandOverLocked, ended, st.cfg.LockTimeout)
	}
	return fmt.Errorf("%w, but the revocation failed: %w", errHandOverLocked, st.failed("", err))
}

// runRevoke sends one pass's query string on a pooled connection and reads
// the row of revokeOutcome. After a failure, lockedOut says whether the
// first transaction (NOLOGIN) had committed: a failure inside it leaves
// its explicit transaction open and aborted, one after it does not.
func (st *state) runRevoke(ctx context.Context, sql string) (pass revokePass, lockedOut bool, err error) {
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return revokePass{}, false, err
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	results, err := pc.Exec(ctx, revokeReset+sql).ReadAll()
	if err != nil {
		if pc.TxStatus() == 'E' {
			// End the aborted transaction so the connection can go back
			// to the pool.
			_ = pc.Exec(ctx, "ROLLBACK").Close()
			return revokePass{}, false, err
		}
		// A connection cut mid-way tells nothing (its status is the one
		// from before the query string): claim nothing.
		return revokePass{}, pc.TxStatus() == 'I' && !pc.IsClosed(), err
	}
	last := results[len(results)-1]
	if len(last.Rows) != 1 || len(last.Rows[0]) != 3 {
		return revokePass{}, true, errors.New("revocation returned no outcome")
	}
	row := last.Rows[0]
	pass = revokePass{outcome: outcome(row[0]), note: string(row[1])}
	if reason, ok := strings.CutPrefix(string(row[0]), disabledPrefix); ok {
		pass.outcome, pass.reason = outcomeDisabled, reason
	}
	if pass.others, err = scanTextArray(conn.Conn().TypeMap(), row[2]); err != nil {
		return revokePass{}, true, fmt.Errorf("reading the revocation's other databases: %w", err)
	}
	return pass, true, nil
}

// preparedHint marks the error raisePreparedSQL raises.
const preparedHint = "pgvault: prepared transactions of the user"

// raisePreparedSQL is the PL/pgSQL statement that hands the user's prepared
// transactions to the plugin when one stands in the revocation's way (it
// holds the user's role row, or a lock on what it owns): they are listed in
// the DETAIL as JSON, [[database, gid], …]. ROLLBACK PREPARED cannot run
// inside a transaction, so the plugin runs it (rollbackPrepared).
const raisePreparedSQL = `RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = 'prepared transactions of the user hold locks its revocation needs',
					HINT = '` + preparedHint + `',
					DETAIL = (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(x.database, x.gid))::text
						FROM pg_catalog.pg_prepared_xacts x WHERE x.owner = r)`

// raiseOthersPreparedSQL is the PL/pgSQL statement, run when the hand-over
// waited too long for a lock, that names the prepared transactions of other
// roles holding a lock on what the user owns. A prepared transaction's owner
// is the role current at PREPARE: the user's own work under a group role it
// was given shows as the group's, which may be another member's too, so it
// is named for the operator rather than rolled back.
const raiseOthersPreparedSQL = `g := (SELECT pg_catalog.string_agg(DISTINCT pg_catalog.format('%L (owner %s, database %s)', x.gid, x.owner, x.database), ', ')
				FROM pg_catalog.pg_prepared_xacts x
				JOIN pg_catalog.pg_lock_status() t ON t.locktype = 'transactionid' AND t.transactionid = x.transaction AND t.pid IS NULL
				JOIN pg_catalog.pg_lock_status() l ON l.virtualtransaction = t.virtualtransaction AND l.pid IS NULL
				WHERE (l.locktype = 'relation' AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = l.relation AND c.relowner = roid)
					AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()))
				   OR (l.locktype = 'object' AND EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s
					WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND s.refobjid = roid AND s.deptype = 'o'
					  AND s.classid = l.classid AND s.objid = l.objid AND s.dbid = l.database)));
			IF g IS NOT NULL THEN
				RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = 'prepared transactions hold locks on what the user owns, which its hand-over needs: ' || g
						|| '; a superuser can end each with COMMIT PREPARED or ROLLBACK PREPARED (the owner is the role current when it was prepared: the user''s own work under a group role shows as the group''s)';
			END IF`

// preparedTx is one prepared transaction: its database and identifier.
type preparedTx struct{ database, gid string }

// preparedTxOf reads the prepared transactions out of raisePreparedSQL's
// error.
func preparedTxOf(err error) ([]preparedTx, bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Hint != preparedHint {
		return nil, false
	}
	var rows [][2]string
	if json.Unmarshal([]byte(pgErr.Detail), &rows) != nil || len(rows) == 0 {
		return nil, false
	}
	out := make([]preparedTx, len(rows))
	for i, r := range rows {
		out[i] = preparedTx{database: r[0], gid: r[1]}
	}
	return out, true
}

// rollbackPrepared rolls back the user's prepared transactions: they are its
// unfinished work, and left alone they would hold its locks (and its
// revocation) forever. Only a superuser or the user itself may; a
// non-superuser admin acts as the user, whom revoke_login made it a member
// of. One that cannot is named in the error, with the statement to run.
func (st *state) rollbackPrepared(ctx context.Context, username string, txs []preparedTx) error {
	for _, tx := range txs {
		err := st.rollbackOnePrepared(ctx, username, tx)
		if errors.Is(err, errPreparedGone) || sqlState(err) == pgerrcode.UndefinedObject {
			continue // it ended meanwhile
		}
		if err != nil {
			return fmt.Errorf("the user has a prepared transaction (gid %s, database %q) that holds a lock its revocation needs, and rolling it back failed: %w; a superuser can run ROLLBACK PREPARED %s",
				render.QuoteLiteral(tx.gid), tx.database, failed("", err), render.QuoteLiteral(tx.gid))
		}
		st.logger.Warn("revocation: rolled back a prepared transaction of the user that held locks its revocation needs", "username", username, "gid", tx.gid, "database", tx.database)
	}
	return nil
}

// errPreparedGone: the prepared transaction is no longer there as the
// user's (ended meanwhile), so there is nothing to roll back.
var errPreparedGone = errors.New("no such prepared transaction of the user")

func (st *state) rollbackOnePrepared(ctx context.Context, username string, tx preparedTx) error {
	conn, done, err := st.connTo(ctx, tx.database)
	if err != nil {
		return err
	}
	defer done()
	// Only the user's own, or one that holds the user's role row (it
	// changed it, so it acted as the user: through the user's SECURITY
	// DEFINER function, say), which only a superuser can tell: the list came
	// in an error's text, and nothing else may be rolled back on its word.
	var mine bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE gid OPERATOR(pg_catalog.=) $1 AND owner OPERATOR(pg_catalog.=) $2 AND database OPERATOR(pg_catalog.=) pg_catalog.current_database())",
		tx.gid, username).Scan(&mine); err != nil {
		return err
	}
	if !mine && !holdsRoleRow(ctx, conn, tx.gid, username) {
		return errPreparedGone
	}
	// Each alone: ROLLBACK PREPARED refuses to run inside a transaction,
	// which several statements in one query string would be.
	rollback := "ROLLBACK PREPARED " + render.QuoteLiteral(tx.gid)
	_, err = conn.Exec(ctx, rollback)
	if sqlState(err) != pgerrcode.InsufficientPrivilege {
		return err
	}
	if _, serr := conn.Exec(ctx, "SET ROLE "+render.QuoteIdent(username)); serr != nil {
		// The membership revoke_login grants was rolled back with the
		// transaction the prepared one held up: grant it here.
		if _, gerr := conn.Exec(ctx, joinRoleSQL(username, st.poolCfg.ConnConfig.User)); gerr != nil {
			return err
		}
		if _, serr := conn.Exec(ctx, "SET ROLE "+render.QuoteIdent(username)); serr != nil {
			return err
		}
	}
	_, err = conn.Exec(ctx, rollback)
	_, _ = conn.Exec(ctx, "RESET ROLE")
	return err
}

// holdsRoleRow reports whether the prepared transaction gid, of a role that
// is not a superuser, is the one that holds username's row in pg_authid. Only
// a superuser may read pg_authid; for anyone else it is false.
func holdsRoleRow(ctx context.Context, conn *pgx.Conn, gid, username string) bool {
	var holds bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts x JOIN pg_catalog.pg_roles o ON o.rolname OPERATOR(pg_catalog.=) x.owner
		WHERE x.gid OPERATOR(pg_catalog.=) $1 AND x.database OPERATOR(pg_catalog.=) pg_catalog.current_database() AND NOT o.rolsuper
		  AND x.transaction OPERATOR(pg_catalog.=) (SELECT a.xmax FROM pg_catalog.pg_authid a WHERE a.rolname OPERATOR(pg_catalog.=) $2))`, gid, username).Scan(&holds)
	return err == nil && holds
}

// joinRoleSQL makes member a member of role, with the rights of role
// (INHERIT) and the right to act as it (SET) on PostgreSQL 16+, where a
// grant says so.
func joinRoleSQL(role, member string) string {
	grant := "GRANT " + render.QuoteIdent(role) + " TO " + render.QuoteIdent(member)
	return "DO " + render.DollarQuote("BEGIN IF pg_catalog.current_setting('server_version_num')::int OPERATOR(pg_catalog.>=) 160000 THEN EXECUTE "+
		render.QuoteLiteral(grant+" WITH INHERIT TRUE, SET TRUE")+"; ELSE EXECUTE "+render.QuoteLiteral(grant)+"; END IF; END")
}

// scanTextArray reads a text[] in the text form the simple protocol
// returns ({a,"b c"}).
func scanTextArray(m *pgtype.Map, src []byte) ([]string, error) {
	var out []string
	err := m.Scan(pgtype.TextArrayOID, pgtype.TextFormatCode, src, &out)
	return out, err
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
	sql, err := render.Render(req.Statements.Commands, render.NewValues(req.Username))
	if err != nil {
		return dbplugin.DeleteUserResponse{}, fmt.Errorf("revocation_statements: %w", err)
	}
	if err := st.exec(ctx, st.pool, sql); err != nil {
		// A user that is gone is revoked; "does not exist" about another
		// object (a group a DBA dropped) rolled the statements back, and
		// the user is still there.
		if sqlState(err) == pgerrcode.UndefinedObject {
			if exists, cerr := st.roleExists(ctx, req.Username); cerr == nil && !exists {
				p.logger.Debug("revocation: user already gone", "username", req.Username)
				return dbplugin.DeleteUserResponse{}, nil
			}
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
