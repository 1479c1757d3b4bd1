package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// sessionReset returns a pooled session to what the plugin connected with:
// the configured user (SET SESSION AUTHORIZATION DEFAULT also ends any SET
// ROLE, which RESET ALL leaves alone) and every setting at its connect-time
// value, standard_conforming_strings=on from the startup packet included.
// Both are allowed inside the implicit transaction of a multi-statement
// query, so it is sent as a prefix of every simple-protocol query the plugin
// runs on a pooled connection: no extra round trip.
const sessionReset = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL;\n"

// prepareSession is the pool's PrepareConn hook. PostgreSQL lexes a whole
// multi-statement query before running any of it, so the sessionReset prefix
// comes too late for the one setting that changes how literals are read:
// standard_conforming_strings. The server reports that setting whenever it
// changes, so the check is free; only a session a previous request left with
// it off pays a round trip to reset before its next query.
func prepareSession(ctx context.Context, c *pgx.Conn) (bool, error) {
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
