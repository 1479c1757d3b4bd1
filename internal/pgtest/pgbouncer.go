package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPgBouncer says no pgbouncer binary was found; tests skip on it.
var ErrNoPgBouncer = errors.New("pgbouncer not found (PGBOUNCER, PATH, /usr/sbin/pgbouncer; on Debian: apt-get install pgbouncer)")

// PgBouncer is a PgBouncer in front of a Server, started by StartPgBouncer.
// Clients reach it in plaintext and authenticate with SCRAM; it looks their
// passwords up in the server (auth_query), so roles created after it
// started, and passwords changed after it started, work at once.
type PgBouncer struct {
	Host string
	Port int
	// PoolMode is PgBouncer's pool_mode: session or transaction.
	PoolMode string
	// LogFile is PgBouncer's log (every login and server connection).
	LogFile string
	// ConfigFile is the pgbouncer.ini it runs with.
	ConfigFile string
	// AuthUser is the role PgBouncer runs auth_query as; it exists only
	// while this PgBouncer runs.
	AuthUser string
	// Database is the server's database that holds the lookup function,
	// the only one clients can log in to through this PgBouncer.
	Database string

	stop func() error
}

// pgbouncerBinary finds PgBouncer: PGBOUNCER, then PATH, then Debian's
// /usr/sbin (not on PATH for every user).
func pgbouncerBinary() (string, error) {
	if p := os.Getenv("PGBOUNCER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer", nil
	}
	return "", ErrNoPgBouncer
}

// StartPgBouncer starts PgBouncer on a free loopback port in front of s,
// with pool_mode poolMode (session or transaction) and otherwise PgBouncer's
// defaults: nothing is added to ignore_startup_parameters, so a client that
// sends a startup parameter PgBouncer does not know is refused, as in a
// default deployment. It runs as the cluster user (PgBouncer refuses root)
// in a temp dir of its own, and it is ready when the superuser can log in
// through it. Call Stop when done.
func StartPgBouncer(ctx context.Context, s *Server, poolMode string) (*PgBouncer, error) {
	if poolMode != "session" && poolMode != "transaction" {
		return nil, fmt.Errorf("pool mode %q: use session or transaction", poolMode)
	}
	bin, err := pgbouncerBinary()
	if err != nil {
		return nil, err
	}
	cl, err := newCluster("pgvault-pgbouncer-")
	if err != nil {
		return nil, err
	}
	if err := os.Chown(cl.dir, cl.who.uid, cl.who.gid); err != nil {
		cl.cleanup()
		return nil, err
	}
	authUser, authPassword, err := createBouncerAuth(ctx, s)
	if err != nil {
		cl.cleanup()
		return nil, fmt.Errorf("creating PgBouncer's auth_user: %w", err)
	}
	b := &PgBouncer{Host: "127.0.0.1", PoolMode: poolMode, AuthUser: authUser, Database: s.Database,
		LogFile: filepath.Join(cl.dir, "pgbouncer.log"), ConfigFile: filepath.Join(cl.dir, "pgbouncer.ini")}
	dropAuth := func() { _ = dropBouncerAuth(s, authUser) }
	if b.Port, err = FreePort(); err == nil {
		err = b.writeConfig(cl, s, authPassword)
	}
	if err != nil {
		dropAuth()
		cl.cleanup()
		return nil, err
	}
	stop, err := runPgBouncer(cl.who, bin, b.ConfigFile, b.LogFile)
	if err != nil {
		dropAuth()
		cl.cleanup()
		return nil, err
	}
	b.stop = func() error {
		err := stop()
		dropAuth()
		cl.cleanup()
		return err
	}
	if err := b.waitReady(ctx, s); err != nil {
		_ = b.Stop()
		return nil, err
	}
	return b, nil
}

// waitReady polls until the superuser logs in through PgBouncer, which
// proves the whole path: auth_query, SCRAM pass-through and server TLS.
func (b *PgBouncer) waitReady(ctx context.Context, s *Server) error {
	err := Poll(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		return b.CanLogin(ctx, s.SuperUser, s.SuperPassword)
	})
	if err != nil {
		log, _ := os.ReadFile(b.LogFile)
		return fmt.Errorf("pgbouncer not ready: %w\npgbouncer log:\n%s", err, log)
	}
	return nil
}

// Stop stops PgBouncer, drops its auth_user and removes its directory.
func (b *PgBouncer) Stop() error {
	if b == nil || b.stop == nil {
		return nil
	}
	stop := b.stop
	b.stop = nil
	return stop()
}

// ReadLog returns PgBouncer's log.
func (b *PgBouncer) ReadLog() (string, error) {
	out, err := os.ReadFile(b.LogFile)
	return string(out), err
}

// hostPort is PgBouncer's address.
func (b *PgBouncer) hostPort() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// URL is a postgres:// URL through PgBouncer for user and password on
// database ("" for the default): plaintext, the password goes by SCRAM.
func (b *PgBouncer) URL(user, password, database string) string {
	if database == "" {
		database = b.Database
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: b.hostPort(), Path: "/" + database, RawQuery: "sslmode=disable"}
	return u.String()
}

// TemplateURL is a connection_url for the plugin through PgBouncer, with
// {{username}} and {{password}} placeholders, on database ("" for the
// default). It carries nothing a direct URL would not: no
// default_query_exec_mode, no options, so the plugin is tested as an
// operator would configure it.
func (b *PgBouncer) TemplateURL(database string) string {
	if database == "" {
		database = b.Database
	}
	return fmt.Sprintf("postgres://{{username}}:{{password}}@%s/%s?sslmode=disable", b.hostPort(), database)
}

// Connect opens a connection through PgBouncer as user with password. It
// uses the simple protocol: pgx's default, named prepared statements, does
// not survive transaction pooling in PgBouncer before 1.21, and the tests'
// own checks must not fail for that.
func (b *PgBouncer) Connect(ctx context.Context, user, password, database string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(b.URL(user, password, database))
	if err != nil {
		return nil, errors.New("the PgBouncer URL could not be parsed")
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cc)
}

// CanLogin reports whether user can log in through PgBouncer with password
// and run a query (which needs a server connection as user).
func (b *PgBouncer) CanLogin(ctx context.Context, user, password string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := b.Connect(ctx, user, password, "")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	return c.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// runPgBouncer starts PgBouncer in the foreground as the cluster user, its
// output in logFile. Like the postmaster it runs in its own process group
// and dies with us; stop shuts it down at once (SIGTERM) and waits.
func runPgBouncer(who runAs, bin, ini, logFile string) (stop func() error, err error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := who.command(context.Background(), bin, ini)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting pgbouncer: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		return nil
	}, nil
}

// writeConfig writes pgbouncer.ini and the auth_file into cl.dir, owned by
// the cluster user (the auth_file holds the auth_user's password: 0600).
// Besides the address, pool_mode and authentication, only server-side TLS
// is set: PgBouncer's default (prefer) does not verify the server, and the
// test cluster is verified everywhere else.
func (b *PgBouncer) writeConfig(cl *cluster, s *Server, authPassword string) error {
	authFile := filepath.Join(cl.dir, "userlist.txt")
	ini := fmt.Sprintf(`[databases]
%s = host=%s port=%d dbname=%s

[pgbouncer]
listen_addr = %s
listen_port = %d
unix_socket_dir = %s
pool_mode = %s
; SCRAM pass-through: a client's SCRAM login gives PgBouncer the keys to
; log in to the server as that role, so no role but the auth_user needs a
; password on file, and a rotated password works at once.
auth_type = scram-sha-256
auth_file = %s
auth_user = %s
auth_query = SELECT uname, phash FROM %s.user_lookup($1)
%s
`, s.Database, s.Host, s.Port, s.Database, b.Host, b.Port, cl.dir, b.PoolMode, authFile, b.AuthUser, bouncerSchema, serverTLS(s))
	if err := writeOwned(cl.who, b.ConfigFile, ini); err != nil {
		return err
	}
	return writeOwned(cl.who, authFile, userlistQuote(b.AuthUser)+" "+userlistQuote(authPassword)+"\n")
}

// serverTLS is how PgBouncer connects to s: verified against the test CA
// when s has one (a local cluster), else as s's own URLs do.
func serverTLS(s *Server) string {
	switch {
	case s.CAFile != "":
		return "server_tls_sslmode = verify-full\nserver_tls_ca_file = " + s.CAFile
	case s.SSLMode == "disable":
		return "server_tls_sslmode = disable"
	default:
		return "server_tls_sslmode = require"
	}
}

// userlistQuote quotes a value for PgBouncer's auth_file.
func userlistQuote(v string) string { return `"` + strings.ReplaceAll(v, `"`, `""`) + `"` }

// bouncerSchema holds the lookup function PgBouncer's auth_query calls.
const bouncerSchema = "pgvault_pgbouncer"

// bouncerAuthSQL creates the lookup function (once per database; the lock
// serialises PgBouncers started at once) and the auth_user, which may run
// nothing else. The function is SECURITY DEFINER: pg_shadow is for
// superusers only. pg_shadow lists only roles that may log in, so a
// NOLOGIN role (a revocation's first step) is refused by PgBouncer itself;
// the VALID UNTIL check is ours, because PgBouncer does not check it and
// would otherwise let an expired role in through a pooled server connection.
const bouncerAuthSQL = `BEGIN;
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgvault-pgtest/pgbouncer'));
CREATE SCHEMA IF NOT EXISTS ` + bouncerSchema + `;
CREATE OR REPLACE FUNCTION ` + bouncerSchema + `.user_lookup(i_username text)
RETURNS TABLE (uname text, phash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	SELECT usename::text, passwd FROM pg_catalog.pg_shadow
	WHERE usename = i_username AND (valuntil IS NULL OR valuntil > pg_catalog.now())
$$;
REVOKE ALL ON FUNCTION ` + bouncerSchema + `.user_lookup(text) FROM PUBLIC;
CREATE ROLE %[1]s LOGIN PASSWORD %[2]s;
GRANT USAGE ON SCHEMA ` + bouncerSchema + ` TO %[1]s;
GRANT EXECUTE ON FUNCTION ` + bouncerSchema + `.user_lookup(text) TO %[1]s;
COMMIT;`

// createBouncerAuth creates an auth_user of its own for one PgBouncer (each
// holds its password on file) and returns its name and password.
func createBouncerAuth(ctx context.Context, s *Server) (user, password string, err error) {
	c, err := s.Connect(ctx, s.SuperUser, s.SuperPassword, "")
	if err != nil {
		return "", "", err
	}
	defer c.Close(context.Background())
	user, password = "pgbouncer_auth_"+randomHex(), randomPassword()
	sql := fmt.Sprintf(bouncerAuthSQL, pgx.Identifier{user}.Sanitize(), "'"+strings.ReplaceAll(password, "'", "''")+"'")
	if _, err := c.Exec(ctx, sql); err != nil {
		return "", "", err
	}
	return user, password, nil
}

// dropBouncerAuth drops the auth_user and its grants. It runs on cleanup,
// after the test's context may have ended.
func dropBouncerAuth(s *Server, user string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := s.Connect(ctx, s.SuperUser, s.SuperPassword, "")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	id := pgx.Identifier{user}.Sanitize()
	_, err = c.Exec(ctx, "DROP OWNED BY "+id+"; DROP ROLE "+id)
	return err
}

func randomHex() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
