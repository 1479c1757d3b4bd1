// Package pgtest gives tests, benchmarks and the demo a real PostgreSQL
// server. It looks, in order, for PG_URL (a superuser DSN), PG_BINDIR (the
// bin directory of a PostgreSQL installation; `make test-matrix` sets it for
// each major), a Docker daemon (dockertest, image
// postgres:${PG_VERSION:-17}), and the local PostgreSQL server binaries
// (pg_config --bindir). From binaries it starts a throwaway cluster with
// SCRAM authentication and TLS from a test CA on a free loopback port.
//
// It is also the one home of what tests need from the database side:
// connections and pools (Connect, Pool, CanLogin), catalog checks
// (RoleExists), the server log (ReadLog), and certificates (certauth.go:
// NewCA and CA.Issue for any certificate a test needs, ClientCA and
// ClientCert for the local cluster's own CA), connection poolers in
// front of a server (pooler.go: StartPgBouncer, StartPgpool), a TCP proxy
// that breaks or slows the path to a server (proxy.go: NewProxy, then
// KillAll, BlackholeAll, Down and Up, Arm with CutBefore or CutAfter), and a
// fake server, a man in the middle that asks for the password in cleartext
// and records what clients send (fakeserver.go: NewFakeServer).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Server is a PostgreSQL server reachable as a superuser.
type Server struct {
	Host          string
	Port          int
	SuperUser     string
	SuperPassword string
	Database      string
	// SSLMode is what URLs use: verify-full with the test CA for a local
	// cluster, disable otherwise.
	SSLMode string
	// CAPEM is the PEM of the CA that signed the server certificate; empty
	// when the server was not started here.
	CAPEM string
	// CAFile holds CAPEM on disk, for libpq-style sslrootcert.
	CAFile string
	// LogFile is the server's log (every statement is logged), or "".
	LogFile string
	// Source says where the server came from (PG_URL, docker or local)
	// and which version it runs, for the tests' first log line.
	Source string
	// Version is the server's version() string and VersionNum its
	// server_version_num (e.g. 160014), so a test can say what it ran on.
	Version    string
	VersionNum int
	// BinDir holds the server binaries of a local cluster.
	BinDir string
	// DataDir and PID are a local cluster's data directory and postmaster
	// process (replica.go: base backups, killing the primary).
	DataDir string
	PID     int

	exited <-chan struct{} // closed when a local postmaster has exited

	stop func() error
	ca   *testCA
}

// Start finds or starts a PostgreSQL server. Call Stop when done.
func Start(ctx context.Context) (*Server, error) {
	s, err := start(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.readVersion(ctx); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("reading the version of PostgreSQL from %s: %w", s.Source, err)
	}
	return s, nil
}

func start(ctx context.Context) (*Server, error) {
	if u := os.Getenv("PG_URL"); u != "" {
		return fromURL(u)
	}
	if os.Getenv("PG_BINDIR") != "" {
		// An explicit bin directory is a choice of version: never let a
		// Docker daemon's image stand in for it.
		return startLocal(ctx)
	}
	var tried []string
	if s, err := startDocker(ctx); err == nil {
		return s, nil
	} else {
		tried = append(tried, "Docker: "+err.Error())
	}
	s, err := startLocal(ctx)
	if err == nil {
		return s, nil
	}
	tried = append(tried, "local PostgreSQL binaries: "+err.Error())
	return nil, fmt.Errorf("no PostgreSQL for tests. Set PG_URL to a superuser DSN or PG_BINDIR to a PostgreSQL bin directory, run a Docker daemon, or install the PostgreSQL server (pg_config --bindir must hold initdb and pg_ctl; on Debian: apt-get install postgresql). Tried:\n  PG_URL: not set\n  %s", strings.Join(tried, "\n  "))
}

// readVersion fills Version and VersionNum and names the version in Source.
func (s *Server) readVersion(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := s.Connect(ctx, s.SuperUser, s.SuperPassword, "")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var short string
	if err := c.QueryRow(ctx, "SELECT version(), current_setting('server_version'), current_setting('server_version_num')::int").
		Scan(&s.Version, &short, &s.VersionNum); err != nil {
		return err
	}
	s.Source += " (PostgreSQL " + short + ")"
	return nil
}

// Stop stops a server this package started; it is a no-op for PG_URL.
func (s *Server) Stop() error {
	if s == nil || s.stop == nil {
		return nil
	}
	return s.stop()
}

func fromURL(raw string) (*Server, error) {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return nil, errors.New("PG_URL could not be parsed")
	}
	mode := "disable"
	if cfg.TLSConfig != nil {
		mode = "require"
	}
	if u, err := url.Parse(raw); err == nil && u.Query().Get("sslmode") != "" {
		mode = u.Query().Get("sslmode")
	}
	return &Server{Host: cfg.Host, Port: int(cfg.Port), SuperUser: cfg.User, SuperPassword: cfg.Password,
		Database: cfg.Database, SSLMode: mode, Source: "PG_URL"}, nil
}

// URL is a postgres:// URL for user and password on database ("" for the
// default database).
func (s *Server) URL(user, password, database string) string {
	if database == "" {
		database = s.Database
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Path: "/" + database}
	if password == "" {
		u.User = url.User(user)
	} else {
		u.User = url.UserPassword(user, password)
	}
	q := url.Values{"sslmode": {s.SSLMode}}
	if s.CAFile != "" && s.SSLMode != "disable" {
		q.Set("sslrootcert", s.CAFile)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// SuperURL is the superuser's URL.
func (s *Server) SuperURL() string { return s.URL(s.SuperUser, s.SuperPassword, "") }

// TemplateURL is a connection_url for the plugin, with {{username}} and
// {{password}} placeholders, on database ("" for the default).
func (s *Server) TemplateURL(database string) string {
	if database == "" {
		database = s.Database
	}
	q := url.Values{"sslmode": {s.SSLMode}}
	if s.CAFile != "" && s.SSLMode != "disable" {
		q.Set("sslrootcert", s.CAFile)
	}
	return fmt.Sprintf("postgres://{{username}}:{{password}}@%s/%s?%s", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), database, q.Encode())
}

// Connect opens a connection as user with password.
func (s *Server) Connect(ctx context.Context, user, password, database string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, s.URL(user, password, database))
}

// CanLogin reports whether user can log in with password and run a query.
func (s *Server) CanLogin(ctx context.Context, user, password string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := s.Connect(ctx, user, password, "")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	return c.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// Querier is what the role readers need: a pool or a connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// RoleExists reports whether the cluster has a role of that name.
func RoleExists(ctx context.Context, q Querier, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", name).Scan(&ok)
	return ok, err
}

// ValidUntil returns a role's VALID UNTIL (rolvaliduntil); a role without
// one, or no role of that name, is an error.
func ValidUntil(ctx context.Context, q Querier, name string) (time.Time, error) {
	var until time.Time
	err := q.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_catalog.pg_roles WHERE rolname = $1", name).Scan(&until)
	return until, err
}

// RoleComment returns the comment on a role as a DBA reads it
// (shobj_description); ok is false when the role has none.
func RoleComment(ctx context.Context, q Querier, name string) (comment string, ok bool, err error) {
	var c *string
	err = q.QueryRow(ctx, "SELECT pg_catalog.shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname = $1", name).Scan(&c)
	if err != nil || c == nil {
		return "", false, err
	}
	return *c, true, nil
}

// Pool opens a superuser pool.
func (s *Server) Pool(ctx context.Context) (*pgxpool.Pool, error) {
	return pgxpool.New(ctx, s.SuperURL())
}

// ReadLog returns the server log, or an error when it is not available.
func (s *Server) ReadLog() (string, error) {
	if s.LogFile == "" {
		return "", errors.New("server log not available for a server started elsewhere")
	}
	b, err := os.ReadFile(s.LogFile)
	return string(b), err
}

// waitReady polls until the superuser can log in.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	err := Poll(ctx, timeout, 200*time.Millisecond, func() error {
		return s.CanLogin(ctx, s.SuperUser, s.SuperPassword)
	})
	if err != nil {
		return fmt.Errorf("server not ready after %s: %w", timeout, err)
	}
	return nil
}

// Poll calls f every interval until it returns nil, timeout passes or ctx
// ends, and returns f's last error (or ctx's). The harnesses, tests and
// demo wait for servers, leaders and sessions with it.
func Poll(ctx context.Context, timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
