package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"syscall"
)

// ErrNoPgpool says pgpool-II cannot run here; tests skip on it.
var ErrNoPgpool = errors.New("pgpool-II cannot run here")

// StartPgpool starts pgpool-II in front of s, a local cluster: raw mode
// with s as its one backend, so it pools sessions (connection_cache) and
// routes nothing elsewhere. pgpool-II cannot pass SCRAM through: to log in
// to the server as a role it needs that role's password, and dynamic users
// are in no pool_passwd file. With allow_clear_text_frontend_auth it asks
// the client for the password in cleartext, so clients must reach it over
// TLS they verify (its certificate is issued by s's test CA), as the
// plugin's cleartext guard demands. Call Stop when done.
func StartPgpool(ctx context.Context, s *Server) (*Pooler, error) {
	bin, err := findBinary("PGPOOL", "pgpool", fmt.Errorf("%w: pgpool not found (PGPOOL, PATH, /usr/sbin/pgpool; on Debian: apt-get install pgpool2)", ErrNoPgpool))
	if err != nil {
		return nil, err
	}
	if s.ca == nil {
		return nil, fmt.Errorf("%w: %w", ErrNoPgpool, errNoLocalCA)
	}
	certPEM, keyPEM, err := s.ca.serverCert(3)
	if err != nil {
		return nil, err
	}
	cl, err := newPoolerDir("pgvault-pgpool-")
	if err != nil {
		return nil, err
	}
	p := &Pooler{Name: "pgpool", Host: "127.0.0.1", PoolMode: "session", Database: s.Database,
		LogFile: filepath.Join(cl.dir, "pgpool.log"), ConfigFile: filepath.Join(cl.dir, "pgpool.conf"),
		tls: url.Values{"sslmode": {"verify-full"}, "sslrootcert": {s.CAFile}}}
	pcpPort, err := FreePort()
	if err == nil {
		p.Port, err = FreePort()
	}
	if err == nil {
		err = writeFiles(cl.who, cl.dir, map[string]string{
			"pgpool.conf": pgpoolConfig(p, cl.dir, s, pcpPort), "pcp.conf": "", "pool_hba.conf": "",
			"server.crt": certPEM, "server.key": keyPEM,
		})
	}
	if err != nil {
		cl.cleanup()
		return nil, err
	}
	// -n: stay in the foreground; SIGINT is its fast shutdown.
	err = p.run(ctx, s, cl.who, syscall.SIGINT, cl.cleanup, bin, "-n", "-f", p.ConfigFile,
		"-F", filepath.Join(cl.dir, "pcp.conf"), "-a", filepath.Join(cl.dir, "pool_hba.conf"))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// pgpoolConfig is pgpool.conf for p in dir, in front of s. Everything it
// writes (sockets, pid, status) stays in dir; PCP listens on no TCP port.
// With ssl on, pgpool-II also encrypts its connections to the server, but it
// does not verify the server's certificate.
func pgpoolConfig(p *Pooler, dir string, s *Server, pcpPort int) string {
	return fmt.Sprintf(`backend_clustering_mode = 'raw'
listen_addresses = '%[1]s'
port = %[2]d
socket_dir = '%[3]s'
pcp_listen_addresses = ''
pcp_port = %[4]d
pcp_socket_dir = '%[3]s'
wd_ipc_socket_dir = '%[3]s'
pid_file_name = '%[3]s/pgpool.pid'
logdir = '%[3]s'
backend_hostname0 = '%[5]s'
backend_port0 = %[6]d
backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'
num_init_children = 8
enable_pool_hba = off
pool_passwd = ''
allow_clear_text_frontend_auth = on
ssl = on
ssl_cert = '%[3]s/server.crt'
ssl_key = '%[3]s/server.key'
failover_on_backend_error = off
`, p.Host, p.Port, dir, pcpPort, s.Host, s.Port)
}
