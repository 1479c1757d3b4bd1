// Package postgres is a HashiCorp Vault database secrets plugin for
// PostgreSQL built on pgx: dynamic users, static-role and root rotation, and a
// revocation that always finishes without losing data.
//
// The dbplugin methods live in a file each with what they alone use:
// Initialize and Type here, NewUser in create.go, UpdateUser in update.go,
// DeleteUser in revoke.go; the state they share in state.go. Each validates,
// renders (internal/sqlrender), executes and maps the error (errors.go). The long SQL
// they run lives in sql/*.sql, embedded and filled by sqltemplate.go.
// DEVELOPERS.md maps the rest.
package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/jackc/pgx/v5/pgxpool"
)

// typeName is what Type reports to Vault: the built-in's, "pgx", which Vault
// puts on its database plugin-instance gauges, so dashboards that count
// PostgreSQL connections keep counting after the plugin_name swap.
const typeName = "pgx"

var (
	_ dbplugin.Database       = (*Postgres)(nil)
	_ logical.PluginVersioner = (*Postgres)(nil)
)

// Initialize decodes and validates the configuration, builds a pool and, when
// Vault asks, proves the connection works with a real round trip. The config
// it returns is what Vault stores: the input unchanged plus the supported
// credential types, so it round-trips on the next start.
func (p *Postgres) Initialize(ctx context.Context, req dbplugin.InitializeRequest) (dbplugin.InitializeResponse, error) {
	cfg, unknown, err := parseConfig(req.Config)
	if err != nil {
		return dbplugin.InitializeResponse{}, err
	}
	if len(unknown) > 0 {
		p.logger.Warn("ignoring unknown configuration keys", "keys", strings.Join(unknown, ", "))
	}
	tmpl, err := newUsernameTemplate(cfg.UsernameTemplate)
	if err != nil {
		return dbplugin.InitializeResponse{}, err
	}
	poolCfg, err := cfg.poolConfig()
	if err != nil {
		return dbplugin.InitializeResponse{}, err
	}
	// Per-database pools copy poolCfg, hook included.
	poolCfg.PrepareConn = prepareSession
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return dbplugin.InitializeResponse{}, fmt.Errorf("creating connection pool: %w", err)
	}
	st := &state{cfg: cfg, txSettings: cfg.txSettings(), revokeTx: revokeTxSettings(cfg.LockTimeout),
		logger: p.logger, pool: pool, poolCfg: poolCfg, username: tmpl,
		revokeSlots: make(chan struct{}, max(1, cfg.MaxOpenConnections-1))}
	if req.VerifyConnection {
		if err := p.verifyConnection(ctx, st); err != nil {
			pool.Close()
			return dbplugin.InitializeResponse{}, err
		}
	}
	st.reaper = p.startReaper(st)
	p.retire(st)
	p.logger.Info("initialized", "hosts", hostList(poolCfg), "user", poolCfg.ConnConfig.User,
		"password_authentication", cfg.PasswordAuthentication, "max_open_connections", cfg.MaxOpenConnections)

	out := make(map[string]interface{}, len(req.Config)+1)
	for k, v := range req.Config {
		out[k] = v
	}
	resp := dbplugin.InitializeResponse{Config: out}
	resp.SetSupportedCredentialTypes([]dbplugin.CredentialType{dbplugin.CredentialTypePassword, dbplugin.CredentialTypeClientCertificate})
	return resp, nil
}

// verifyConnection proves the connection with one round trip, which also
// reads scram_iterations and checks the role revoked users' objects go to.
func (p *Postgres) verifyConnection(ctx context.Context, st *state) error {
	cfg := st.cfg
	var iterations *int64
	var exists, privileged bool
	err := st.pool.QueryRow(ctx, `SELECT `+scramIterationsSQL+`,
		r.oid IS NOT NULL,
		coalesce(r.rolsuper OR r.rolname OPERATOR(pg_catalog.=) current_user OR pg_catalog.pg_has_role(r.oid, current_user, 'USAGE'), false)
		FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) $1`,
		cfg.reassignTarget()).Scan(&iterations, &exists, &privileged)
	if err != nil {
		// The user the pool logs in as: connection_url may name it without
		// a username parameter.
		return failed(fmt.Sprintf("verifying connection to %s as %q", hostList(st.poolCfg), st.poolCfg.ConnConfig.User), err)
	}
	st.storeSCRAMIterations(iterations)
	return checkReassignTarget(cfg, exists, privileged)
}

// checkReassignTarget refuses a receiving role that would lend revoked
// users' code more rights than the holding role has, unless the operator
// opted in, and a configured one that does not exist.
func checkReassignTarget(cfg *config, exists, privileged bool) error {
	target := cfg.reassignTarget()
	if cfg.ReassignOwnedTo != "" && cfg.ReassignOwnedTo != holdingRole && !exists {
		return fmt.Errorf("reassign_owned_to: role %q does not exist (create it NOLOGIN, or leave the parameter out to use the plugin's holding role %s)", target, holdingRole)
	}
	if privileged && !cfg.AllowPrivilegedReassign {
		return fmt.Errorf("reassign_owned_to: role %q is a superuser or has the rights of the connection's user, so code a revoked user left behind (a trigger, an index expression, a view) would run with them; name an unprivileged NOLOGIN role, leave the parameter out to use the holding role %s, or set allow_privileged_reassign=true to accept the risk", target, holdingRole)
	}
	return nil
}

// Type reports the database type to Vault.
func (p *Postgres) Type() (string, error) { return typeName, nil }

func hostList(pc *pgxpool.Config) string {
	hosts := []string{fmt.Sprintf("%s:%d", pc.ConnConfig.Host, pc.ConnConfig.Port)}
	for _, fb := range pc.ConnConfig.Fallbacks {
		h := fmt.Sprintf("%s:%d", fb.Host, fb.Port)
		if h != hosts[len(hosts)-1] {
			hosts = append(hosts, h)
		}
	}
	return strings.Join(hosts, ",")
}
