// Package vaulttest runs real Vault servers (dev mode, or a Raft cluster)
// with this plugin registered, for the end-to-end tests, the demo and the
// benchmark; NewSandbox starts everything they share, and StartRegistered
// is the dev server with the plugin registered and mounted that each starts.
package vaulttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	"github.com/pgvault/vault-plugin-database-postgres/internal/release"
)

// PluginName is the name the plugin is registered under.
const PluginName = "vault-plugin-database-postgres"

// VaultVersion is the Vault the Makefile builds into .cache/vault.
const VaultVersion = "1.21.0"

// CreateRole is the creation statement the tests, demo and benchmark give
// their roles: a login role whose validity follows the lease.
const CreateRole = `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`

// RepoRoot finds the module root from this source file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FindVault returns the Vault binary: VAULT_BIN, then the one `make vault`
// builds, then a vault on PATH.
func FindVault() (string, error) {
	if b := os.Getenv("VAULT_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("VAULT_BIN=%s: %w", b, err)
		}
		return b, nil
	}
	built := filepath.Join(RepoRoot(), ".cache", "vault", "vault-"+VaultVersion)
	if _, err := os.Stat(built); err == nil {
		return built, nil
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	return "", errors.New("no Vault binary: run `make vault` (builds Vault " + VaultVersion + " into .cache/vault), set VAULT_BIN, or put vault on PATH")
}

// Plugin is a built plugin binary.
type Plugin struct {
	Path    string
	SHA256  string
	Version string
	// Env is set for the plugin process at registration (vault plugin register -env).
	Env []string
}

// BuildPlugin builds the plugin into dir with the given version; extra
// flags go to `go build` (the end-to-end tests add -race, so a data race
// in the plugin under Vault's real concurrent load kills it loudly).
func BuildPlugin(ctx context.Context, dir, version string, extra ...string) (*Plugin, error) {
	out := filepath.Join(dir, PluginName)
	args := append([]string{"build", "-o", out,
		"-ldflags", "-X github.com/pgvault/vault-plugin-database-postgres.Version=" + version}, extra...)
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/"+PluginName)...)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building plugin: %v: %s", err, b)
	}
	sum, err := release.FileSHA256(out)
	if err != nil {
		return nil, err
	}
	return &Plugin{Path: out, SHA256: sum, Version: version}, nil
}

// Server is one running Vault process.
type Server struct {
	Addr      string
	Client    *api.Client
	PluginDir string
	LogFile   string
	// Lingering counts the plugin processes Stop found still running after
	// Vault had exited and a grace period had passed, and killed. Vault ends
	// its plugins on shutdown, and a plugin exits by itself when Vault is
	// killed, so anything above zero is a leak for a test to report.
	Lingering int
	cmd       *exec.Cmd
	done      chan struct{}
}

// pluginGrace is how long Stop lets this server's plugins exit by
// themselves once Vault is gone (they check their parent twice a second).
const pluginGrace = 10 * time.Second

// Stop kills the server and waits for it and its plugins to exit; plugin
// processes still running after pluginGrace are killed and counted in
// Lingering, so no test leaves one behind.
func (s *Server) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	}
	s.Lingering += reapPlugins(s.PluginDir, pluginGrace)
}

// reapPlugins waits up to grace for the plugin processes under pluginDir
// to exit, then kills those left and returns how many it killed.
func reapPlugins(pluginDir string, grace time.Duration) int {
	if pluginDir == "" {
		return 0
	}
	deadline := time.Now().Add(grace)
	for len(pluginPIDs(pluginDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	left := pluginPIDs(pluginDir)
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(left)
}

// Running reports whether the process is still up.
func (s *Server) Running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// LogTail returns the end of the server log, for failure messages.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.LogFile)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// StartDev starts `vault server -dev` on a free loopback port, with the
// plugin copied into its plugin directory, logging at debug. dir must exist.
func StartDev(ctx context.Context, vaultBin, dir string, plugin *Plugin) (*Server, error) {
	return StartDevLogLevel(ctx, vaultBin, dir, plugin, "debug")
}

// StartDevLogLevel is StartDev with Vault's -log-level (trace, debug, info…).
func StartDevLogLevel(ctx context.Context, vaultBin, dir string, plugin *Plugin, level string) (*Server, error) {
	port, err := pgtest.FreePort()
	if err != nil {
		return nil, err
	}
	pluginDir := filepath.Join(dir, "plugins")
	if err := installPlugin(pluginDir, plugin); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("plugin_directory = %q\ndisable_mlock = true\n", pluginDir)), 0o600); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{Addr: "http://" + addr, PluginDir: pluginDir, LogFile: filepath.Join(dir, "vault.log")}
	if err := s.start(vaultBin, "root", "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address="+addr,
		"-dev-no-store-token", "-config="+cfg, "-log-level="+level); err != nil {
		return nil, err
	}
	if err := s.waitActive(ctx, 60*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\n%s", err, s.LogTail())
	}
	return s, nil
}

// StartRegistered is StartDevLogLevel followed by RegisterAndMount: a dev
// server ready for a connection to be configured at database/. On error the
// server is already stopped, and the error carries the end of its log.
func StartRegistered(ctx context.Context, vaultBin, dir string, plugin *Plugin, level string) (*Server, error) {
	s, err := StartDevLogLevel(ctx, vaultBin, dir, plugin, level)
	if err != nil {
		return nil, err
	}
	if err := RegisterAndMount(s.Client, plugin); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\n%s", err, s.LogTail())
	}
	return s, nil
}

func installPlugin(pluginDir string, plugin *Plugin) error {
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return err
	}
	b, err := os.ReadFile(plugin.Path)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(pluginDir, PluginName), b, 0o755)
}

// start runs vault with args, logging to s.LogFile, and gives s a client
// for its address that uses token (which may be set later).
func (s *Server) start(vaultBin, token string, args ...string) error {
	c, err := newClient(s.Addr, token)
	if err != nil {
		return err
	}
	s.Client = c
	logf, err := os.Create(s.LogFile)
	if err != nil {
		return err
	}
	cmd := exec.Command(vaultBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "VAULT_ADDR=", "VAULT_TOKEN=", "VAULT_DEV_ROOT_TOKEN_ID=")
	// Own process group, so a kill also reaches plugin processes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting vault: %w", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return nil
}

func newClient(addr, token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = 60 * time.Second
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	return c, nil
}

// waitActive polls sys/health until this node is an unsealed active node.
func (s *Server) waitActive(ctx context.Context, timeout time.Duration) error {
	exited := false
	err := pgtest.Poll(ctx, timeout, 150*time.Millisecond, func() error {
		if !s.Running() {
			exited = true // stop polling: it will not come up
			return nil
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("sys/health answered %d", resp.StatusCode)
		}
		return nil
	})
	switch {
	case exited:
		return errors.New("vault exited during startup")
	case err != nil:
		return fmt.Errorf("vault at %s not active after %s: %w", s.Addr, timeout, err)
	}
	return nil
}

// pollInterval is how often the cluster helpers ask Vault again.
const pollInterval = 250 * time.Millisecond

// Register registers the plugin in the catalog with its sha256 and version.
func Register(c *api.Client, p *Plugin) error {
	return c.Sys().RegisterPlugin(&api.RegisterPluginInput{
		Name:    PluginName,
		Type:    api.PluginTypeDatabase,
		Command: PluginName,
		SHA256:  p.SHA256,
		Version: p.Version,
		Env:     p.Env,
	})
}

// RegisterAndMount registers the plugin and enables the database secrets
// engine at database/, on a dev server or a cluster's leader.
func RegisterAndMount(c *api.Client, p *Plugin) error {
	if err := Register(c, p); err != nil {
		return fmt.Errorf("registering the plugin: %w", err)
	}
	if err := EnableDatabase(c, "database"); err != nil {
		return fmt.Errorf("enabling the database secrets engine at database/: %w", err)
	}
	return nil
}

// EnableDatabase mounts the database secrets engine at path.
func EnableDatabase(c *api.Client, path string) error {
	return c.Sys().Mount(path, &api.MountInput{Type: "database"})
}

// Configure writes a connection for the plugin.
func Configure(c *api.Client, mount, name string, p *Plugin, data map[string]interface{}) error {
	body := map[string]interface{}{
		"plugin_name":       PluginName,
		"plugin_version":    p.Version,
		"allowed_roles":     "*",
		"verify_connection": true,
	}
	for k, v := range data {
		body[k] = v
	}
	_, err := c.Logical().Write(mount+"/config/"+name, body)
	return err
}

// CountPluginProcesses counts running processes of the plugin binary under
// pluginDir.
func CountPluginProcesses(pluginDir string) int {
	return len(pluginPIDs(pluginDir))
}

// pluginPIDs lists the running processes of the plugin binary under
// pluginDir (zombies excluded: they hold nothing).
func pluginPIDs(pluginDir string) []int {
	want := filepath.Join(pluginDir, PluginName)
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		if strings.TrimSuffix(exe, " (deleted)") == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Output runs the vault CLI against s and returns its output.
func (s *Server) Output(ctx context.Context, vaultBin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, vaultBin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.Addr, "VAULT_TOKEN="+s.Client.Token())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
