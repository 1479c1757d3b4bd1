package postgres

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// opError is a failed operation: what was being done, the cause, and the
// secrets its message must not show. Like pgconn's ParseConfigError, its
// message is safe to return to Vault and to log, while Unwrap keeps the cause
// for errors.Is, errors.As and SQLSTATE checks (sqlState).
type opError struct {
	op      string // what failed, in the operator's words; "" when the caller says it
	cause   error
	msg     string   // the cause described for an operator (describe), when the error was made
	secrets []string // passwords and verifiers the statements held
}

// failed wraps err, described without the statement text (describe).
func failed(op string, err error, secrets ...string) error {
	return &opError{op: op, cause: err, msg: describe(err), secrets: secrets}
}

// failed wraps err, described with what the state knows: the database it
// came from and the lock_timeout it waited for (state.describe).
func (st *state) failed(op string, err error, secrets ...string) error {
	return &opError{op: op, cause: err, msg: st.describe(err), secrets: secrets}
}

// joined is an error whose message joins several causes, such as a failure
// and what went wrong finding out its outcome: msg says it for an operator,
// and every cause stays reachable by errors.Is and errors.As.
func joined(msg string, causes ...error) error {
	return &opError{cause: errors.Join(causes...), msg: msg}
}

func (e *opError) Error() string {
	msg := redact(e.msg, e.secrets...)
	if e.op == "" {
		return msg
	}
	return e.op + ": " + msg
}

func (e *opError) Unwrap() error { return e.cause }

// describe formats a database error for an operator without the statement
// text (which could hold a password verifier).
func describe(err error) string {
	if oe, ok := err.(*opError); ok {
		return oe.Error() // described already
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		s := pgErr.Message
		if pgErr.Detail != "" {
			s += " (" + pgErr.Detail + ")"
		}
		return fmt.Sprintf("%s (SQLSTATE %s)", s, pgErr.Code)
	}
	return err.Error()
}

// describe is describe(err) with the database it came from when the error is
// the connection's, which pgx's own text ("unexpected EOF") does not name.
func (st *state) describe(err error) string {
	if oe, ok := err.(*opError); ok {
		return oe.Error() // described already
	}
	msg := describe(err)
	switch {
	case isLockTimeout(err):
		msg = fmt.Sprintf("%s: waited longer than lock_timeout (%s) for a lock another session holds; retry later, or raise lock_timeout", msg, st.cfg.LockTimeout)
	case sqlState(err) == pgerrcode.UndefinedTable || sqlState(err) == pgerrcode.UndefinedFunction:
		// txSettings: statements that run code search pg_catalog only.
		msg += "; statements other than CREATE/ALTER/DROP ROLE, GRANT, REVOKE and COMMENT ON (DO, SELECT, DML, ALTER TABLE, CREATE POLICY …) run with search_path = pg_catalog, pg_temp: qualify the name with its schema (public.orders)"
	case sqlState(err) == "" && !strings.Contains(msg, "failed to connect"):
		if connLost(err) {
			msg = fmt.Sprintf("the connection to %s was lost (%s)", hostList(st.poolCfg), msg)
		} else {
			msg = fmt.Sprintf("%s (database %s)", msg, hostList(st.poolCfg))
		}
	}
	return msg
}
