package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoReplica says this machine cannot build a streaming replica of the
// server (no pg_basebackup of the server's major, or a server started
// elsewhere); tests skip on it.
var ErrNoReplica = errors.New("cannot make a streaming replica here")

// StartReplica makes a hot standby of primary, a local cluster started by
// this package: pg_basebackup -R (standby.signal and primary_conninfo) as
// the cluster's OS user, then a postmaster on a free loopback port with the
// same TLS, authentication and statement logging. Call Stop when done,
// before the primary's Stop (which removes the primary's files).
func StartReplica(ctx context.Context, primary *Server) (*Server, error) {
	if primary.DataDir == "" || primary.BinDir == "" {
		return nil, fmt.Errorf("%w: the primary was not started from local binaries (%s)", ErrNoReplica, primary.Source)
	}
	basebackup, err := findBasebackup(primary)
	if err != nil {
		return nil, err
	}
	cl, err := newCluster("pgvault-replica-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		cl.cleanup()
		return nil, err
	}
	// The replica gets its own copy of the TLS files: the primary's
	// directory goes away when the primary is stopped.
	if err := copyTLS(filepath.Dir(primary.DataDir), cl.dir); err != nil {
		return fail(err)
	}
	if err := chownTLS(cl.who, cl.dir); err != nil {
		return fail(err)
	}
	if err := baseBackup(ctx, cl.who, basebackup, primary, cl.data()); err != nil {
		return fail(err)
	}
	port, err := FreePort()
	if err != nil {
		return fail(err)
	}
	if err := configureStandby(cl, port); err != nil {
		return fail(err)
	}
	s := &Server{Host: primary.Host, Port: port, SuperUser: primary.SuperUser, SuperPassword: primary.SuperPassword,
		Database: primary.Database, SSLMode: primary.SSLMode, CAPEM: primary.CAPEM, CAFile: filepath.Join(cl.dir, "ca.crt"),
		Source: fmt.Sprintf("standby of %s:%d, local %s", primary.Host, primary.Port, primary.BinDir),
		BinDir: primary.BinDir, ca: primary.ca}
	if err := cl.run(ctx, s, primary.BinDir); err != nil {
		return fail(fmt.Errorf("standby: %w", err))
	}
	if err := s.readVersion(ctx); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("standby: reading the version: %w", err)
	}
	return s, nil
}

// configureStandby points the copied postgresql.conf at the standby's own
// port, socket directory and TLS files: later settings win, and the copy
// still names the primary's.
func configureStandby(cl *cluster, port int) error {
	conf := fmt.Sprintf(`
port = %d
unix_socket_directories = '%s'
ssl_cert_file = '%s'
ssl_key_file = '%s'
ssl_ca_file = '%s'
hot_standby = on
`, port, cl.dir, filepath.Join(cl.dir, "server.crt"), filepath.Join(cl.dir, "server.key"), filepath.Join(cl.dir, "ca.crt"))
	return appendFile(filepath.Join(cl.data(), "postgresql.conf"), conf)
}

// copyTLS copies the server's TLS files from src into dir.
func copyTLS(src, dir string) error {
	for _, name := range []string{"ca.crt", "server.crt", "server.key"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if name == "server.key" {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			return err
		}
	}
	return nil
}

// baseBackup runs pg_basebackup -R from primary into data, as the cluster
// user, over TLS verified with the CA copied next to data.
func baseBackup(ctx context.Context, who runAs, basebackup string, primary *Server, data string) error {
	dir := filepath.Dir(data)
	conninfo := fmt.Sprintf("host=%s port=%d user=%s password=%s sslmode=%s sslrootcert=%s application_name=pgvault_replica",
		primary.Host, primary.Port, primary.SuperUser, conninfoQuote(primary.SuperPassword), primary.SSLMode, filepath.Join(dir, "ca.crt"))
	var out bytes.Buffer
	bb := who.command(ctx, basebackup, "-D", data, "-R", "-X", "stream", "-c", "fast", "--no-sync", "-d", conninfo)
	bb.Stdout, bb.Stderr = &out, &out
	// libpq reads ~/.postgresql for client certificates; the test's HOME
	// (root's) is not readable by the cluster user.
	bb.Env = append(bb.Env, "HOME="+dir)
	if err := bb.Run(); err != nil {
		return fmt.Errorf("pg_basebackup from %s:%d: %v: %s", primary.Host, primary.Port, err, out.String())
	}
	return nil
}

// findBasebackup returns a pg_basebackup of the primary's major version:
// the one next to the server binaries, else Debian's (pg_config --bindir).
// A pg_basebackup refuses servers of a newer major, and the backup must be
// run by the server binaries it was taken for.
func findBasebackup(primary *Server) (string, error) {
	dirs := []string{primary.BinDir}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	want := primary.VersionNum / 10000
	var found []string
	for _, dir := range dirs {
		path := filepath.Join(dir, "pg_basebackup")
		if _, err := os.Stat(path); err != nil {
			continue
		}
		major, err := toolMajor(path)
		if err != nil {
			return "", err
		}
		if major == want {
			return path, nil
		}
		found = append(found, fmt.Sprintf("%s is PostgreSQL %d", path, major))
	}
	if len(found) == 0 {
		return "", fmt.Errorf("%w: no pg_basebackup in %s (the npm server binaries ship none; install Debian's postgresql-%d)", ErrNoReplica, strings.Join(dirs, " or "), want)
	}
	return "", fmt.Errorf("%w: the server is PostgreSQL %d but %s", ErrNoReplica, want, strings.Join(found, ", "))
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// toolMajor reads the major version from `tool --version`.
func toolMajor(path string) (int, error) {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", path, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version printed no version: %q", path, out)
	}
	return strconv.Atoi(string(m[1]))
}

// conninfoQuote quotes a value for a libpq keyword/value string.
func conninfoQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// runPostmaster starts postgres on data as the cluster user. The postmaster
// runs as our child (not daemonized by pg_ctl) in its own process group and
// dies with us, so a test binary that panics or times out leaves no server
// behind. stop shuts it down fast and waits for it.
func runPostmaster(who runAs, bin, data, logFile string) (pid int, exited <-chan struct{}, stop func() error, err error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return 0, nil, nil, err
	}
	cmd := who.command(context.Background(), filepath.Join(bin, "postgres"), "-D", data)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The standby's WAL receiver is a libpq client, which reads ~/.postgresql.
	cmd.Env = append(cmd.Env, "HOME="+filepath.Dir(data))
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, nil, nil, fmt.Errorf("starting postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		return nil
	}
	return cmd.Process.Pid, done, stop, nil
}

// Crash stops a local server the way a crash or a pulled plug does: an
// immediate shutdown (SIGQUIT to the postmaster: no checkpoint, clients cut
// off), and waits until the postmaster has exited. Stop still cleans up.
func (s *Server) Crash() error {
	if s.PID == 0 || s.exited == nil {
		return fmt.Errorf("server %s was not started here: it cannot be crashed", s.Source)
	}
	if err := syscall.Kill(s.PID, syscall.SIGQUIT); err != nil {
		return fmt.Errorf("signalling postmaster %d: %w", s.PID, err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.PID, syscall.SIGKILL)
		<-s.exited
		return nil
	}
}
