package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	postgres "github.com/pgvault/vault-plugin-database-postgres"
	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// creationStatements are what every role in the benchmark runs: the
// statements of the issue, for this plugin, the built-in and raw SQL alike.
var creationStatements = []string{
	`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
	`GRANT readers TO "{{name}}";`,
}

// rawCreate is creationStatements as raw SQL, with the password in the
// clear as the built-in sends it (the server hashes it).
func rawCreate(name, pw string, exp time.Time) string {
	id := render.QuoteIdent(name)
	return fmt.Sprintf("CREATE ROLE %s WITH LOGIN PASSWORD %s VALID UNTIL %s; GRANT readers TO %s;",
		id, render.QuoteLiteral(pw), render.QuoteLiteral(exp.Format("2006-01-02 15:04:05-0700")), id)
}

// ops is one way of doing the three operations of part 1.
type ops struct {
	name   string
	create func(ctx context.Context) (string, error)
	update func(ctx context.Context, user string) error
	delete func(ctx context.Context, user string) error
	close  func()
}

// pluginOps runs the plugin in this process, no Vault, no gRPC.
func pluginOps(ctx context.Context, pg *pgtest.Server, mode string, poolSize int) (*ops, error) {
	raw, err := postgres.New()
	if err != nil {
		return nil, err
	}
	db := raw.(dbplugin.Database)
	if _, err := db.Initialize(ctx, dbplugin.InitializeRequest{VerifyConnection: true, Config: map[string]interface{}{
		"connection_url": pg.TemplateURL(""), "username": pg.SuperUser, "password": pg.SuperPassword,
		"max_open_connections": poolSize, "password_authentication": mode,
	}}); err != nil {
		return nil, fmt.Errorf("initializing the plugin (%s): %w", mode, err)
	}
	return &ops{
		name: "plugin, " + mode,
		create: func(ctx context.Context) (string, error) {
			resp, err := db.NewUser(ctx, dbplugin.NewUserRequest{
				UsernameConfig: dbplugin.UsernameMetadata{DisplayName: "bench", RoleName: "inproc"},
				Statements:     dbplugin.Statements{Commands: creationStatements},
				CredentialType: dbplugin.CredentialTypePassword,
				Password:       password(),
				Expiration:     time.Now().Add(time.Hour),
			})
			return resp.Username, err
		},
		update: func(ctx context.Context, user string) error {
			_, err := db.UpdateUser(ctx, dbplugin.UpdateUserRequest{Username: user,
				CredentialType: dbplugin.CredentialTypePassword,
				Password:       &dbplugin.ChangePassword{NewPassword: password()}})
			return err
		},
		delete: func(ctx context.Context, user string) error {
			_, err := db.DeleteUser(ctx, dbplugin.DeleteUserRequest{Username: user})
			return err
		},
		close: func() { _ = db.Close() },
	}, nil
}

// rawRevoke is the textbook revocation in plain SQL, one round trip: block
// logins first (committed), end the sessions, hand over what the user owns,
// drop it. The plugin's default revocation does this and more (waits for
// the sessions to be gone, guards, reports), so this is a floor.
func rawRevoke(name string) string {
	id := render.QuoteIdent(name)
	return fmt.Sprintf("BEGIN; ALTER ROLE %[1]s NOLOGIN; COMMIT; "+
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %[2]s; "+
		"REASSIGN OWNED BY %[1]s TO CURRENT_USER; DROP OWNED BY %[1]s; DROP ROLE %[1]s;", id, render.QuoteLiteral(name))
}

// rawOps runs the same SQL on a pgx pool of the same size.
func rawOps(ctx context.Context, url string, poolSize int) (*ops, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(poolSize)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &ops{
		name: "raw pgx",
		create: func(ctx context.Context) (string, error) {
			name := fmt.Sprintf("v-raw-%s-%d", randHex(10), time.Now().Unix())
			_, err := pool.Exec(ctx, rawCreate(name, password(), time.Now().Add(time.Hour)))
			return name, err
		},
		update: func(ctx context.Context, user string) error {
			_, err := pool.Exec(ctx, fmt.Sprintf("ALTER ROLE %s WITH PASSWORD %s;", render.QuoteIdent(user), render.QuoteLiteral(password())))
			return err
		},
		delete: func(ctx context.Context, user string) error {
			_, err := pool.Exec(ctx, rawRevoke(user))
			return err
		},
		close: pool.Close,
	}, nil
}

// inProcessResult holds part 1: cells by variant, operation, concurrency.
type inProcessResult struct {
	variants []string
	conc     []int
	cells    map[string]*cell // key(variant, op, conc)
}

func key(parts ...any) string { return fmt.Sprint(parts...) }

var operations = []string{"NewUser", "UpdateUser", "DeleteUser"}

// inProcess measures NewUser, UpdateUser and DeleteUser of the plugin in
// both password modes against raw pgx, round by round.
func inProcess(ctx context.Context, pg *pgtest.Server, poolSize int, counts map[int]int, nRounds int) (*inProcessResult, error) {
	raw, err := rawOps(ctx, pg.SuperURL(), poolSize)
	if err != nil {
		return nil, err
	}
	auto, err := pluginOps(ctx, pg, "auto", poolSize)
	if err != nil {
		return nil, err
	}
	pw, err := pluginOps(ctx, pg, "password", poolSize)
	if err != nil {
		return nil, err
	}
	all := []*ops{raw, pw, auto}
	defer func() {
		for _, o := range all {
			o.close()
		}
	}()
	res := &inProcessResult{cells: map[string]*cell{}}
	for _, o := range all {
		res.variants = append(res.variants, o.name)
		// Warm the pool: connections are opened once, not per request.
		if err := cycle(ctx, o, 2*poolSize, poolSize, nil); err != nil {
			return nil, err
		}
	}
	for _, conc := range sortedKeys(counts) {
		res.conc = append(res.conc, conc)
		for r, n := range rounds(counts[conc], nRounds) {
			for _, o := range rotate(all, r) {
				got := map[string]*cell{}
				if err := cycle(ctx, o, n, conc, got); err != nil {
					return nil, err
				}
				for op, c := range got {
					k := key(o.name, op, conc)
					if res.cells[k] == nil {
						res.cells[k] = &cell{}
					}
					res.cells[k].add(*c)
				}
			}
		}
		for _, o := range all {
			c := res.cells[key(o.name, "NewUser", conc)]
			fmt.Printf("  in process  c%-3d %-18s NewUser %6.0f/s p50 %s ms\n", conc, o.name, c.rate(), ms(c.pct(0.5)))
		}
	}
	return res, nil
}

// cycle creates n users, changes their passwords and revokes them, each
// step at concurrency conc, and records the cells into got (if not nil).
func cycle(ctx context.Context, o *ops, n, conc int, got map[string]*cell) error {
	users := make([]string, n)
	steps := []func(context.Context, int) error{
		func(ctx context.Context, i int) (err error) { users[i], err = o.create(ctx); return err },
		func(ctx context.Context, i int) error { return o.update(ctx, users[i]) },
		func(ctx context.Context, i int) error { return o.delete(ctx, users[i]) },
	}
	for s, step := range steps {
		c, err := runLoad(ctx, n, conc, step)
		if err != nil {
			return fmt.Errorf("%s %s: %w", o.name, operations[s], err)
		}
		if got != nil {
			got[operations[s]] = &c
		}
	}
	return nil
}
