package postgres

// NewUser: render the creation statements, run them in one transaction with
// the label, roll back after a failure.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// NewUser creates a user from the role's creation statements, all in one
// transaction: any failure leaves no role behind.
func (p *Postgres) NewUser(ctx context.Context, req dbplugin.NewUserRequest) (dbplugin.NewUserResponse, error) {
	st, err := p.acquire()
	if err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	defer st.release()
	if req.CredentialType == dbplugin.CredentialTypeClientCertificate {
		return p.newCertUser(ctx, st, req) // certs.go
	}
	if req.CredentialType != dbplugin.CredentialTypePassword {
		return dbplugin.NewUserResponse{}, fmt.Errorf("credential type %q is not supported; use password or client_certificate", req.CredentialType)
	}
	if !hasStatements(req.Statements.Commands) {
		return dbplugin.NewUserResponse{}, errors.New("the role has no creation_statements: add e.g. CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';")
	}
	if req.Password == "" {
		return dbplugin.NewUserResponse{}, errors.New("no password was generated for the new user")
	}
	username, err := st.username.Generate(req.UsernameConfig)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("generating username: %w", err)
	}
	username = safeUsername(username)
	if err := checkUsername(username); err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("username_template %w", err)
	}
	if err := st.reservedName(username, "change username_template so that a display name cannot make it"); err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	verifier, err := st.passwordFor(ctx, username, req.Password)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("creating user %q: %w", username, err)
	}
	vals := render.NewValues(username).WithPassword(verifier).WithExpiration(req.Expiration)
	sql, err := render.Render(req.Statements.Commands, vals)
	if err != nil {
		return dbplugin.NewUserResponse{}, fmt.Errorf("creation_statements: %w", err)
	}
	if err := p.createLabelled(ctx, st, req, username, sql, vals, req.Password, verifier); err != nil {
		return dbplugin.NewUserResponse{}, err
	}
	p.logger.Debug("created user", "username", username)
	return dbplugin.NewUserResponse{Username: username}, nil
}

// createLabelled runs the rendered creation statements with the label
// appended (labels.go), and the rollback statements after a failure. The
// error names the user and hides secrets, the password and its verifier.
func (p *Postgres) createLabelled(ctx context.Context, st *state, req dbplugin.NewUserRequest, username, sql string, vals render.Values, secrets ...string) error {
	label, err := st.labelStatement(username, req)
	if err != nil {
		return err
	}
	if err := p.create(ctx, st, username, sql+label); err != nil {
		p.rollback(ctx, st, req.RollbackStatements.Commands, vals)
		return st.failed(fmt.Sprintf("creating user %q", username), err, secrets...)
	}
	return nil
}

// create runs the creation statements. When the connection is lost, the
// creation runs again on a fresh connection only when that is safe: nothing
// was sent, or the session that got it has ended and the role does not exist
// (the statements are one transaction, so a role that exists means all of
// them committed, and that is success).
func (p *Postgres) create(ctx context.Context, st *state, username, sql string) error {
	tag, err := st.execPooled(ctx, sql)
	unknown := func(lost, checkErr error) error {
		return joined(st.describe(lost)+"; reconnecting to find out whether the creation committed failed: "+describe(checkErr), lost, checkErr)
	}
	for attempt := 0; attempt < connRetries && connLost(err) && ctx.Err() == nil; attempt++ {
		if tag != "" && !pgconn.SafeToRetry(err) {
			if eerr := st.endSession(ctx, st.poolCfg.ConnConfig.User, tag); eerr != nil {
				return unknown(err, eerr)
			}
			exists, cerr := st.roleExists(ctx, username)
			if cerr != nil {
				return unknown(err, cerr)
			}
			if exists {
				p.logger.Warn("the connection was lost after the creation was sent; the user exists, so it committed", "username", username)
				return nil
			}
		}
		p.logger.Debug("connection lost; creating the user again on a fresh connection", "username", username, "error", describe(err))
		tag, err = st.execPooled(ctx, sql)
	}
	return err
}

// rollback runs the role's rollback_statements after a failed creation. The
// creation itself is one transaction, so PostgreSQL has already undone it;
// rollback statements only matter for side effects outside the database's
// transaction (dblink, NOTIFY consumers, external tables), and a role that
// no longer exists is not an error.
func (p *Postgres) rollback(ctx context.Context, st *state, stmts []string, vals render.Values) {
	if !hasStatements(stmts) {
		return
	}
	sql, err := render.Render(stmts, vals)
	if err == nil {
		err = st.exec(ctx, st.pool, sql)
	}
	if err != nil && sqlState(err) != pgerrcode.UndefinedObject {
		p.logger.Warn("rollback_statements failed", "username", vals.Username, "error", redact(describe(err), vals.Password))
	}
}

// passwordFor returns the form of password to render into {{password}}.
func (st *state) passwordFor(ctx context.Context, username, password string) (string, error) {
	iterations := 0
	switch st.cfg.PasswordAuthentication {
	case passwordAuthAuto, passwordAuthSCRAM:
		var err error
		if iterations, err = st.serverSCRAMIterations(ctx); err != nil {
			return "", err
		}
	}
	return passwordVerifier(st.cfg.PasswordAuthentication, iterations, username, password)
}

// scramIterationsSQL is the scram_iterations a fresh session of the
// plugin's user has (pg_settings' reset_val: what RESET, and so
// sessionReset, gives every request), not what a previous request may have
// SET on the pooled connection; NULL before PostgreSQL 16.
const scramIterationsSQL = "(SELECT reset_val::bigint FROM pg_catalog.pg_settings WHERE name OPERATOR(pg_catalog.=) 'scram_iterations')"

// serverSCRAMIterations reads the server's scram_iterations once and caches
// it; concurrent first reads are harmless. A verifier hashed with the
// server's count costs what the server's own hashing would: an operator who
// raised it gets the stronger verifier.
func (st *state) serverSCRAMIterations(ctx context.Context) (int, error) {
	if n := st.scramIterations.Load(); n > 0 {
		return int(n), nil
	}
	var n *int64
	if err := st.pool.QueryRow(ctx, "SELECT "+scramIterationsSQL).Scan(&n); err != nil {
		return 0, failed("reading scram_iterations", err)
	}
	return st.storeSCRAMIterations(n), nil
}

// storeSCRAMIterations caches n, or PostgreSQL's fixed count where the
// server has no scram_iterations (nil), and returns what it cached.
func (st *state) storeSCRAMIterations(n *int64) int {
	v := int64(defaultSCRAMIterations)
	if n != nil && *n > 0 {
		v = *n
	}
	st.scramIterations.Store(v)
	return int(v)
}

func hasStatements(stmts []string) bool {
	for _, s := range stmts {
		if strings.TrimSpace(s) != "" {
			return true
		}
	}
	return false
}

func orDefault(stmts []string, def string) []string {
	if hasStatements(stmts) {
		return stmts
	}
	return []string{def}
}

// reservedName refuses a new user named after a role the revocation needs:
// the holding role or reassign_owned_to (a user of that name would receive
// what revoked users own, and could never be revoked itself), or the
// connection's user. A username template that lets a display name be the
// whole name could otherwise make one; fix says what to change.
func (st *state) reservedName(username, fix string) error {
	for _, r := range []struct{ name, what string }{
		{holdingRole, "the holding role revoked users' objects go to"},
		{st.cfg.reassignTarget(), "reassign_owned_to"},
		{st.poolCfg.ConnConfig.User, "the user the plugin connects as"},
	} {
		if username == r.name {
			return fmt.Errorf("creating user %q: the name is that of %s: %s", username, r.what, fix)
		}
	}
	return nil
}
