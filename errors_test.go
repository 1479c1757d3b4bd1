package postgres

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestOpError(t *testing.T) {
	const secret = "s3cr'et-pw"
	cause := fmt.Errorf("exec: %w", &pgconn.PgError{Code: pgerrcode.InsufficientPrivilege, Message: "permission denied near 's3cr''et-pw'"})
	err := failed(`creating user "v-app"`, cause, secret)
	if got, want := err.Error(), `creating user "v-app": permission denied near '[redacted]' (SQLSTATE 42501)`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || sqlState(fmt.Errorf("revoking: %w", err)) != pgerrcode.InsufficientPrivilege {
		t.Fatal("the cause is lost: errors.As and sqlState must still find the server's error")
	}
	if got := failed("", errors.New("plain")).Error(); got != "plain" {
		t.Fatalf("without an operation: %q", got)
	}
	if strings.Contains(failed("x", cause, secret).Error(), "s3cr") {
		t.Fatal("secret shown")
	}
}

// TestJoinedError: a message that joins a failure and what went wrong
// finding out its outcome keeps both causes reachable, and wrapping it as an
// operation's error does not describe it a second time.
func TestJoinedError(t *testing.T) {
	lost := errors.New("unexpected EOF")
	check := &pgconn.PgError{Code: pgerrcode.AdminShutdown, Message: "terminating connection"}
	err := joined("the connection was lost; checking failed: terminating connection (SQLSTATE 57P01)", errNotApplied, lost, check)
	if !errors.Is(err, errNotApplied) || !errors.Is(err, lost) || sqlState(err) != pgerrcode.AdminShutdown {
		t.Fatalf("a cause is unreachable: Is(errNotApplied)=%v Is(lost)=%v sqlState=%q",
			errors.Is(err, errNotApplied), errors.Is(err, lost), sqlState(err))
	}
	outer := failed(`updating user "u"`, err, "pw")
	if got, want := outer.Error(), `updating user "u": the connection was lost; checking failed: terminating connection (SQLSTATE 57P01)`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
