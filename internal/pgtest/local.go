package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BinDir finds the PostgreSQL server binaries: PG_BINDIR when set (how
// `make test-matrix` picks a major version), else pg_config --bindir, else
// the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		for _, name := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return "", fmt.Errorf("PG_BINDIR=%s holds no %s: point it at a PostgreSQL bin directory (scripts/pgdist MAJOR prints one)", dir, name)
			}
		}
		return dir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", errors.New("initdb not found (PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin)")
}

// runAs describes the OS user the cluster runs as: initdb refuses root.
type runAs struct {
	cred     *syscall.Credential
	uid, gid int
}

func clusterUser() (runAs, error) {
	if os.Geteuid() != 0 {
		return runAs{uid: os.Getuid(), gid: os.Getgid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return runAs{}, errors.New("running as root and there is no postgres OS user to run the cluster as")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return runAs{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid: uid, gid: gid}, nil
}

func (r runAs) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "LANG=C.UTF-8")
	return cmd
}

// startLocal starts a throwaway cluster in a temp dir owned by the cluster
// user: SCRAM everywhere (so a wrong password fails), TLS from a fresh CA,
// every statement logged (so tests can prove no plaintext password reaches
// the server), on a free loopback port.
func startLocal(ctx context.Context) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cl, err := newCluster("pgvault-pg-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		cl.cleanup()
		return nil, err
	}
	ca, signer, err := writeCerts(cl.dir)
	if err != nil {
		return fail(err)
	}
	if err := chownTLS(cl.who, cl.dir); err != nil {
		return fail(err)
	}
	password := randomPassword()
	if err := initCluster(ctx, cl.who, bin, cl.data(), password); err != nil {
		return fail(err)
	}
	port, err := FreePort()
	if err != nil {
		return fail(err)
	}
	if err := configureCluster(cl.who, cl.dir, cl.data(), port); err != nil {
		return fail(err)
	}
	s := &Server{Host: "127.0.0.1", Port: port, SuperUser: "postgres", SuperPassword: password, Database: "postgres",
		SSLMode: "verify-full", CAPEM: string(ca), CAFile: filepath.Join(cl.dir, "ca.crt"), ca: signer,
		Source: "local " + bin, BinDir: bin}
	if err := cl.run(ctx, s, bin); err != nil {
		return fail(err)
	}
	if err := s.hardenPublic(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// hardenPublic takes CREATE on schema public from PUBLIC in postgres and
// template1 (so in every database a test makes), as PostgreSQL advises since
// CVE-2018-1058 and does by default from 15: the plugin runs a role's
// statements with a search_path that leaves out schemas others may create
// in, and the tests' statements name tables in public unqualified, as an
// operator who followed that advice may.
func (s *Server) hardenPublic(ctx context.Context) error {
	for _, db := range []string{"postgres", "template1"} {
		c, err := s.Connect(ctx, s.SuperUser, s.SuperPassword, db)
		if err != nil {
			return err
		}
		_, err = c.Exec(ctx, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
		_ = c.Close(ctx)
		if err != nil {
			return fmt.Errorf("revoking CREATE on schema public from PUBLIC in %s: %w", db, err)
		}
	}
	return nil
}

// cluster is a local cluster being made: the OS user it runs as and its
// directory, which holds the TLS files, data/ and server.log.
type cluster struct {
	who     runAs
	dir     string
	cleanup func() // removes dir
}

// newCluster makes a temp dir (named by prefix) the cluster user can enter.
func newCluster(prefix string) (*cluster, error) {
	who, err := clusterUser()
	if err != nil {
		return nil, err
	}
	dir, cleanup, err := clusterDir(prefix)
	if err != nil {
		return nil, err
	}
	return &cluster{who: who, dir: dir, cleanup: cleanup}, nil
}

func (cl *cluster) data() string { return filepath.Join(cl.dir, "data") }

// run starts the postmaster from bin on the cluster's data directory,
// completes s with the process, its log and a Stop that also removes the
// directory, and waits until the server answers. On error the postmaster
// is stopped; the directory is the caller's to remove.
func (cl *cluster) run(ctx context.Context, s *Server, bin string) error {
	s.DataDir, s.LogFile = cl.data(), filepath.Join(cl.dir, "server.log")
	pid, exited, stop, err := runPostmaster(cl.who, bin, s.DataDir, s.LogFile)
	if err != nil {
		return err
	}
	s.PID, s.exited = pid, exited
	s.stop = func() error {
		err := stop()
		cl.cleanup()
		return err
	}
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		log, _ := os.ReadFile(s.LogFile)
		_ = stop()
		return fmt.Errorf("%w\nserver log:\n%s", err, log)
	}
	return nil
}

// clusterDir makes a temp dir the cluster user can enter, and its cleanup.
func clusterDir(prefix string) (string, func(), error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	return dir, cleanup, nil
}

// chownTLS gives dir and the TLS files in it to the cluster user.
func chownTLS(who runAs, dir string) error {
	for _, f := range []string{dir, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")} {
		if err := os.Chown(f, who.uid, who.gid); err != nil {
			return err
		}
	}
	return nil
}

// initCluster runs initdb on data as the cluster user, with SCRAM and the
// superuser postgres whose password is password.
func initCluster(ctx context.Context, who runAs, bin, data, password string) error {
	pwfile := filepath.Join(filepath.Dir(data), "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if err := os.Chown(pwfile, who.uid, who.gid); err != nil {
		return err
	}
	var out bytes.Buffer
	initdb := who.command(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=scram-sha-256",
		"--pwfile="+pwfile, "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.Stdout, initdb.Stderr = &out, &out
	if err := initdb.Run(); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out.String())
	}
	return nil
}

// configureCluster writes the settings and pg_hba.conf of a fresh cluster:
// loopback on port, TLS from the files in dir, speed over durability, every
// statement logged, and prepared transactions allowed (revocation tests
// leave some behind for the plugin to roll back).
func configureCluster(who runAs, dir, data string, port int) error {
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 300
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = '%s'
ssl_key_file = '%s'
ssl_ca_file = '%s'
fsync = off
synchronous_commit = off
full_page_writes = off
log_statement = 'all'
log_min_messages = warning
log_line_prefix = '%%m [%%p] %%u@%%d '
max_prepared_transactions = 10
`, port, dir, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt"))
	if err := appendFile(filepath.Join(data, "postgresql.conf"), conf); err != nil {
		return err
	}
	// CertUser may only log in with a client certificate from the test CA.
	// Members of CertGroup log in with a client certificate (certauth.go).
	hba := "hostssl all " + CertUser + " 127.0.0.1/32 cert\nhost all " + CertUser + " 127.0.0.1/32 reject\n" +
		"hostssl all +" + CertGroup + " 127.0.0.1/32 cert\n" +
		"local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n" +
		"host replication postgres 127.0.0.1/32 scram-sha-256\n" // StartReplica's standby
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return err
	}
	_ = os.Chown(filepath.Join(data, "pg_hba.conf"), who.uid, who.gid)
	return nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeCerts writes a CA and a server certificate for 127.0.0.1/localhost
// into dir and returns the CA's PEM.
func writeCerts(dir string) ([]byte, *testCA, error) {
	ca, caPEM, err := newTestCA("pgvault test CA")
	if err != nil {
		return nil, nil, err
	}
	srvPEM, keyPEM, err := ca.serverCert(2)
	if err != nil {
		return nil, nil, err
	}
	files := map[string]string{"ca.crt": caPEM, "server.crt": srvPEM, "server.key": keyPEM}
	for name, b := range files {
		mode := os.FileMode(0o644)
		if name == "server.key" {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b), mode); err != nil {
			return nil, nil, err
		}
	}
	return []byte(caPEM), ca, nil
}

// serverCert issues a server certificate for 127.0.0.1, ::1 and localhost
// (the test server's, and a pooler's in front of it), valid for two days.
func (c *testCA) serverCert(serial int64) (certPEM, keyPEM string, err error) {
	return c.sign(&x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, "ec")
}

// randomPassword returns a password with characters that break naive URL
// and SQL handling, so the harness exercises escaping on every run.
func randomPassword() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "Pw@/#{}%?&'" + hex.EncodeToString(b)
}

// CertUser is the role a local cluster admits only with a client certificate
// (pg_hba "cert"); tests create it and get its certificate from ClientCert.
const CertUser = "pgvault_certuser"

// ClientCert issues a client certificate and key (PEM) for user, signed by
// the server's test CA. Only a local cluster has one.
func (s *Server) ClientCert(user string) (certPEM, keyPEM string, err error) {
	ca, err := s.ClientCA()
	if err != nil {
		return "", "", err
	}
	return ca.Issue(user, "ec")
}
