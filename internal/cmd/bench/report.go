package main

import (
	_ "embed"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// chartFile is the SVG the report embeds, next to BENCHMARKS.md.
const chartFile = "benchmarks.svg"

// analysis is the hand-written reading of the profiles and CPU tables,
// placed into every generated BENCHMARKS.md.
//
//go:embed analysis.md
var analysis string

type report struct {
	scale                 float64
	started               time.Time
	took                  time.Duration
	loadBefore, loadAfter string
	env                   env

	logOff                              bool
	scramIterations, passwordEncryption string

	inProc     *inProcessResult
	vault      *vaultResult
	revoke     *revokeResult
	mem        *memResult
	profiles   map[string]*profileSummary
	profileDir string
}

// check is one target of the issue, measured.
type check struct {
	what      string
	got, want float64
	atMost    bool // the ratio must not exceed want (latency), else reach it
	note      string
}

func (c check) met() bool {
	if c.atMost {
		return c.got > 0 && c.got <= c.want
	}
	return c.got >= c.want
}

func (c check) verdict() string {
	if c.met() {
		return "met"
	}
	return "**missed**"
}

func (c check) target() string {
	if c.atMost {
		return fmt.Sprintf("≤ %.2fx", c.want)
	}
	return fmt.Sprintf("≥ %.2gx", c.want)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *report) vcell(variant, path string, conc int) *cell {
	return r.vault.cells[key(variant, path, conc)]
}

func (r *report) checks() []check {
	rate := func(v, p string, c int) float64 { return r.vcell(v, p, c).rate() }
	p50 := func(v, p string, c int) float64 { return r.vcell(v, p, c).pct(0.5).Seconds() }
	in := func(v string) float64 { return r.inProc.cells[key(v, "NewUser", 16)].rate() }
	rv := func(v, p string) float64 { return r.revoke.cells[key(v, p)].rate() }
	autoExtra := (p50("plugin, auto", "direct", 1) - p50("plugin, password", "direct", 1)) * 1000
	inP50 := func(v string) float64 { return r.inProc.cells[key(v, "NewUser", 1)].pct(0.5).Seconds() }
	// What the plugin adds through Vault beyond what Vault adds to the
	// built-in (which runs in its process): the gRPC hop to the plugin
	// process, less the built-in's three extra round trips.
	hop := ((p50("plugin, password", "direct", 1) - inP50("plugin, password")) - (p50("built-in", "direct", 1) - p50("raw pgx", "direct", 1))) * 1000
	return []check{
		{what: "through Vault, concurrency 16, 1 ms each way: plugin (auto) / built-in", got: ratio(rate("plugin, auto", "1 ms", 16), rate("built-in", "1 ms", 16)), want: 4.5,
			note: fmt.Sprintf("password mode: %.2fx", ratio(rate("plugin, password", "1 ms", 16), rate("built-in", "1 ms", 16)))},
		{what: "through Vault, concurrency 16, direct: plugin (auto) / built-in", got: ratio(rate("plugin, auto", "direct", 16), rate("built-in", "direct", 16)), want: 1.6,
			note: fmt.Sprintf("password mode: %.2fx", ratio(rate("plugin, password", "direct", 16), rate("built-in", "direct", 16)))},
		{what: "concurrency 1, direct, p50 latency: plugin (password, as the built-in) / built-in", got: ratio(p50("plugin, password", "direct", 1), p50("built-in", "direct", 1)), want: 1.1, atMost: true,
			note: fmt.Sprintf("auto mode: %.2fx; auto costs %+.2f ms per credential over password mode; the hop from Vault to the plugin process costs about %.2f ms (its p50 through Vault less its p50 in process, less the built-in's p50 through Vault over raw SQL's)", ratio(p50("plugin, auto", "direct", 1), p50("built-in", "direct", 1)), autoExtra, hop)},
		{what: "in process, NewUser at concurrency 16: plugin (password) / raw pgx", got: ratio(in("plugin, password"), in("raw pgx")), want: 0.9,
			note: fmt.Sprintf("auto mode: %.2fx", ratio(in("plugin, auto"), in("raw pgx")))},
		{what: fmt.Sprintf("revocation of %d leases, 1 ms each way: plugin / built-in", r.revoke.n), got: ratio(rv("plugin, auto", "1 ms"), rv("built-in", "1 ms")), want: 8,
			note: fmt.Sprintf("direct: %.2fx", ratio(rv("plugin, auto", "direct"), rv("built-in", "direct")))},
	}
}

func (r *report) printSummary(w io.Writer) {
	fmt.Fprintf(w, "\nmake bench, %s, %s cores, took %s\n\n", r.env.date, r.env.cores, r.took.Round(time.Second))
	fmt.Fprintln(w, r.vaultTable(false))
	fmt.Fprintln(w, r.revokeTable())
	fmt.Fprintln(w, "targets:")
	for _, c := range r.checks() {
		fmt.Fprintf(w, "  %-6s %5.2fx (target %s)  %s; %s\n", strings.Trim(c.verdict(), "*"), c.got, c.target(), c.what, c.note)
	}
}

// vaultTable is part 2's rates and ratios as a Markdown table.
func (r *report) vaultTable(latency bool) string {
	var b strings.Builder
	if latency {
		b.WriteString("| path | concurrency | raw pgx p50 / p99 | built-in p50 / p99 | plugin, password p50 / p99 | plugin, auto p50 / p99 |\n|---|---:|---:|---:|---:|---:|\n")
	} else {
		b.WriteString("| path | concurrency | raw pgx | built-in | plugin, password | plugin, auto | auto / built-in | password / built-in | auto / raw |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	}
	for _, p := range r.vault.paths {
		for _, c := range r.vault.conc {
			fmt.Fprintf(&b, "| %s | %d |", p, c)
			for _, v := range r.vault.variants {
				x := r.vcell(v, p, c)
				if latency {
					fmt.Fprintf(&b, " %s / %s ms |", ms(x.pct(0.5)), ms(x.pct(0.99)))
				} else {
					fmt.Fprintf(&b, " %.0f/s |", x.rate())
				}
			}
			if !latency {
				rate := func(v string) float64 { return r.vcell(v, p, c).rate() }
				fmt.Fprintf(&b, " %.2fx | %.2fx | %.2fx |", ratio(rate("plugin, auto"), rate("built-in")),
					ratio(rate("plugin, password"), rate("built-in")), ratio(rate("plugin, auto"), rate("raw pgx")))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func (r *report) revokeTable() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| path | built-in | plugin | plugin / built-in |\n|---|---:|---:|---:|\n")
	for _, p := range []string{"direct", "1 ms"} {
		bi, pl := r.revoke.cells[key("built-in", p)], r.revoke.cells[key("plugin, auto", p)]
		fmt.Fprintf(&b, "| %s | %.0f/s (%.2fs) | %.0f/s (%.2fs) | %.2fx |\n", p, bi.rate(), bi.wall.Seconds(), pl.rate(), pl.wall.Seconds(), ratio(pl.rate(), bi.rate()))
	}
	return b.String()
}

func (r *report) inProcTable() string {
	var b strings.Builder
	b.WriteString("| operation | concurrency | raw pgx | plugin, password | plugin, auto | password / raw | auto / raw |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, op := range operations {
		for _, c := range r.inProc.conc {
			fmt.Fprintf(&b, "| %s | %d |", op, c)
			for _, v := range r.inProc.variants {
				x := r.inProc.cells[key(v, op, c)]
				fmt.Fprintf(&b, " %.0f/s (p50 %s, p99 %s ms) |", x.rate(), ms(x.pct(0.5)), ms(x.pct(0.99)))
			}
			rate := func(v string) float64 { return r.inProc.cells[key(v, op, c)].rate() }
			fmt.Fprintf(&b, " %.2fx | %.2fx |\n", ratio(rate("plugin, password"), rate("raw pgx")), ratio(rate("plugin, auto"), rate("raw pgx")))
		}
	}
	return b.String()
}

// cpuTable shows, for the concurrency-16 cells, the CPU each process spent
// per credential: on 2 cores the sum bounds the rate.
func (r *report) cpuTable() string {
	var b strings.Builder
	b.WriteString("| path | variant | rate | Vault | plugin process | PostgreSQL | bench client | total | cores busy |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.vault.paths {
		for _, v := range r.vault.variants {
			k := key(v, p, 16)
			c, u := r.vault.cells[k], r.vault.cpu[k]
			if c == nil || u == nil || c.n == 0 {
				continue
			}
			per := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", d.Seconds()*1000/float64(c.n)) }
			total := u.vault + u.plugin + u.postgres + u.bench
			plugin := per(u.plugin)
			if !strings.HasPrefix(v, "plugin") {
				plugin = "–"
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f/s | %s | %s | %s | %s | %s | %.2f |\n", p, v, c.rate(), per(u.vault), plugin, per(u.postgres), per(u.bench), per(total), total.Seconds()/c.wall.Seconds())
		}
	}
	return b.String()
}

func (r *report) profileTables() string {
	var b strings.Builder
	for _, v := range []string{"plugin, auto", "plugin, password"} {
		s := r.profiles[v]
		if s == nil || s.total == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n**%s**, direct, concurrency 16: %.2f s of CPU samples in 5 s.\n\n", v, s.total)
		b.WriteString("| flat CPU by where it is spent | share |\n|---|---:|\n")
		for _, g := range s.groups {
			fmt.Fprintf(&b, "| %s | %.0f%% |\n", g.k, 100*g.v/s.total)
		}
		b.WriteString("\n| cumulative CPU of | share |\n|---|---:|\n")
		for _, c := range s.cum {
			fmt.Fprintf(&b, "| %s | %.0f%% |\n", c.k, 100*c.v/s.total)
		}
	}
	return b.String()
}

func (r *report) write(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, chartFile), []byte(r.chart()), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# Benchmarks\n\n")
	w("Generated by `make bench` (internal/cmd/bench) on %s; do not edit by hand, run it again. ", r.env.date)
	w("One run on one machine: the numbers are noisy, and this machine is shared with other engineers' test runs, so a ratio can move by 10–20%% between runs. The load average was %s before the run and %s after it.\n\n", r.loadBefore, r.loadAfter)
	w("| | |\n|---|---|\n")
	w("| cores | %s (%s) |\n| kernel | Linux %s |\n| Go | %s |\n| Vault | %s |\n| PostgreSQL | %s |\n| plugin | %s |\n", r.env.cores, r.env.cpu, r.env.kernel, r.env.goVersion, r.env.vault, r.env.postgres, r.env.commit)
	w("| server settings | password_encryption=%s, scram_iterations=%s, TLS (verify-full), fsync off, statement logging %s |\n", r.passwordEncryption, r.scramIterations, map[bool]string{true: "off", false: "on (could not turn off)"}[r.logOff])
	w("| run | BENCH_SCALE=%g, %s |\n\n", r.scale, r.took.Round(time.Second))

	w("## Targets\n\n| target | measured | wanted | | also |\n|---|---:|---:|---|---|\n")
	for _, c := range r.checks() {
		w("| %s | %.2fx | %s | %s | %s |\n", c.what, c.got, c.target(), c.verdict(), c.note)
	}
	w("\n## Credentials per second against concurrency\n\n![credentials per second against concurrency, direct and with 1 ms each way](%s)\n\n", chartFile)

	w("## 1. In process, no Vault\n\n")
	w("The plugin's methods called in this process against raw pgx running the same SQL (the role's statements with the password in the clear, as the built-in sends it; a password change; the textbook revocation `ALTER ROLE … NOLOGIN` committed, `pg_terminate_backend`, `REASSIGN OWNED`, `DROP OWNED`, `DROP ROLE` in one round trip) on a pool of the same size (%d). Each round creates users, changes their passwords and revokes them; the variants take turns.\n\n", poolSize)
	w("%s\n", r.inProcTable())

	w("## 2. Through Vault\n\n")
	w("`vault read database/creds/<role>` over HTTP, all variants on the same Vault and PostgreSQL, `max_open_connections=%d` for every connection, the statements `%s` for every role. Raw pgx runs the same SQL on a pool of %d, directly and through the same proxy. Cells are interleaved round by round (%d rounds, the order rotating).\n\n", poolSize, strings.Join(creationStatements, " "), poolSize, vaultRounds)
	w("%s\n", r.vaultTable(false))
	w("Latency:\n\n%s\n", r.vaultTable(true))
	w("### CPU per credential at concurrency 16\n\nCPU time from /proc of each process during the cells, per credential issued. The built-in runs inside Vault's process. \"cores busy\" near %s means the machine, not a wait, bounds the rate.\n\n%s\n", r.env.cores, r.cpuTable())

	w("## 3. Revocation\n\n`vault lease revoke -prefix -sync` (sys/leases/revoke-prefix) of %d leases per plugin and path, issued just before, in %d rounds; every role is checked gone afterwards. Vault revokes the leases of a prefix one after another, so this measures one revocation's latency.\n\n%s\n", r.revoke.n, revokeRounds, r.revokeTable())

	m := r.mem
	w("## 4. Memory\n\nOne multiplexed plugin process serves every mount. RSS of the plugin (%d process) right after one mount had a connection and issued a credential, and after twenty had: **%.1f MiB** with 1 mount, **%.1f MiB** with 20 (%.2f MiB per extra mount; peak %.1f MiB). After the whole run: %.1f MiB (peak %.1f MiB).\n\n",
		m.procs20, kib(m.rss1), kib(m.rss20), (kib(m.rss20)-kib(m.rss1))/19, kib(m.peak20), kib(m.rssEnd), kib(m.peakEnd))

	if r.profiles != nil {
		w("## Profiles of the plugin process\n\nCPU profiles over `PGVAULT_PPROF_ADDR` (net/http/pprof, off unless set), 5 s each while issuing at concurrency 16, direct.\n%s\n", r.profileTables())
	}
	w("%s\n", strings.TrimSpace(analysis))
	w("\n## How it is measured\n\n")
	w("- Request counts at BENCH_SCALE=1: in process %s per operation and concurrency; through Vault %s per variant, path and concurrency; revocation %d leases per plugin and path. `BENCH_SCALE=4 make bench` runs four times as many; BENCH_OUT writes the report elsewhere; BENCH_PROFILE=0 skips the profiles.\n",
		countList(scaled(inProcessCounts, r.scale)), countList(scaled(vaultCounts, r.scale)), r.revoke.n)
	w("- Pools are warmed before timing (connections are opened once); rates are requests divided by wall time; p50/p99 are per request.\n")
	w("- The proxy is a goroutine pair per connection that delivers every chunk 1 ms after reading it, in both directions; it runs in the bench process and uses its CPU.\n")
	w("- PostgreSQL is the test harness's local cluster (internal/pgtest), with statement logging switched off for the run. Vault is a dev server at log level warn.\n")
	return os.WriteFile(filepath.Join(dir, "BENCHMARKS.md"), []byte(b.String()), 0o644)
}

func kib(k int64) float64 { return float64(k) / 1024 }

func countList(m map[int]int) string {
	var parts []string
	for _, c := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%d at c%d", m[c], c))
	}
	return strings.Join(parts, ", ")
}

// chart draws credentials per second against concurrency, one panel per
// path, one line per variant.
func (r *report) chart() string {
	const (
		panelW, panelH = 420.0, 300.0
		left, top      = 60.0, 50.0
		gap            = 60.0
	)
	colors := map[string]string{"raw pgx": "#7f7f7f", "built-in": "#d95f02", "plugin, password": "#66a3d2", "plugin, auto": "#1f4e9c"}
	dash := map[string]string{"raw pgx": "6,4"}
	maxRate := 0.0
	for _, c := range r.vault.cells {
		maxRate = math.Max(maxRate, c.rate())
	}
	yMax := niceCeil(maxRate)
	conc := r.vault.conc
	x := func(i int) float64 { return float64(i) * panelW / float64(len(conc)-1) }
	y := func(v float64) float64 { return panelH - v/yMax*panelH }
	var b strings.Builder
	width := left + 2*panelW + gap + 30
	height := top + panelH + 110
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15" font-weight="bold">Credentials per second through Vault %s, PostgreSQL %s, %s cores (%s)</text>`+"\n", left, xmlEscape(strings.Fields(r.env.vault + " ?")[0]), xmlEscape(shortPG(r.env.postgres)), r.env.cores, r.env.date)
	for pi, path := range r.vault.paths {
		ox := left + float64(pi)*(panelW+gap)
		fmt.Fprintf(&b, `<g transform="translate(%.0f,%.0f)">`+"\n", ox, top)
		title := map[string]string{"direct": "direct (loopback)", "1 ms": "through a proxy adding 1 ms each way"}[path]
		fmt.Fprintf(&b, `<text x="%.0f" y="-10" text-anchor="middle" font-weight="bold">%s</text>`+"\n", panelW/2, title)
		for t := 0.0; t <= yMax+1e-9; t += yMax / 5 {
			fmt.Fprintf(&b, `<line x1="0" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#e0e0e0"/><text x="-6" y="%.1f" text-anchor="end" dominant-baseline="middle">%.0f</text>`+"\n", panelW, y(t), y(t), y(t), t)
		}
		for i, c := range conc {
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="0" y2="%.0f" stroke="#f0f0f0"/><text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", x(i), x(i), panelH, x(i), panelH+16, c)
		}
		fmt.Fprintf(&b, `<line x1="0" x2="0" y1="0" y2="%.0f" stroke="black"/><line x1="0" x2="%.0f" y1="%.0f" y2="%.0f" stroke="black"/>`+"\n", panelH, panelW, panelH, panelH)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">concurrent requests</text>`+"\n", panelW/2, panelH+34)
		if pi == 0 {
			fmt.Fprintf(&b, `<text transform="translate(-44,%.0f) rotate(-90)" text-anchor="middle">credentials / s</text>`+"\n", panelH/2)
		}
		for _, v := range r.vault.variants {
			var pts []string
			for i, c := range conc {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(r.vcell(v, path, c).rate())))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2.5" stroke-dasharray="%s" points="%s"/>`+"\n", colors[v], dash[v], strings.Join(pts, " "))
			for i, c := range conc {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s, %s, c%d: %.0f/s</title></circle>`+"\n", x(i), y(r.vcell(v, path, c).rate()), colors[v], v, path, c, r.vcell(v, path, c).rate())
			}
		}
		b.WriteString("</g>\n")
	}
	ly := top + panelH + 70
	for i, v := range r.vault.variants {
		lx := left + float64(i)*180
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="%s" stroke-width="2.5" stroke-dasharray="%s"/><text x="%.0f" y="%.0f" dominant-baseline="middle">%s</text>`+"\n", lx, lx+28, ly, ly, colors[v], dash[v], lx+34, ly, legendName(v))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#555">Same statements (CREATE ROLE … PASSWORD … VALID UNTIL …; GRANT readers TO …) and max_open_connections=%d for all; raw pgx runs them without Vault. One run, shared machine: noisy.</text>`+"\n", left, ly+26, poolSize)
	b.WriteString("</svg>\n")
	return b.String()
}

func legendName(v string) string {
	switch v {
	case "raw pgx":
		return "raw SQL (pgx, no Vault)"
	case "built-in":
		return "built-in postgresql-database-plugin"
	}
	return "this plugin (" + strings.TrimPrefix(v, "plugin, ") + ")"
}

func shortPG(s string) string {
	if f := strings.Fields(s); len(f) >= 2 {
		return f[1]
	}
	return s
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
