package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The default revocation of one user in the connected database is one
// simple-protocol query string, so one round trip:
//
//	BEGIN; DO <revokeLogin>; COMMIT; DO <revokeRole>; <revokeOutcome>
//
// revokeLogin commits NOLOGIN on its own, before anything that can fail,
// so that no new session can start while the old ones are ended and a
// failed revocation never leaves a usable login. revokeRole then ends the
// sessions and removes the role; revokeOutcome reports what happened.
// Both blocks take a transaction-level advisory lock on the role name (1260,
// pg_authid's oid, as the key's namespace; advisory locks are per database,
// and every pass runs on the plugin's own one), so concurrent revocations
// of one role take turns and the later ones find it gone.
//
// Markers: @role@ is the role name as a literal, @target@ the reassign
// target as an SQL expression, @terminate@ whether to end sessions, @final@
// whether this is the final pass, after which objects left in other
// databases disable the role.

// revokeLogin: the guards, then NOLOGIN. A missing role is left to
// revokeRole, which reports it.
const revokeLogin = `
DECLARE
	r text := @role@;
	target text := @target@;
	lt text := current_setting('lock_timeout');
BEGIN
	-- Wait for another revocation of this role without lock_timeout: it
	-- is bounded itself. Every other wait keeps the configured bound.
	PERFORM set_config('lock_timeout', '0', true);
	PERFORM pg_catalog.pg_advisory_xact_lock(1260, pg_catalog.hashtext(r));
	PERFORM set_config('lock_timeout', lt, true);
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
		RETURN;
	END IF;
	IF r IN (current_user, session_user) THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = 'refusing to revoke the user Vault connects as';
	END IF;
	IF r = target THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = 'refusing to revoke the role named in reassign_owned_to: it receives what revoked users own, and revoking it would drop what it owns itself';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = target) THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('reassign_owned_to names role %I, which does not exist', target);
	END IF;
	EXECUTE format('ALTER ROLE %I NOLOGIN', r);
END`

// revokeRole runs once NOLOGIN is committed. Steps:
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
const revokeRole = `
DECLARE
	r text := @role@;
	target text := @target@;
	terminate boolean := @terminate@;
	final boolean := @final@;
	me text := current_user;
	roid oid;
	g text;
	p int;
	note text := '';
	me_super boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
	can_act boolean;
	starting int[];
	killed int[] := '{}';
	deadline timestamptz;
	prev_role text;
	lt text := current_setting('lock_timeout');
BEGIN
	PERFORM set_config('pgvault.revoke_state', 'gone', true);
	PERFORM set_config('pgvault.revoke_note', '', true);
	-- Wait for another revocation of this role without lock_timeout: it
	-- is bounded itself. Every other wait keeps the configured bound.
	PERFORM set_config('lock_timeout', '0', true);
	PERFORM pg_catalog.pg_advisory_xact_lock(1260, pg_catalog.hashtext(r));
	PERFORM set_config('lock_timeout', lt, true);
	SELECT oid INTO roid FROM pg_catalog.pg_roles WHERE rolname = r;
	IF roid IS NULL THEN
		RETURN;
	END IF;
	FOR g IN SELECT m.roleid::regrole::text FROM pg_catalog.pg_auth_members m WHERE m.member = roid LOOP
		BEGIN
			EXECUTE format('REVOKE %s FROM %I', g, r);
		EXCEPTION WHEN OTHERS THEN
			note := note || format('could not revoke %s from the role: %s; ', g, SQLERRM);
		END;
	END LOOP;

	IF NOT me_super AND NOT pg_catalog.pg_has_role(me, r, 'USAGE') THEN
		BEGIN
			IF current_setting('server_version_num')::int >= 160000 THEN
				-- From 16 a new grant inherits only when asked: a NOINHERIT
				-- admin, or one that createrole_self_grant made a SET-only
				-- member, could not reassign the role's objects otherwise.
				EXECUTE format('GRANT %I TO %I WITH INHERIT TRUE', r, me);
			ELSE
				EXECUTE format('GRANT %I TO %I', r, me);
			END IF;
		EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
			note := note || 'could not join the role: ' || SQLERRM || '; ';
		END;
	END IF;

	IF terminate THEN
		-- Read once, after NOLOGIN was committed: the sessions of the role,
		-- and the backends still starting, which pg_stat_activity does not
		-- show yet. In the common case both are empty and that is all.
		starting := ARRAY(SELECT l.pid FROM pg_catalog.pg_locks l
			WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
			  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = l.pid
				AND (a.usesysid IS NOT NULL OR a.backend_type <> 'client backend')));
		-- Most starting backends show up within milliseconds.
		can_act := me_super OR pg_catalog.pg_has_role(me, r, 'MEMBER');
		deadline := pg_catalog.clock_timestamp() + CASE WHEN can_act THEN interval '50 ms' ELSE interval '3 s' END;
		WHILE cardinality(starting) > 0 AND pg_catalog.clock_timestamp() < deadline LOOP
			PERFORM pg_catalog.pg_sleep(0.002);
			PERFORM pg_catalog.pg_stat_clear_snapshot();
			starting := ARRAY(SELECT l.pid FROM pg_catalog.pg_locks l
				WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid = ANY (starting)
				  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = l.pid
				AND (a.usesysid IS NOT NULL OR a.backend_type <> 'client backend')));
		END LOOP;
		IF cardinality(starting) > 0 THEN
			IF NOT can_act THEN
				RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
					MESSAGE = format('connections that began before logins were blocked are still starting (server pids %s) and %I cannot tell whether they belong to the user: make it a member of the user, or retry', array_to_string(starting, ', '), me);
			END IF;
			-- Acting as the role, which is now in no group, a backend can
			-- be signalled only if it runs as the role. The others are
			-- another role's or have not reached the NOLOGIN check, which
			-- they will fail.
			prev_role := current_setting('role');
			EXECUTE format('SET LOCAL ROLE %I', r);
			FOREACH p IN ARRAY starting LOOP
				BEGIN
					IF pg_catalog.pg_terminate_backend(p) THEN
						killed := killed || p;
					END IF;
				EXCEPTION WHEN insufficient_privilege THEN
					NULL;
				END;
			END LOOP;
			PERFORM set_config('role', prev_role, true);
		END IF;

		-- End every session of the role, and wait until they are gone.
		deadline := pg_catalog.clock_timestamp() + interval '10 s';
		LOOP
			EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
				WHERE usesysid = roid AND pid <> pg_catalog.pg_backend_pid())
			  -- pg_locks copies the whole lock table: read it only when
			  -- there are signalled starting backends to wait for.
			  AND (cardinality(killed) = 0 OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
				WHERE locktype = 'virtualxid' AND pid = ANY (killed)));
			IF pg_catalog.clock_timestamp() > deadline THEN
				RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = 'sessions of the user are still running 10 s after being told to end: retry the revocation';
			END IF;
			BEGIN
				PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
					WHERE usesysid = roid AND pid <> pg_catalog.pg_backend_pid();
			EXCEPTION WHEN insufficient_privilege THEN
				-- A member that does not inherit the role's privileges (a
				-- NOINHERIT admin) may still act as the role, whose own
				-- sessions it may end.
				IF NOT pg_catalog.pg_has_role(me, r, 'MEMBER') THEN
					RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
						MESSAGE = format('cannot end the sessions of the user: grant pg_signal_backend to %I, or let it become a member of the user (%s%s)', me, note, SQLERRM);
				END IF;
				prev_role := current_setting('role');
				EXECUTE format('SET LOCAL ROLE %I', r);
				PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
					WHERE usesysid = roid AND pid <> pg_catalog.pg_backend_pid();
				PERFORM set_config('role', prev_role, true);
			END;
			PERFORM pg_catalog.pg_sleep(0.005);
			PERFORM pg_catalog.pg_stat_clear_snapshot();
		END LOOP;
	END IF;

	PERFORM set_config('pgvault.revoke_note', rtrim(note, '; '), true);
	BEGIN

		-- What the user wrote must not gain the rights of the role that receives
		-- it: its SECURITY DEFINER routines become SECURITY INVOKER, and (15+)
		-- its views check the privileges of whoever queries them.
		DECLARE
			obj text;
		BEGIN
			FOR obj IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
				WHERE p.proowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) AND p.prosecdef LOOP
				EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', obj);
			END LOOP;
			IF current_setting('server_version_num')::int >= 150000 THEN
				FOR obj IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
					WHERE c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) AND c.relkind = 'v' LOOP
					EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', obj);
				END LOOP;
			END IF;
		END;
		EXECUTE format('REASSIGN OWNED BY %I TO %I', r, target);
		EXECUTE format('DROP OWNED BY %I', r);
		IF EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s
			WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid
			  AND s.dbid NOT IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))) THEN
			IF final THEN
				RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
					MESSAGE = 'the role still owns objects or holds privileges in other databases';
			END IF;
			PERFORM set_config('pgvault.revoke_state', 'other-databases', true);
			RETURN;
		END IF;
		EXECUTE format('DROP ROLE %I', r);
		PERFORM set_config('pgvault.revoke_state', 'dropped', true);
	EXCEPTION WHEN OTHERS THEN
		-- Transient failures abort the whole transaction, which is retried.
		IF SQLSTATE IN ('40P01', '40001', '55P03') OR (SQLSTATE = 'XX000' AND SQLERRM LIKE '%concurrently%') THEN
			RAISE;
		END IF;
		PERFORM set_config('pgvault.revoke_state', 'disabled: ' || SQLERRM || ' (SQLSTATE ' || SQLSTATE || ')', true);
		EXECUTE format('ALTER ROLE %I NOLOGIN VALID UNTIL %L', r, '-infinity');
	END;
END`

// revokeOutcome reports revokeRole's outcome, its note, and the other
// databases that still hold the user's objects.
const revokeOutcome = `SELECT current_setting('pgvault.revoke_state', true),
	coalesce(current_setting('pgvault.revoke_note', true), ''),
	ARRAY(SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
		  AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = @role@)
		  AND d.datname <> current_database()
		ORDER BY 1)::text`

// reassignElsewhere hands a user's objects and privileges in another
// database to the target role; the role itself is dropped afterwards from
// the main connection.
const reassignElsewhere = `
DECLARE
	r text := @role@;
	target text := @target@;
	lt text := current_setting('lock_timeout');
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
		RETURN;
	END IF;
	-- What the user wrote must not gain the rights of the role that receives
	-- it: its SECURITY DEFINER routines become SECURITY INVOKER, and (15+)
	-- its views check the privileges of whoever queries them.
	DECLARE
		obj text;
	BEGIN
		FOR obj IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
			WHERE p.proowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) AND p.prosecdef LOOP
			EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', obj);
		END LOOP;
		IF current_setting('server_version_num')::int >= 150000 THEN
			FOR obj IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
				WHERE c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) AND c.relkind = 'v' LOOP
				EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', obj);
			END LOOP;
		END IF;
	END;
	EXECUTE format('REASSIGN OWNED BY %I TO %I', r, target);
	EXECUTE format('DROP OWNED BY %I', r);
END`

// errHandOverLocked: the user can no longer log in and has no session, but
// its objects are not handed over yet.
var errHandOverLocked = errors.New("logins are blocked and sessions ended")

// defaultRevoke removes a user for good without losing data: one round trip
// when the user owns nothing outside the connected database, otherwise one
// more per database it owns objects in, and a final one to drop the role.
func (p *Postgres) defaultRevoke(ctx context.Context, st *state, username string) error {
	outcome, note, others, err := st.revokeOnce(ctx, username, false)
	if err != nil {
		if errors.Is(err, errHandOverLocked) {
			p.logger.Warn("revocation: logins and sessions ended; the hand-over of the user's objects waits for a lock, Vault will retry", "username", username)
		}
		return err
	}
	if outcome == "other-databases" {
		for _, dbname := range others {
			// A database we cannot reach must not make the lease
			// irrevocable: the final pass disables the role instead.
			if err := st.reassignIn(ctx, dbname, username); err != nil {
				p.logger.Warn("revocation: could not reassign objects in another database", "username", username, "database", dbname, "error", err)
			}
		}
		if outcome, note, _, err = st.revokeOnce(ctx, username, true); err != nil {
			return err
		}
	}
	switch {
	case outcome == "gone":
		p.logger.Debug("revocation: user already gone", "username", username)
	case outcome == "dropped":
		p.logger.Debug("revoked user", "username", username)
	case strings.HasPrefix(outcome, "disabled: "):
		p.logger.Warn("revocation: the role could not be dropped, so it was disabled instead (NOLOGIN, expired, memberships revoked)",
			"username", username, "reason", strings.TrimPrefix(outcome, "disabled: "))
		if note != "" {
			p.logger.Warn("revocation: "+note, "username", username)
		}
	default:
		return fmt.Errorf("unexpected revocation outcome %q", outcome)
	}
	return nil
}

// reassignIn hands the user's objects in another database to the target.
func (st *state) reassignIn(ctx context.Context, dbname, username string) error {
	pool, err := st.databasePool(dbname)
	if err != nil {
		return err
	}
	if err := execAtomic(ctx, pool, pinnedSearchPath+"DO "+dollarQuote(st.revokeBody(reassignElsewhere, username, false))); err != nil {
		return errors.New(describe(err))
	}
	return nil
}

// revokeBody fills the markers of one revocation statement.
func (st *state) revokeBody(tmpl, username string, final bool) string {
	target := "current_user"
	if st.cfg.ReassignOwnedTo != "" {
		target = quoteLiteral(st.cfg.ReassignOwnedTo)
	}
	// One pass: a value is never searched for markers.
	return strings.NewReplacer(
		"@role@", quoteLiteral(username),
		"@target@", target,
		"@terminate@", strconv.FormatBool(*st.cfg.TerminateSessions),
		"@final@", strconv.FormatBool(final),
	).Replace(tmpl)
}

// pinnedSearchPath comes before the plugin's own blocks. They run as the
// admin, often a superuser, and call format(), cardinality() and more
// unqualified: with the session's search_path, a role that can create in a
// schema on it (public, for everyone up to PostgreSQL 14) could plant a
// better-matching overload and have the admin run it. The next request's
// sessionReset restores the path.
const pinnedSearchPath = "SET search_path = pg_catalog, pg_temp;\n"

// revokeSQL is the query string of one local revocation pass (see
// revokeLogin).
func (st *state) revokeSQL(username string, final bool) string {
	return pinnedSearchPath + "BEGIN;\nDO " + dollarQuote(st.revokeBody(revokeLogin, username, final)) + ";\nCOMMIT;\n" +
		"DO " + dollarQuote(st.revokeBody(revokeRole, username, final)) + ";\n" +
		st.revokeBody(revokeOutcome, username, final)
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
func (st *state) revokeOnce(ctx context.Context, username string, final bool) (string, string, []string, error) {
	sql := st.revokeSQL(username, final)
	var outcome, note, dbs string
	run := func() error {
		return withRetry(ctx, func() error {
			var err error
			outcome, note, dbs, err = st.runRevoke(ctx, sql)
			return err
		})
	}
	err := run()
	// Revocation is idempotent: after a lost connection (a restarted
	// server, a killed backend) it simply runs again on a fresh one.
	for attempt := 0; attempt < connRetries && connLost(err) && ctx.Err() == nil; attempt++ {
		err = run()
	}
	if err != nil {
		// Someone else dropped the role between our check and our use.
		if sqlState(err) == pgerrcode.UndefinedObject {
			if exists, cerr := st.roleExists(ctx, username); cerr == nil && !exists {
				return "gone", "", nil, nil
			}
		}
		if isLockTimeout(err) {
			// NOLOGIN is committed and the sessions are ended before the
			// hand-over starts: only REASSIGN/DROP OWNED waited.
			return "", "", nil, fmt.Errorf("%w: handing over what the user owns waited longer than lock_timeout (%s) for a lock another session holds on one of its objects; Vault retries the revocation later", errHandOverLocked, st.cfg.LockTimeout)
		}
		return "", "", nil, errors.New(st.describe(err))
	}
	return outcome, note, parseTextArray(dbs), nil
}

func (st *state) runRevoke(ctx context.Context, sql string) (outcome, note, dbs string, err error) {
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return "", "", "", err
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
		return "", "", "", err
	}
	last := results[len(results)-1]
	if len(last.Rows) != 1 || len(last.Rows[0]) != 3 {
		return "", "", "", errors.New("revocation returned no outcome")
	}
	return string(last.Rows[0][0]), string(last.Rows[0][1]), string(last.Rows[0][2]), nil
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

// parseTextArray parses PostgreSQL's text form of a text[] of simple
// database names ({a,"b c"}).
func parseTextArray(s string) []string {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil
	}
	s = s[1 : len(s)-1]
	var out []string
	var cur strings.Builder
	inQuotes, escaped, any := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			cur.WriteByte(c)
			escaped = false
		case c == '\\':
			escaped = true
		case c == '"':
			inQuotes = !inQuotes
			any = true
		case c == ',' && !inQuotes:
			out = append(out, cur.String())
			cur.Reset()
			any = false
		default:
			cur.WriteByte(c)
			any = true
		}
	}
	if any || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
