// Command revokebench measures revocation through a real Vault: `vault lease
// revoke -prefix -sync` of N leases, this plugin against Vault's built-in
// postgresql-database-plugin, on the same Vault and PostgreSQL, directly and
// through a loopback proxy that delays every chunk by -delay each way (a
// stand-in for a database across a network). Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

func main() {
	n := flag.Int("n", 300, "leases per run")
	delay := flag.Duration("delay", time.Millisecond, "one-way delay added by the proxy")
	flag.Parse()
	if err := run(*n, *delay); err != nil {
		fmt.Fprintln(os.Stderr, "revokebench:", err)
		os.Exit(1)
	}
}

type result struct {
	plugin, path string
	n            int
	took         time.Duration
}

func run(n int, delay time.Duration) error {
	ctx := context.Background()
	vaultBin, err := vaulttest.FindVault()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "pgvault-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	plugin, err := vaulttest.BuildPlugin(ctx, dir, "v0.1.0-bench")
	if err != nil {
		return err
	}
	pg, err := pgtest.Start(ctx)
	if err != nil {
		return err
	}
	defer pg.Stop()
	v, err := vaulttest.StartDev(ctx, vaultBin, dir, plugin)
	if err != nil {
		return err
	}
	defer v.Stop()
	c := v.Client
	if err := vaulttest.Register(c, plugin); err != nil {
		return err
	}
	if err := vaulttest.EnableDatabase(c, "database"); err != nil {
		return err
	}
	proxy, err := newDelayProxy(fmt.Sprintf("%s:%d", pg.Host, pg.Port), delay)
	if err != nil {
		return err
	}
	defer proxy.Close()
	admin, err := pg.Pool(ctx)
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_orders (id int)"); err != nil {
		return err
	}

	fmt.Printf("revocation benchmark: %d leases per run, Vault %s, PostgreSQL %s, proxy delay %s each way\n", n, vaulttest.VaultVersion, pg.Source, delay)
	var results []result
	for _, path := range []string{"direct", "proxy"} {
		url := pg.TemplateURL("")
		if path == "proxy" {
			url = strings.Replace(url, fmt.Sprintf("127.0.0.1:%d", pg.Port), proxy.Addr(), 1)
		}
		for _, pl := range []string{"postgresql-database-plugin", vaulttest.PluginName} {
			name := fmt.Sprintf("%s-%s", shortName(pl), path)
			cfg := map[string]interface{}{
				"plugin_name": pl, "allowed_roles": "*", "verify_connection": true,
				"connection_url": url, "username": pg.SuperUser, "password": pg.SuperPassword,
			}
			if pl == vaulttest.PluginName {
				cfg["plugin_version"] = plugin.Version
			}
			if _, err := c.Logical().Write("database/config/"+name, cfg); err != nil {
				return fmt.Errorf("configuring %s: %w", name, err)
			}
			if _, err := c.Logical().Write("database/roles/"+name, map[string]interface{}{
				"db_name": name, "default_ttl": "1h",
				"creation_statements": []string{
					vaulttest.CreateRole,
					`GRANT SELECT ON bench_orders TO "{{name}}";`,
				},
			}); err != nil {
				return err
			}
			if err := issue(c, name, n); err != nil {
				return fmt.Errorf("issuing for %s: %w", name, err)
			}
			start := time.Now()
			if err := c.Sys().RevokePrefix("database/creds/" + name); err != nil {
				return fmt.Errorf("revoke-prefix %s: %w", name, err)
			}
			took := time.Since(start)
			var left int
			if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", "v-root-"+name[:min(len(name), 8)]+"%").Scan(&left); err != nil {
				return err
			}
			if left != 0 {
				return fmt.Errorf("%s: %d roles left after revoke-prefix", name, left)
			}
			results = append(results, result{pl, path, n, took})
			fmt.Printf("  %-28s %-6s %5d leases revoked in %7.2fs\n", pl, path, n, took.Seconds())
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\npath\tbuilt-in (ms/lease)\tthis plugin (ms/lease)\tspeed-up")
	for i := 0; i+1 < len(results); i += 2 {
		b, o := results[i], results[i+1]
		per := func(r result) float64 { return float64(r.took.Microseconds()) / 1000 / float64(r.n) }
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.1fx\n", b.path, per(b), per(o), b.took.Seconds()/o.took.Seconds())
	}
	return tw.Flush()
}

func shortName(plugin string) string {
	if plugin == vaulttest.PluginName {
		return "ours"
	}
	return "builtin"
}

// issue reads n credentials with a few requests in flight.
func issue(c *api.Client, role string, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := c.Logical().Read("database/creds/" + role); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// delayProxy forwards TCP to upstream, delivering every chunk `delay` after
// it was read, in both directions, without serializing chunks behind each
// other's delays.
type delayProxy struct {
	l        net.Listener
	upstream string
	delay    time.Duration
}

func newDelayProxy(upstream string, delay time.Duration) (*delayProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{l: l, upstream: upstream, delay: delay}
	go p.serve()
	return p, nil
}

func (p *delayProxy) Addr() string { return p.l.Addr().String() }
func (p *delayProxy) Close() error { return p.l.Close() }

func (p *delayProxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		go func() {
			out, err := net.Dial("tcp", p.upstream)
			if err != nil {
				in.Close()
				return
			}
			go p.pipe(in, out)
			go p.pipe(out, in)
		}()
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

func (p *delayProxy) pipe(src, dst net.Conn) {
	q := make(chan chunk, 1024)
	go func() {
		defer dst.Close()
		for c := range q {
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(p.delay)}
		}
		if err != nil { // io.EOF or a closed connection: flush and close
			close(q)
			return
		}
	}
}
