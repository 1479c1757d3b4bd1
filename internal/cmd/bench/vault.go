package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// bench holds what the parts through Vault share.
type bench struct {
	pg        *pgtest.Server
	v         *vaulttest.Server
	c         *api.Client
	plugin    *vaulttest.Plugin
	pluginBin string // the copy Vault runs
	directURL string
	proxyURL  string
	rawURL    map[string]string // path → superuser URL
	pprofAddr string
	poolSize  int
}

// newClient is a Vault client whose transport keeps enough idle
// connections for the highest concurrency; the default keeps 3 and would
// measure TCP handshakes.
func newClient(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = 120 * time.Second
	cfg.MaxRetries = 0
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 256
		t.MaxIdleConns = 256
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken("root")
	return c, nil
}

// target is one way Vault issues a credential.
type target struct {
	variant string // "built-in", "plugin, password", "plugin, auto"
	path    string // "direct" or "1 ms"
}

var vaultVariants = []string{"built-in", "plugin, password", "plugin, auto"}

// roleName names the connection and role of a target; prefix tells parts
// apart (their leases are revoked by prefix).
func (t target) roleName(prefix string) string {
	v := map[string]string{"built-in": "builtin", "plugin, password": "ours-pw", "plugin, auto": "ours-auto"}[t.variant]
	p := map[string]string{"direct": "direct", "1 ms": "proxy"}[t.path]
	return prefix + "-" + v + "-" + p
}

// configure writes a connection and a role for t under name on mount.
func (b *bench) configure(mount, name string, t target) error {
	url := b.directURL
	if t.path == "1 ms" {
		url = b.proxyURL
	}
	cfg := map[string]interface{}{
		"allowed_roles": "*", "verify_connection": true, "connection_url": url,
		"username": b.pg.SuperUser, "password": b.pg.SuperPassword,
		"max_open_connections": b.poolSize,
	}
	switch t.variant {
	case "built-in":
		cfg["plugin_name"] = "postgresql-database-plugin"
	default:
		cfg["plugin_name"] = vaulttest.PluginName
		cfg["plugin_version"] = b.plugin.Version
		cfg["password_authentication"] = strings.TrimPrefix(t.variant, "plugin, ")
	}
	if _, err := b.c.Logical().Write(mount+"/config/"+name, cfg); err != nil {
		return fmt.Errorf("configuring %s: %w", name, err)
	}
	if _, err := b.c.Logical().Write(mount+"/roles/"+name, map[string]interface{}{
		"db_name": name, "default_ttl": "1h", "max_ttl": "24h",
		"creation_statements": creationStatements,
	}); err != nil {
		return fmt.Errorf("writing role %s: %w", name, err)
	}
	return nil
}

// issue reads one credential and returns its username.
func (b *bench) issue(ctx context.Context, mount, role string) (string, error) {
	s, err := b.c.Logical().ReadWithContext(ctx, mount+"/creds/"+role)
	if err != nil {
		return "", err
	}
	if s == nil || s.Data["username"] == nil {
		return "", fmt.Errorf("%s/creds/%s returned no username", mount, role)
	}
	return s.Data["username"].(string), nil
}

// cpuUse is CPU time spent per process group during a cell.
type cpuUse struct{ vault, plugin, postgres, bench time.Duration }

func (u *cpuUse) add(o cpuUse) {
	u.vault += o.vault
	u.plugin += o.plugin
	u.postgres += o.postgres
	u.bench += o.bench
}

// cpuNow reads the CPU time of Vault, the plugin processes, the
// PostgreSQL server and this program.
func (b *bench) cpuNow() cpuUse {
	var u cpuUse
	vaultPID := 0
	for _, pid := range pluginPIDs(b.pluginBin) {
		if info, ok := readProc(pid); ok {
			u.plugin += info.cpu
			vaultPID = info.ppid
		}
	}
	if vaultPID != 0 {
		if info, ok := readProc(vaultPID); ok {
			u.vault = info.cpu // the plugin, a live child, is not in it
		}
	}
	u.postgres = treeCPU(b.pg.PID)
	if info, ok := readProc(os.Getpid()); ok {
		u.bench = info.cpu
	}
	return u
}

func (u cpuUse) minus(o cpuUse) cpuUse {
	return cpuUse{u.vault - o.vault, u.plugin - o.plugin, u.postgres - o.postgres, u.bench - o.bench}
}

// vaultResult holds part 2: cells and CPU use by key(variant, path, conc).
type vaultResult struct {
	variants []string
	paths    []string
	conc     []int
	cells    map[string]*cell
	cpu      map[string]*cpuUse
}

// throughVault measures issuing credentials through Vault for each
// variant, path and concurrency, interleaved round by round, and raw pgx
// running the same SQL on a pool of the same size.
func (b *bench) throughVault(ctx context.Context, counts map[int]int, nRounds int) (*vaultResult, error) {
	paths := []string{"direct", "1 ms"}
	res := &vaultResult{variants: append([]string{"raw pgx"}, vaultVariants...), paths: paths,
		conc: sortedKeys(counts), cells: map[string]*cell{}, cpu: map[string]*cpuUse{}}
	rawPools := map[string]*pgxpool.Pool{}
	defer func() {
		for _, p := range rawPools {
			p.Close()
		}
	}()
	ops := map[string]func(ctx context.Context, i int) error{}
	for _, path := range paths {
		cfg, err := pgxpool.ParseConfig(b.rawURL[path])
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = int32(b.poolSize)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		rawPools[path] = pool
		ops[key("raw pgx", path)] = func(ctx context.Context, _ int) error {
			name := fmt.Sprintf("v-rawv-%s-%d", randHex(10), time.Now().Unix())
			_, err := pool.Exec(ctx, rawCreate(name, password(), time.Now().Add(time.Hour)))
			return err
		}
		for _, v := range vaultVariants {
			t := target{v, path}
			role := t.roleName("iss")
			if err := b.configure("database", role, t); err != nil {
				return nil, err
			}
			ops[key(v, path)] = func(ctx context.Context, _ int) error {
				_, err := b.issue(ctx, "database", role)
				return err
			}
		}
		// Warm every pool (and Vault's plugin instances) untimed.
		for _, v := range res.variants {
			if _, err := runLoad(ctx, 2*b.poolSize, b.poolSize, ops[key(v, path)]); err != nil {
				return nil, fmt.Errorf("warming %s %s: %w", v, path, err)
			}
		}
	}
	for _, path := range paths {
		for _, conc := range res.conc {
			for r, n := range rounds(counts[conc], nRounds) {
				for _, v := range rotate(res.variants, r) {
					before := b.cpuNow()
					c, err := runLoad(ctx, n, conc, ops[key(v, path)])
					if err != nil {
						return nil, fmt.Errorf("%s, %s, concurrency %d: %w", v, path, conc, err)
					}
					used := b.cpuNow().minus(before)
					k := key(v, path, conc)
					if res.cells[k] == nil {
						res.cells[k], res.cpu[k] = &cell{}, &cpuUse{}
					}
					res.cells[k].add(c)
					res.cpu[k].add(used)
				}
			}
			for _, v := range res.variants {
				c := res.cells[key(v, path, conc)]
				fmt.Printf("  via Vault   %-6s c%-3d %-18s %6.0f/s p50 %s ms p99 %s ms\n", path, conc, v, c.rate(), ms(c.pct(0.5)), ms(c.pct(0.99)))
			}
		}
	}
	return res, nil
}

// revokeResult is part 3 by key(variant, path).
type revokeResult struct {
	n     int
	cells map[string]*cell
}

// revocation issues n leases per variant and path and times `vault lease
// revoke -prefix -sync` of them (sys/leases/revoke-prefix is synchronous
// by default), in nRounds rounds that alternate the variants.
func (b *bench) revocation(ctx context.Context, n, nRounds int) (*revokeResult, error) {
	res := &revokeResult{n: n, cells: map[string]*cell{}}
	admin, err := b.pg.Pool(ctx)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	variants := []string{"built-in", "plugin, auto"}
	for _, path := range []string{"direct", "1 ms"} {
		for _, v := range variants {
			if err := b.configure("database", target{v, path}.roleName("rv"), target{v, path}); err != nil {
				return nil, err
			}
		}
		for r, k := range rounds(n, nRounds) {
			for _, v := range rotate(variants, r) {
				role := target{v, path}.roleName("rv")
				users := make([]string, k)
				if _, err := runLoad(ctx, k, 16, func(ctx context.Context, i int) (err error) {
					users[i], err = b.issue(ctx, "database", role)
					return err
				}); err != nil {
					return nil, fmt.Errorf("issuing leases for %s: %w", role, err)
				}
				start := time.Now()
				if err := b.c.Sys().RevokePrefixWithContext(ctx, "database/creds/"+role+"/"); err != nil {
					return nil, fmt.Errorf("revoke-prefix %s: %w", role, err)
				}
				took := time.Since(start)
				var left int
				if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", users).Scan(&left); err != nil {
					return nil, err
				}
				if left != 0 {
					return nil, fmt.Errorf("%s: %d of %d roles left after revoke-prefix", role, left, k)
				}
				kk := key(v, path)
				if res.cells[kk] == nil {
					res.cells[kk] = &cell{}
				}
				res.cells[kk].add(cell{n: k, wall: took})
			}
		}
		for _, v := range variants {
			c := res.cells[key(v, path)]
			fmt.Printf("  revocation  %-6s %-18s %d leases in %6.2fs: %6.0f/s\n", path, v, c.n, c.wall.Seconds(), c.rate())
		}
	}
	return res, nil
}

// memResult is part 4.
type memResult struct {
	procs1, procs20     int
	rss1, rss20, peak20 int64 // KiB
	rssEnd, peakEnd     int64
}

func (b *bench) pluginRSS() (rss, peak int64, procs int) {
	for _, pid := range pluginPIDs(b.pluginBin) {
		r, p := rssKiB(pid)
		rss += r
		peak += p
		procs++
	}
	return
}

// memory reads the plugin's RSS serving one mount, then twenty: each with
// a connection of its own that has issued a credential (so its pool is
// open). The extra mounts are removed afterwards.
func (b *bench) memory(ctx context.Context) (*memResult, error) {
	res := &memResult{}
	t := target{"plugin, auto", "direct"}
	for i := 1; i <= 20; i++ {
		mount := fmt.Sprintf("mem%02d", i)
		if err := vaulttest.EnableDatabase(b.c, mount); err != nil {
			return nil, err
		}
		if err := b.configure(mount, "m", t); err != nil {
			return nil, err
		}
		if _, err := b.issue(ctx, mount, "m"); err != nil {
			return nil, err
		}
		if i == 1 {
			time.Sleep(time.Second) // let the first allocations settle
			res.rss1, _, res.procs1 = b.pluginRSS()
		}
	}
	time.Sleep(time.Second)
	res.rss20, res.peak20, res.procs20 = b.pluginRSS()
	for i := 1; i <= 20; i++ {
		if err := b.c.Sys().Unmount(fmt.Sprintf("mem%02d", i)); err != nil {
			return nil, err
		}
	}
	fmt.Printf("  memory      plugin RSS %.1f MiB with 1 mount, %.1f MiB with 20 (%d process)\n", float64(res.rss1)/1024, float64(res.rss20)/1024, res.procs20)
	return res, nil
}

// profile takes a CPU profile of the plugin process while role is issued
// at concurrency conc, and returns the profile's file.
func (b *bench) profile(ctx context.Context, role string, conc int, seconds int, out string) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_, _ = runLoad(ctx, conc*4, conc, func(ctx context.Context, _ int) error {
				_, err := b.issue(ctx, "database", role)
				return err
			})
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(500 * time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.pprofAddr, seconds), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profiling the plugin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profiling the plugin: %s", resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileSummary groups a profile's flat CPU time by where it is spent and
// reads the cumulative time of the functions that matter.
type profileSummary struct {
	total  float64 // seconds of samples
	groups []kv    // flat seconds by group, in groupOrder
	cum    []kv    // cumulative seconds of named functions
}

type kv struct {
	k string
	v float64
}

// groups map a flat function to where its time goes, first match wins.
var groups = []struct{ name, prefix string }{
	{"SHA-256 / PBKDF2 (SCRAM verifier)", "crypto/internal/fips140/sha256"},
	{"SHA-256 / PBKDF2 (SCRAM verifier)", "crypto/sha256"},
	{"SHA-256 / PBKDF2 (SCRAM verifier)", "crypto/internal/fips140/hmac"},
	{"SHA-256 / PBKDF2 (SCRAM verifier)", "crypto/internal/fips140/pbkdf2"},
	{"TLS and other crypto", "crypto/"},
	{"system calls (network I/O)", "syscall."},
	{"system calls (network I/O)", "internal/runtime/syscall"},
	{"system calls (network I/O)", "runtime/internal/syscall"},
	{"Go runtime: GC, allocation, scheduler", "runtime."},
	{"gRPC, HTTP/2, protobuf", "google.golang.org/"},
	{"gRPC, HTTP/2, protobuf", "golang.org/x/net/http2"},
	{"pgx", "github.com/jackc/"},
	{"logging (hclog)", "github.com/hashicorp/go-hclog"},
	{"this plugin", "github.com/pgvault/"},
}

var cumFuncs = []struct{ label, fn string }{
	{"gRPC handler NewUser (all the plugin's work for a request)", "github.com/hashicorp/vault/sdk/database/dbplugin/v5.(*gRPCServer).NewUser"},
	{"SCRAM verifier (scramSHA256Verifier)", "github.com/pgvault/vault-plugin-database-postgres.scramSHA256Verifier"},
	{"pool acquire (pgxpool.(*Pool).Acquire)", "github.com/jackc/pgx/v5/pgxpool.(*Pool).Acquire"},
	{"statements sent and answered (pgconn.(*PgConn).Exec)", "github.com/jackc/pgx/v5/pgconn.(*PgConn).Exec"},
	{"username template (template.StringTemplate.Generate)", "github.com/hashicorp/vault/sdk/helper/template.StringTemplate.Generate"},
	{"garbage collector (runtime.gcBgMarkWorker)", "runtime.gcBgMarkWorker"},
}

// summarize runs `go tool pprof -top` on the profile and groups its rows.
func summarize(ctx context.Context, file string) (*profileSummary, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=100000", file).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	s := &profileSummary{}
	flat := map[string]float64{}
	cum := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && strings.HasSuffix(f[1], "%") && strings.HasSuffix(f[4], "%") {
			fl, c := seconds(f[0]), seconds(f[3])
			fn := strings.TrimSuffix(strings.Join(f[5:], " "), " (inline)")
			s.total += fl
			g := "other"
			for _, gr := range groups {
				if strings.HasPrefix(fn, gr.prefix) {
					g = gr.name
					break
				}
			}
			flat[g] += fl
			cum[fn] = c
		}
	}
	seen := map[string]bool{}
	for _, gr := range append(groups, struct{ name, prefix string }{"other", ""}) {
		if !seen[gr.name] {
			seen[gr.name] = true
			s.groups = append(s.groups, kv{gr.name, flat[gr.name]})
		}
	}
	for _, cf := range cumFuncs {
		s.cum = append(s.cum, kv{cf.label, cum[cf.fn]})
	}
	return s, nil
}

// seconds parses pprof's durations ("1.23s", "450ms", "0").
func seconds(s string) float64 {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0
	}
	return d.Seconds()
}

// pluginCopy is the binary Vault runs from its plugin directory.
func pluginCopy(v *vaulttest.Server) string {
	return filepath.Join(v.PluginDir, vaulttest.PluginName)
}
