// Command bench is `make bench`: one run that measures this plugin side by
// side with raw SQL and with Vault's built-in postgresql-database-plugin on
// the same Vault and PostgreSQL, prints a table with the ratios, and writes
// BENCHMARKS.md and benchmarks.svg.
//
//  1. in process (no Vault): NewUser, UpdateUser, DeleteUser against raw pgx
//     running the same SQL on a pool of the same size;
//  2. through Vault: credentials per second for raw pgx, the built-in and
//     this plugin in password and auto modes, interleaved round by round,
//     directly and through a loopback proxy that adds 1 ms each way;
//  3. revocation of N leases with `vault lease revoke -prefix -sync`;
//  4. the plugin process's RSS serving 1 and 20 mounts.
//
// BENCH_SCALE multiplies every request count (default 1, sized to finish in
// a few minutes on 2 cores); BENCH_OUT is the directory the report goes to
// (default: the repository root); BENCH_PROFILE=0 skips the CPU profiles.
package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// Request counts at BENCH_SCALE=1, by concurrency.
var (
	inProcessCounts = map[int]int{1: 300, 16: 600, 64: 600}
	vaultCounts     = map[int]int{1: 300, 4: 300, 16: 450, 64: 450}
	revokeLeases    = 900
)

const (
	poolSize     = 16 // max_open_connections everywhere, and the raw pools' size
	inRounds     = 3
	vaultRounds  = 5
	revokeRounds = 3
	proxyDelay   = time.Millisecond
)

func main() {
	scale := 1.0
	if s := os.Getenv("BENCH_SCALE"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			fmt.Fprintln(os.Stderr, "bench: BENCH_SCALE must be a positive number, e.g. 4 for a run four times as long")
			os.Exit(2)
		}
		scale = v
	}
	out := cmp.Or(os.Getenv("BENCH_OUT"), vaulttest.RepoRoot())
	if err := run(scale, out, os.Getenv("BENCH_PROFILE") != "0"); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func scaled(m map[int]int, scale float64) map[int]int {
	out := map[int]int{}
	for k, v := range m {
		out[k] = max(k, int(float64(v)*scale))
	}
	return out
}

func sortedKeys(m map[int]int) []int { return slices.Sorted(maps.Keys(m)) }

func run(scale float64, outDir string, withProfile bool) error {
	ctx := context.Background()
	began := time.Now()
	rep := &report{scale: scale, started: began.UTC(), loadBefore: loadAvg()}

	// Vault starts after part 1, which measures without it.
	sb, err := vaulttest.NewSandbox(ctx, vaulttest.SandboxOptions{
		Version: "v0.1.0-bench", TempPrefix: "pgvault-bench-", LogLevel: "warn", NoVault: true,
	})
	if err != nil {
		return err
	}
	defer sb.Close()
	port, err := pgtest.FreePort()
	if err != nil {
		return err
	}
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", port)
	sb.Plugin.Env = []string{"PGVAULT_PPROF_ADDR=" + pprofAddr}

	if err := preparePG(ctx, sb.PG, rep); err != nil {
		return err
	}
	proxy, err := pgtest.NewProxy(fmt.Sprintf("%s:%d", sb.PG.Host, sb.PG.Port), proxyDelay)
	if err != nil {
		return err
	}
	defer proxy.Close()
	rep.env = environment(ctx, sb.VaultBin, sb.PG)
	fmt.Printf("make bench: %s\n", rep.env.oneLine())

	fmt.Println("part 1: in process, no Vault")
	rep.inProc, err = inProcess(ctx, sb.PG, poolSize, scaled(inProcessCounts, scale), inRounds)
	if err != nil {
		return err
	}
	b, err := startBench(ctx, sb, proxy, pprofAddr)
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_ONLY") == "revocation" {
		// A quick look at one part while working on it; writes nothing.
		_, err := b.revocation(ctx, max(revokeRounds, int(float64(revokeLeases)*scale)), revokeRounds)
		return err
	}
	if err := b.measure(ctx, rep, scale); err != nil {
		return err
	}
	if withProfile {
		if err := b.profiles(ctx, rep); err != nil {
			return err
		}
	}
	rep.took = time.Since(began)
	rep.loadAfter = loadAvg()
	rep.printSummary(os.Stdout)
	if err := rep.write(outDir); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s in %s\n", filepath.Join(outDir, "BENCHMARKS.md"), filepath.Join(outDir, chartFile), rep.took.Round(time.Second))
	return nil
}

// startBench starts the sandbox's Vault and returns what parts 2 to 4
// share: PostgreSQL's URLs direct and through proxy, and a client whose
// transport suits the highest concurrency.
func startBench(ctx context.Context, sb *vaulttest.Sandbox, proxy *pgtest.Proxy, pprofAddr string) (*bench, error) {
	if err := sb.StartVault(ctx); err != nil {
		return nil, err
	}
	pg, v := sb.PG, sb.Vault
	c, err := newClient(v.Addr)
	if err != nil {
		return nil, err
	}
	hostPort := fmt.Sprintf("%s:%d", pg.Host, pg.Port)
	viaProxy := func(u string) string { return strings.Replace(u, hostPort, proxy.Addr(), 1) }
	return &bench{pg: pg, v: v, c: c, plugin: sb.Plugin, pluginBin: pluginCopy(v), poolSize: poolSize,
		directURL: pg.TemplateURL(""), proxyURL: viaProxy(pg.TemplateURL("")),
		rawURL: map[string]string{"direct": pg.SuperURL(), "1 ms": viaProxy(pg.SuperURL())}, pprofAddr: pprofAddr}, nil
}

// measure runs parts 4 (first, on a fresh plugin process), 2 and 3 into
// rep, and reads the plugin's memory at the end.
func (b *bench) measure(ctx context.Context, rep *report, scale float64) (err error) {
	fmt.Println("part 4 (first, on a fresh plugin process): memory")
	if rep.mem, err = b.memory(ctx); err != nil {
		return err
	}
	fmt.Println("part 2: credentials through Vault")
	if rep.vault, err = b.throughVault(ctx, scaled(vaultCounts, scale), vaultRounds); err != nil {
		return err
	}
	if err := dropIssuedRoles(ctx, b.pg); err != nil {
		return err
	}
	// Their leases too, without calling the plugins (the roles are gone):
	// tens of thousands of leases left in Vault add a millisecond or more
	// to each revocation Vault makes in part 3, for both plugins alike,
	// which hides the difference part 3 measures.
	if err := b.c.Sys().RevokeForceWithContext(ctx, "database/creds/"); err != nil {
		return fmt.Errorf("removing the leases of part 2: %w", err)
	}
	fmt.Println("part 3: revocation")
	if rep.revoke, err = b.revocation(ctx, max(revokeRounds, int(float64(revokeLeases)*scale)), revokeRounds); err != nil {
		return err
	}
	rep.mem.rssEnd, rep.mem.peakEnd, _ = b.pluginRSS()
	return nil
}

// profiles takes a CPU profile of the plugin process for each of its
// modes, direct at concurrency 16, and summarizes it into rep.
func (b *bench) profiles(ctx context.Context, rep *report) error {
	fmt.Println("profiles of the plugin process (direct, concurrency 16)")
	rep.profiles = map[string]*profileSummary{}
	rep.profileDir = filepath.Join(vaulttest.RepoRoot(), ".cache", "bench")
	if err := os.MkdirAll(rep.profileDir, 0o755); err != nil {
		return err
	}
	for _, v := range []string{"plugin, auto", "plugin, password"} {
		file := filepath.Join(rep.profileDir, strings.ReplaceAll(v, ", ", "-")+".pprof")
		if err := b.profile(ctx, target{v, "direct"}.roleName("iss"), 16, 5, file); err != nil {
			return err
		}
		s, err := summarize(ctx, file)
		if err != nil {
			return err
		}
		rep.profiles[v] = s
	}
	return nil
}

// preparePG creates the group the roles join and turns statement logging
// off: the test harness logs every statement, which a production server
// does not, and which would weigh on every variant's numbers.
func preparePG(ctx context.Context, pg *pgtest.Server, rep *report) error {
	admin, err := pg.Pool(ctx)
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'readers') THEN CREATE ROLE readers NOLOGIN; END IF;
	END $$`); err != nil {
		return fmt.Errorf("creating the readers group: %w", err)
	}
	if _, err := admin.Exec(ctx, "ALTER SYSTEM SET log_statement = 'none'"); err == nil {
		_, err = admin.Exec(ctx, "SELECT pg_reload_conf()")
		rep.logOff = err == nil
	}
	return admin.QueryRow(ctx, "SELECT coalesce(current_setting('scram_iterations', true), '4096 (fixed before PostgreSQL 16)'), current_setting('password_encryption')").Scan(&rep.scramIterations, &rep.passwordEncryption)
}

// dropIssuedRoles drops, untimed, the roles part 2 left behind (their
// leases live on in Vault until it stops): revocation is measured on a
// catalog that holds only the roles being revoked, as the built-in's
// revocation reads information_schema views that slow down as it grows.
func dropIssuedRoles(ctx context.Context, pg *pgtest.Server) error {
	admin, err := pg.Pool(ctx)
	if err != nil {
		return err
	}
	defer admin.Close()
	for {
		// Batches keep the shared-object locks of one transaction few.
		_, err := admin.Exec(ctx, `DO $$ DECLARE r text; BEGIN
			FOR r IN SELECT rolname FROM pg_catalog.pg_roles WHERE rolname LIKE 'v-%' LIMIT 500 LOOP
				EXECUTE format('DROP ROLE %I', r);
			END LOOP;
		END $$`)
		if err != nil {
			return fmt.Errorf("dropping the roles of part 2: %w", err)
		}
		var left int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname LIKE 'v-%'").Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			// What autovacuum would do in time: the dead rows of tens of
			// thousands of roles slow every later catalog lookup.
			_, err := admin.Exec(ctx, "VACUUM pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_shdepend, pg_catalog.pg_shdescription")
			return err
		}
	}
}

// env describes the machine and versions of a run.
type env struct {
	date, cores, cpu, kernel, goVersion, vault, postgres, commit string
}

func (e env) oneLine() string {
	return fmt.Sprintf("%s cores (%s), Linux %s, %s, Vault %s, %s, plugin %s", e.cores, e.cpu, e.kernel, e.goVersion, e.vault, e.postgres, e.commit)
}

func environment(ctx context.Context, vaultBin string, pg *pgtest.Server) env {
	e := env{date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), cores: strconv.Itoa(runtime.NumCPU()),
		goVersion: runtime.Version(), cpu: "unknown CPU", postgres: pg.Source}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
	if short, _, ok := strings.Cut(pg.Version, " on "); ok {
		e.postgres = short
	}
	e.vault = vaulttest.VaultVersion
	if out, err := exec.CommandContext(ctx, vaultBin, "version").Output(); err == nil {
		e.vault = strings.TrimSuffix(strings.Fields(strings.TrimPrefix(string(out), "Vault ") + " ?")[0], ",")
	}
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = vaulttest.RepoRoot()
	if out, err := cmd.Output(); err == nil {
		e.commit = strings.TrimSpace(string(out))
	}
	return e
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}
