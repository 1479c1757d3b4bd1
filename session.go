package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// sessionReset returns a pooled session to what the plugin connected with:
// the configured user (SET SESSION AUTHORIZATION DEFAULT also ends any SET
// ROLE, which RESET ALL leaves alone) and every setting at its connect-time
// value, standard_conforming_strings=on from the startup packet included;
// DISCARD TEMP drops temporary objects, which pg_temp, first in the search
// path, would let shadow the tables of the next request's statements.
// All are allowed inside the implicit transaction of a multi-statement
// query, so it is sent as a prefix of every simple-protocol query the plugin
// runs on a pooled connection: no extra round trip.
const sessionReset = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP;\n"

// prepareSession is the pool's PrepareConn hook. PostgreSQL lexes a whole
// multi-statement query before running any of it, so the sessionReset prefix
// comes too late for the one setting that changes how literals are read:
// standard_conforming_strings. The server reports that setting whenever it
// changes, so the check is free; only a session a previous request left with
// it off pays a round trip to reset before its next query.
func prepareSession(ctx context.Context, c *pgx.Conn) (bool, error) {
	// The ping (if any) is over: lift its deadline (see shouldPing).
	_ = c.PgConn().Conn().SetDeadline(time.Time{})
	if c.PgConn().ParameterStatus("standard_conforming_strings") == "on" {
		return true, nil
	}
	if _, err := c.Exec(ctx, sessionReset); err != nil {
		// Let the pool replace the connection with a fresh one.
		return false, nil
	}
	if v := c.PgConn().ParameterStatus("standard_conforming_strings"); v != "on" {
		return false, fmt.Errorf("standard_conforming_strings is %q after a reset; the plugin needs on (remove what sets it off for the connection's user or database)", v)
	}
	return true, nil
}

// connectAs opens a one-off connection as user, with the pool's hosts, TLS
// and settings.
func (st *state) connectAs(ctx context.Context, user, password string) (*pgx.Conn, error) {
	cc := st.poolCfg.ConnConfig.Copy()
	cc.User, cc.Password = user, password
	return pgx.ConnectConfig(ctx, cc)
}

// loginAs reports whether user can log in with password. A failure the
// server did not answer (the network that just dropped a connection may
// still be recovering) is retried briefly, within ctx; an answer is final.
func (st *state) loginAs(ctx context.Context, user, password string) error {
	unanswered := func(err error) bool { return sqlState(err) == "" && ctx.Err() == nil }
	return retryWhile(ctx, unanswered, func() error {
		conn, err := st.connectAs(ctx, user, password)
		if err == nil {
			_ = conn.Close(ctx)
		}
		return err
	})
}

// endSession ends the session of user whose last query carried tag (see
// newSessionTag), if it still runs, and waits until it is gone, so that
// whatever its transaction did is final. Ending it needs the right to signal
// it; without that, waiting alone has to do. The tag is matched as a
// literal prefix of the query text.
func (st *state) endSession(ctx context.Context, user, tag string) error {
	const match = "FROM pg_catalog.pg_stat_activity WHERE pg_catalog.starts_with(query, $1) AND usename OPERATOR(pg_catalog.=) $2 AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()"
	_, _ = st.pool.Exec(ctx, "SELECT pg_catalog.pg_terminate_backend(pid) "+match, tag, user)
	always := func(error) bool { return true }
	return retryWhile(ctx, always, func() error {
		var alive bool
		if err := st.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 "+match+")", tag, user).Scan(&alive); err != nil {
			return err
		}
		if alive {
			return errors.New("the session that sent the statements is still running")
		}
		return nil
	})
}
