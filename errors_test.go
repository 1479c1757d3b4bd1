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
