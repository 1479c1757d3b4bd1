package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrNoReplica says this machine cannot build a streaming replica of the
// server (a server started elsewhere); tests skip on it.
var ErrNoReplica = errors.New("cannot make a streaming replica here")

// StartReplica makes a hot standby of primary, a local cluster started by
// this package: a base backup taken with PostgreSQL's low-level backup API
// (copyBackup: it needs no pg_basebackup, which the npm server packages
// lack, so every major gets one), then a postmaster on a free loopback port
// with the same TLS, authentication and statement logging. Call Stop when
// done, before the primary's Stop (which removes the primary's files).
func StartReplica(ctx context.Context, primary *Server) (*Server, error) {
	if primary.DataDir == "" || primary.BinDir == "" {
		return nil, fmt.Errorf("%w: the primary was not started from local binaries (%s)", ErrNoReplica, primary.Source)
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
	if err := copyBackup(ctx, cl.who, primary, cl.data()); err != nil {
		return fail(err)
	}
	port, err := FreePort()
	if err != nil {
		return fail(err)
	}
	if err := configureStandby(cl, primary, port); err != nil {
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

// configureStandby makes the copy a standby of primary, as pg_basebackup -R
// would (standby.signal, primary_conninfo over TLS verified with the CA
// copied next to the data), and points the copied postgresql.conf at the
// standby's own port, socket directory and TLS files: later settings win,
// and the copy still names the primary's.
func configureStandby(cl *cluster, primary *Server, port int) error {
	// verify-ca: PostgreSQL 14's libpq does not match an IP address against
	// the certificate's IP SANs, and the chain is the test CA's either way.
	conninfo := fmt.Sprintf("host=%s port=%d user=%s password=%s sslmode=verify-ca sslrootcert=%s application_name=pgvault_replica",
		primary.Host, primary.Port, primary.SuperUser, conninfoQuote(primary.SuperPassword), filepath.Join(cl.dir, "ca.crt"))
	conf := fmt.Sprintf(`
port = %d
unix_socket_directories = '%s'
ssl_cert_file = '%s'
ssl_key_file = '%s'
ssl_ca_file = '%s'
hot_standby = on
primary_conninfo = %s
`, port, cl.dir, filepath.Join(cl.dir, "server.crt"), filepath.Join(cl.dir, "server.key"), filepath.Join(cl.dir, "ca.crt"), confQuote(conninfo))
	if err := appendFile(filepath.Join(cl.data(), "postgresql.conf"), conf); err != nil {
		return err
	}
	return writeOwned(cl.who, filepath.Join(cl.data(), "standby.signal"), "")
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

// copyBackup takes a base backup of the running primary into data with
// PostgreSQL's low-level API: in one session, start a backup (with a fast
// checkpoint), copy the data directory, stop the backup, and write the label
// it returns as backup_label. The standby streams the WAL written during the
// copy from the primary.
func copyBackup(ctx context.Context, who runAs, primary *Server, data string) error {
	conn, err := primary.Connect(ctx, primary.SuperUser, primary.SuperPassword, "")
	if err != nil {
		return fmt.Errorf("base backup: %w", err)
	}
	defer conn.Close(context.Background())
	start, stop := "SELECT pg_backup_start('pgvault_replica', true)", "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)"
	if primary.VersionNum < 150000 {
		start, stop = "SELECT pg_start_backup('pgvault_replica', true, false)", "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)"
	}
	if _, err := conn.Exec(ctx, start); err != nil {
		return fmt.Errorf("base backup: starting: %w", err)
	}
	copyErr := copyDataDir(who, primary.DataDir, data)
	var label, spcmap string
	if err := conn.QueryRow(ctx, stop).Scan(&label, &spcmap); err != nil {
		return fmt.Errorf("base backup: stopping: %w", err)
	}
	if copyErr != nil {
		return fmt.Errorf("base backup: copying %s: %w", primary.DataDir, copyErr)
	}
	return writeOwned(who, filepath.Join(data, "backup_label"), label)
}

// notCopied are what a base backup leaves out: the running postmaster's
// files, and directories whose contents only mean something to it.
var notCopied = map[string]bool{
	"postmaster.pid": true, "postmaster.opts": true,
	"pg_dynshmem/*": true, "pg_notify/*": true, "pg_serial/*": true, "pg_snapshots/*": true,
	"pg_stat_tmp/*": true, "pg_subtrans/*": true, "pg_replslot/*": true,
}

// copyDataDir copies a live data directory from src to dst, owned by who.
// Files that vanish during the copy (the server removes temporary ones) are
// skipped, as pg_basebackup does.
func copyDataDir(who runAs, src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if notCopied[rel] || notCopied[filepath.Dir(rel)+"/*"] {
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		if d.IsDir() {
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chown(target, who.uid, who.gid)
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		if err := os.WriteFile(target, b, info.Mode().Perm()); err != nil {
			return err
		}
		return os.Chown(target, who.uid, who.gid)
	})
}

// writeOwned writes a file of the cluster's, owned by who.
func writeOwned(who runAs, path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	return os.Chown(path, who.uid, who.gid)
}

// conninfoQuote quotes a value for a libpq keyword/value string.
func conninfoQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// confQuote quotes a value for postgresql.conf.
func confQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
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
