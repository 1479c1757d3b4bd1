package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// revokeLocal is the default revocation of one user in the connected
// database, as one DO block plus a SELECT that reports the outcome. Sent as
// one simple-protocol query it runs in one implicit transaction and one round
// trip. Steps:
//
//  1. a missing role is success;
//  2. block new logins and end the user's sessions, cluster-wide;
//  3. in a subtransaction: make the admin a member of the role when it is
//     not a superuser (PostgreSQL 15 requires it for REASSIGN/DROP OWNED),
//     hand everything the user owns to the configured role, drop what is
//     left (privileges), and drop the role unless it still has objects in
//     other databases;
//  4. if step 3 fails, leave the role harmless: NOLOGIN, expired, no group
//     memberships; the reason is reported back for a warning.
//
// %[1]s is the role name as a literal, %[2]s the reassign target as an SQL
// expression, %[3]s whether to end sessions, %[4]s whether this is the final
// pass, after which objects left in other databases disable the role.
const revokeLocal = `DO $pgvault$
DECLARE
	r text := %[1]s;
	target text := %[2]s;
	me text := current_user;
	g text;
BEGIN
	PERFORM set_config('pgvault.revoke_state', 'gone', true);
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
		RETURN;
	END IF;
	IF r IN (current_user, session_user) THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = 'refusing to revoke the user Vault connects as';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = target) THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('reassign_owned_to names role %%I, which does not exist', target);
	END IF;
	EXECUTE format('ALTER ROLE %%I NOLOGIN', r);
	-- A CREATEROLE admin needs membership to end the role's sessions and,
	-- on PostgreSQL 15, to reassign and drop what it owns.
	IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = me)
	   AND NOT pg_catalog.pg_has_role(me, r, 'USAGE') THEN
		BEGIN
			EXECUTE format('GRANT %%I TO %%I', r, me);
		EXCEPTION WHEN insufficient_privilege THEN
			PERFORM set_config('pgvault.revoke_note', 'could not join the role: ' || SQLERRM, true);
		END;
	END IF;
	IF %[3]s THEN
		BEGIN
			IF current_setting('server_version_num')::int >= 140000 THEN
				PERFORM pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity
					WHERE usename = r AND pid <> pg_catalog.pg_backend_pid();
			ELSE
				PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
					WHERE usename = r AND pid <> pg_catalog.pg_backend_pid();
			END IF;
		EXCEPTION WHEN insufficient_privilege THEN
			PERFORM set_config('pgvault.revoke_note', 'could not end sessions: ' || SQLERRM, true);
		END;
	END IF;
	BEGIN
		EXECUTE format('REASSIGN OWNED BY %%I TO %%I', r, target);
		EXECUTE format('DROP OWNED BY %%I', r);
		IF EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s
			WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
			  AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r)
			  AND s.dbid NOT IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))) THEN
			IF %[4]s THEN
				RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
					MESSAGE = 'the role still owns objects or holds privileges in other databases';
			END IF;
			PERFORM set_config('pgvault.revoke_state', 'other-databases', true);
			RETURN;
		END IF;
		EXECUTE format('DROP ROLE %%I', r);
		PERFORM set_config('pgvault.revoke_state', 'dropped', true);
	EXCEPTION WHEN OTHERS THEN
		-- Transient failures abort the whole transaction, which is retried.
		IF SQLSTATE IN ('40P01', '40001', '55P03') OR (SQLSTATE = 'XX000' AND SQLERRM LIKE '%%concurrently%%') THEN
			RAISE;
		END IF;
		PERFORM set_config('pgvault.revoke_state', 'disabled: ' || SQLERRM || ' (SQLSTATE ' || SQLSTATE || ')', true);
		EXECUTE format('ALTER ROLE %%I NOLOGIN VALID UNTIL %%L', r, '-infinity');
		FOR g IN SELECT m.roleid::regrole::text FROM pg_catalog.pg_auth_members m
			WHERE m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) LOOP
			BEGIN
				EXECUTE format('REVOKE %%s FROM %%I', g, r);
			EXCEPTION WHEN OTHERS THEN
				RAISE WARNING 'could not revoke %% from %%: %%', g, r, SQLERRM;
			END;
		END LOOP;
	END;
END $pgvault$;
SELECT current_setting('pgvault.revoke_state', true),
	coalesce(current_setting('pgvault.revoke_note', true), ''),
	ARRAY(SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
		  AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %[1]s)
		  AND d.datname <> current_database()
		ORDER BY 1)::text`

// reassignElsewhere hands a user's objects and privileges in another
// database to the target role; the role itself is dropped afterwards from
// the main connection.
const reassignElsewhere = `DO $pgvault$
DECLARE
	r text := %[1]s;
	target text := %[2]s;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
		RETURN;
	END IF;
	EXECUTE format('REASSIGN OWNED BY %%I TO %%I', r, target);
	EXECUTE format('DROP OWNED BY %%I', r);
END $pgvault$`

// defaultRevoke removes a user for good without losing data: one round trip
// when the user owns nothing outside the connected database, otherwise one
// more per database it owns objects in, and a final one to drop the role.
func (p *Postgres) defaultRevoke(ctx context.Context, st *state, username string) error {
	if strings.Contains(username, "$pgvault$") {
		return errors.New("the username contains the reserved text $pgvault$")
	}
	outcome, note, others, err := st.revokeOnce(ctx, st.revokeSQL(revokeLocal, username, false))
	if err != nil {
		return err
	}
	if note != "" {
		p.logger.Warn("revocation: "+note, "username", username)
	}
	if outcome == "other-databases" {
		for _, dbname := range others {
			// A database we cannot reach must not make the lease
			// irrevocable: the final pass disables the role instead.
			if err := st.reassignIn(ctx, dbname, username); err != nil {
				p.logger.Warn("revocation: could not reassign objects in another database", "username", username, "database", dbname, "error", err)
			}
		}
		if outcome, _, _, err = st.revokeOnce(ctx, st.revokeSQL(revokeLocal, username, true)); err != nil {
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
	if err := execAtomic(ctx, pool, st.revokeSQL(reassignElsewhere, username, false)); err != nil {
		return errors.New(describe(err))
	}
	return nil
}

func (st *state) revokeSQL(tmpl, username string, final bool) string {
	target := "current_user"
	if st.cfg.ReassignOwnedTo != "" {
		target = quoteLiteral(st.cfg.ReassignOwnedTo)
	}
	terminate := "false"
	if *st.cfg.TerminateSessions {
		terminate = "true"
	}
	return fmt.Sprintf(tmpl, quoteLiteral(username), target, terminate, strconv.FormatBool(final))
}

// revokeOnce runs the local revocation and reads its outcome and the other
// databases that still hold the user's objects.
func (st *state) revokeOnce(ctx context.Context, sql string) (string, string, []string, error) {
	var outcome, note, dbs string
	err := withRetry(ctx, func() error {
		var err error
		outcome, note, dbs, err = st.runRevoke(ctx, sql)
		return err
	})
	if err != nil {
		return "", "", nil, errors.New(describe(err))
	}
	return outcome, note, parseTextArray(dbs), nil
}

func (st *state) runRevoke(ctx context.Context, sql string) (outcome, note, dbs string, err error) {
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return "", "", "", err
	}
	defer conn.Release()
	results, err := conn.Conn().PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
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
