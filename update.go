package postgres

// UpdateUser: password and expiration changes for renewal, static-role and
// root rotation, settled after a lost reply.

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

// Default statements, used when a role or Vault sends none.
const (
	defaultChangePassword   = `ALTER ROLE "{{username}}" WITH PASSWORD '{{password}}';`
	defaultChangeExpiration = `ALTER ROLE "{{username}}" VALID UNTIL '{{expiration}}';`
)

// UpdateUser changes a user's password and/or expiration in one transaction.
// It serves static-role rotation and root rotation alike.
func (p *Postgres) UpdateUser(ctx context.Context, req dbplugin.UpdateUserRequest) (dbplugin.UpdateUserResponse, error) {
	st, err := p.acquire()
	if err != nil {
		return dbplugin.UpdateUserResponse{}, err
	}
	defer st.release()
	if req.Username == "" {
		return dbplugin.UpdateUserResponse{}, errors.New("no username given")
	}
	if err := checkUpdateCredential(req); err != nil {
		return dbplugin.UpdateUserResponse{}, err
	}
	if req.Password == nil && req.Expiration == nil {
		return dbplugin.UpdateUserResponse{}, errors.New("no change requested: give a new password or expiration")
	}
	sql, vals, err := st.updateSQL(ctx, req)
	if err != nil {
		return dbplugin.UpdateUserResponse{}, err
	}
	newPassword := ""
	if req.Password != nil {
		newPassword = req.Password.NewPassword
	}
	if err := p.runUpdate(ctx, st, req, sql, newPassword); err != nil {
		// "does not exist" may be about another object the statements
		// name: it is the user's only when the user is missing.
		if sqlState(err) == pgerrcode.UndefinedObject {
			if exists, cerr := st.roleExists(ctx, req.Username); cerr == nil && !exists {
				return dbplugin.UpdateUserResponse{}, fmt.Errorf("updating user %q: the user does not exist in the database", req.Username)
			}
		}
		return dbplugin.UpdateUserResponse{}, st.failed(fmt.Sprintf("updating user %q", req.Username), err, newPassword, vals.Password, req.SelfManagedPassword)
	}
	p.logger.Debug("updated user", "username", req.Username, "password", req.Password != nil, "expiration", req.Expiration != nil)
	return dbplugin.UpdateUserResponse{}, nil
}

// updateSQL renders the password and expiration statements of an update
// and the relabel of a renewal. Nothing checks first that the role exists:
// rotation statements may create it, or change a user that is not a role
// (an application's credentials table), as with the built-in plugin.
func (st *state) updateSQL(ctx context.Context, req dbplugin.UpdateUserRequest) (string, render.Values, error) {
	vals := render.NewValues(req.Username)
	var stmts []string
	if req.Password != nil {
		if req.Password.NewPassword == "" {
			return "", vals, errors.New("the new password is empty")
		}
		verifier, err := st.passwordFor(ctx, req.Username, req.Password.NewPassword)
		if err != nil {
			return "", vals, fmt.Errorf("updating user %q: %w", req.Username, err)
		}
		vals = vals.WithPassword(verifier)
		stmts = append(stmts, orDefault(req.Password.Statements.Commands, defaultChangePassword)...)
	}
	if req.Expiration != nil {
		vals = vals.WithExpiration(req.Expiration.NewExpiration)
		stmts = append(stmts, orDefault(req.Expiration.Statements.Commands, defaultChangeExpiration)...)
	}
	sql, err := render.Render(stmts, vals)
	if err != nil {
		return "", vals, fmt.Errorf("rotation statements: %w", err)
	}
	label, err := relabelStatement(req)
	if err != nil {
		return "", vals, err
	}
	return sql + label, vals, nil
}

// runUpdate runs an update's statements, as the plugin or, for a
// self-managed static role, as the user itself, again on a fresh connection
// after a lost one when that is safe.
func (p *Postgres) runUpdate(ctx context.Context, st *state, req dbplugin.UpdateUserRequest, sql, newPassword string) error {
	sessionUser := st.poolCfg.ConnConfig.User
	if req.SelfManagedPassword != "" {
		sessionUser = req.Username
	}
	run := func() (string, error) {
		if req.SelfManagedPassword != "" {
			return st.execAs(ctx, req.Username, req.SelfManagedPassword, sql)
		}
		return st.execPooled(ctx, sql)
	}
	tag, err := run() // tag: marks the session the statements went to; "" if none
	for attempt := 0; attempt < connRetries && connLost(err) && ctx.Err() == nil; attempt++ {
		if req.Password != nil && tag != "" && !pgconn.SafeToRetry(err) {
			// Vault keeps whichever password we report: answer with what
			// the database holds, or Vault is locked out.
			err = st.settleRotation(ctx, req.Username, newPassword, sessionUser, tag, err)
			if err == nil {
				p.logger.Warn("the connection was lost after the password change was sent; the new password works, so the change took effect", "username", req.Username)
				break
			}
			if !errors.Is(err, errNotApplied) {
				break
			}
		}
		// Nothing was sent, the change provably did not apply, or it only
		// sets an expiration (the same again is harmless): run it again.
		p.logger.Debug("connection lost; updating the user again on a fresh connection", "username", req.Username)
		tag, err = run()
	}
	return err
}

// errNotApplied says a password change whose reply was lost provably did not
// take effect, so running it again is safe.
var errNotApplied = errors.New("the connection was lost after the change was sent, and the password was not changed (the new one is refused)")

// settleRotation answers a password change whose reply was lost with what
// the database holds. A login with the new password proves the change
// committed. Otherwise the session that sent it (tag, logged in as
// sessionUser) is ended and awaited, so that its transaction is final, and
// the passwords are tried again: the new one refused and the old one
// accepted prove nothing changed, and cause is reported. Anything else is an
// error that says the outcome is unknown, and why.
func (st *state) settleRotation(ctx context.Context, user, newPassword, sessionUser, tag string, cause error) error {
	if st.loginAs(ctx, user, newPassword) == nil {
		return nil
	}
	ended := st.endSession(ctx, sessionUser, tag)
	newErr := st.loginAs(ctx, user, newPassword)
	if newErr == nil {
		return nil
	}
	if ended == nil && sqlState(newErr) == pgerrcode.InvalidPassword {
		// The session that sent the change has ended, so its transaction is
		// final, and the new password is refused: the change did not apply.
		return joined(errNotApplied.Error()+": "+st.describe(cause), errNotApplied, cause)
	}
	why := []string{"logging in with the new password failed: " + describe(newErr)}
	if ended != nil {
		why = append(why, "the session that sent the change may still be running: "+describe(ended))
	}
	return joined(fmt.Sprintf("the connection was lost after the change was sent, and whether it took effect is unknown (%s): %s; find out which password works before rotating again",
		strings.Join(why, "; "), st.describe(cause)), cause, newErr, ended)
}
