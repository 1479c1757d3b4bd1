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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Pooler is a connection pooler in front of a Server: PgBouncer
// (StartPgBouncer) or pgpool-II (StartPgpool), run as the cluster user in a
// temp dir of its own on a free loopback port. Clients log in through it as
// any role of the server, including roles created after it started.
type Pooler struct {
	// Name is the pooler's program: pgbouncer or pgpool.
	Name string
	Host string
	Port int
	// PoolMode is how server sessions are shared: session or transaction
	// (PgBouncer's pool_mode); pgpool-II pools sessions.
	PoolMode string
	// LogFile is the pooler's log (every login and server connection).
	LogFile string
	// ConfigFile is the configuration file it runs with.
	ConfigFile string
	// Database is the only database of the server clients reach through it.
	Database string
	// AuthUser is the role PgBouncer runs auth_query as; it exists only
	// while this PgBouncer runs. Empty for pgpool-II.
	AuthUser string

	// tls is the sslmode (and sslrootcert) clients use to reach the pooler.
	tls  url.Values
	stop func() error
}

// findBinary finds a pooler's program: the environment variable env, then
// PATH, then Debian's /usr/sbin (not on PATH for every user).
func findBinary(env, name string, notFound error) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/" + name); err == nil {
		return "/usr/sbin/" + name, nil
	}
	return "", notFound
}

// newPoolerDir makes the pooler's temp dir, owned by the cluster user: the
// pooler writes its sockets, pid and status files there.
func newPoolerDir(prefix string) (*cluster, error) {
	cl, err := newCluster(prefix)
	if err != nil {
		return nil, err
	}
	if err := os.Chown(cl.dir, cl.who.uid, cl.who.gid); err != nil {
		cl.cleanup()
		return nil, err
	}
	return cl, nil
}

// run starts the pooler's program in the foreground as the cluster user,
// its output in p.LogFile, and waits until the superuser can log in through
// it, which proves the whole path (authentication, TLS to the server). Like
// the postmaster it runs in its own process group and dies with us; Stop
// signals it with stopSig and waits, then runs cleanup. On error it is
// already stopped and cleaned up.
func (p *Pooler) run(ctx context.Context, s *Server, who runAs, stopSig syscall.Signal, cleanup func(), bin string, args ...string) error {
	logf, err := os.Create(p.LogFile)
	if err != nil {
		cleanup()
		return err
	}
	cmd := who.command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		cleanup()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.stop = func() error {
		_ = cmd.Process.Signal(stopSig)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		cleanup()
		return nil
	}
	err = Poll(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		return p.CanLogin(ctx, s.SuperUser, s.SuperPassword)
	})
	if err != nil {
		log, _ := os.ReadFile(p.LogFile)
		_ = p.Stop()
		return fmt.Errorf("%s not ready: %w\n%s log:\n%s", p.Name, err, p.Name, log)
	}
	return nil
}

// Stop stops the pooler and removes what it made (its directory; for
// PgBouncer its auth_user). A second call does nothing.
func (p *Pooler) Stop() error {
	if p == nil || p.stop == nil {
		return nil
	}
	stop := p.stop
	p.stop = nil
	return stop()
}

// ReadLog returns the pooler's log.
func (p *Pooler) ReadLog() (string, error) {
	out, err := os.ReadFile(p.LogFile)
	return string(out), err
}

func (p *Pooler) hostPort() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// URL is a postgres:// URL through the pooler for user and password on
// database ("" for the default).
func (p *Pooler) URL(user, password, database string) string {
	if database == "" {
		database = p.Database
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: p.hostPort(), Path: "/" + database, RawQuery: p.tls.Encode()}
	return u.String()
}

// TemplateURL is a connection_url for the plugin through the pooler, with
// {{username}} and {{password}} placeholders, on database ("" for the
// default). It carries nothing a direct URL would not (no
// default_query_exec_mode, no options): the plugin is tested as an operator
// would configure it.
func (p *Pooler) TemplateURL(database string) string {
	if database == "" {
		database = p.Database
	}
	return fmt.Sprintf("postgres://{{username}}:{{password}}@%s/%s?%s", p.hostPort(), database, p.tls.Encode())
}

// Connect opens a connection through the pooler as user with password. It
// uses the simple protocol: pgx's default, named prepared statements, does
// not survive transaction pooling in PgBouncer before 1.21, and the tests'
// own checks must not fail for that.
func (p *Pooler) Connect(ctx context.Context, user, password, database string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(p.URL(user, password, database))
	if err != nil {
		return nil, fmt.Errorf("the %s URL could not be parsed", p.Name)
	}
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cc)
}

// CanLogin reports whether user can log in through the pooler with
// password and run a query (which needs a server session as user).
func (p *Pooler) CanLogin(ctx context.Context, user, password string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := p.Connect(ctx, user, password, "")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var one int
	return c.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// errNoLocalCA says a pooler that needs the test CA was asked to front a
// server started elsewhere.
var errNoLocalCA = errors.New("the server was not started here, so there is no test CA to issue the pooler's certificate")

func randomHex() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeFiles writes name → content into dir, owned by the cluster user, 0600
// (one holds a password).
func writeFiles(who runAs, dir string, files map[string]string) error {
	for name, content := range files {
		if err := writeOwned(who, filepath.Join(dir, name), content); err != nil {
			return err
		}
	}
	return nil
}
