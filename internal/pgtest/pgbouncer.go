package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// ErrNoPgBouncer says no pgbouncer binary was found; tests skip on it.
var ErrNoPgBouncer = errors.New("pgbouncer not found (PGBOUNCER, PATH, /usr/sbin/pgbouncer; on Debian: apt-get install pgbouncer)")

// StartPgBouncer starts PgBouncer in front of s with pool_mode poolMode
// (session or transaction) and otherwise PgBouncer's defaults: nothing is
// added to ignore_startup_parameters, so a client that sends a startup
// parameter PgBouncer does not know is refused, as in a default deployment.
// Clients reach it in plaintext and log in with SCRAM; it looks their
// passwords up in the server (auth_query), so roles created after it
// started, and passwords changed after it started, work at once. PgBouncer
// refuses to run as root: it runs as the cluster user. Each of settings
// ("server_round_robin = 1") is added to its [pgbouncer] section. Call Stop
// when done.
func StartPgBouncer(ctx context.Context, s *Server, poolMode string, settings ...string) (*Pooler, error) {
	if poolMode != "session" && poolMode != "transaction" {
		return nil, fmt.Errorf("pool mode %q: use session or transaction", poolMode)
	}
	bin, err := findBinary("PGBOUNCER", "pgbouncer", ErrNoPgBouncer)
	if err != nil {
		return nil, err
	}
	cl, err := newPoolerDir("pgvault-pgbouncer-")
	if err != nil {
		return nil, err
	}
	authUser, authPassword, err := createBouncerAuth(ctx, s)
	if err != nil {
		cl.cleanup()
		return nil, fmt.Errorf("creating PgBouncer's auth_user: %w", err)
	}
	cleanup := func() {
		_ = dropBouncerAuth(s, authUser)
		cl.cleanup()
	}
	p := &Pooler{Name: "pgbouncer", Host: "127.0.0.1", PoolMode: poolMode, AuthUser: authUser, Database: s.Database,
		LogFile: filepath.Join(cl.dir, "pgbouncer.log"), ConfigFile: filepath.Join(cl.dir, "pgbouncer.ini"),
		tls: url.Values{"sslmode": {"disable"}}}
	if p.Port, err = FreePort(); err == nil {
		err = writeFiles(cl.who, cl.dir, map[string]string{
			"pgbouncer.ini": bouncerConfig(p, cl.dir, s) + strings.Join(settings, "\n") + "\n",
			"userlist.txt":  userlistQuote(authUser) + " " + userlistQuote(authPassword) + "\n",
		})
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := p.run(ctx, s, cl.who, syscall.SIGTERM, cleanup, bin, p.ConfigFile); err != nil {
		return nil, err
	}
	return p, nil
}

// bouncerConfig is pgbouncer.ini for p in dir. Besides the address,
// pool_mode and authentication, only server-side TLS is set: PgBouncer's
// default (prefer) does not verify the server, and the test cluster is
// verified everywhere else.
func bouncerConfig(p *Pooler, dir string, s *Server) string {
	return fmt.Sprintf(`[databases]
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
`, s.Database, s.Host, s.Port, s.Database, p.Host, p.Port, dir, p.PoolMode,
		filepath.Join(dir, "userlist.txt"), p.AuthUser, bouncerSchema, serverTLS(s))
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
// would otherwise let an expired role in through a pooled server session.
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
	sql := fmt.Sprintf(bouncerAuthSQL, render.QuoteIdent(user), render.QuoteLiteral(password))
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
	id := render.QuoteIdent(user)
	_, err = c.Exec(ctx, "DROP OWNED BY "+id+"; DROP ROLE "+id)
	return err
}
