package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// The orphan reaper revokes roles this plugin created whose lease Vault has
// lost (a restored snapshot, a mount disabled with stuck leases, a forced
// lease revocation after a failed one). A live lease is revoked at its
// expiry, and every renewal moves the label's "expires", so a labelled role
// whose expiry is more than reap_orphans_after in the past has no lease
// left: revoking it with the default revocation is safe.
//
// Several plugin processes or Vault nodes may reap the same cluster. They
// take no lock to keep apart: any login can take any advisory lock, so a
// reaper that waited for one (or skipped its pass when one was held) could
// be switched off by a user, and a session-level lock does not survive a
// transaction-pooling PgBouncer. Passes are jittered, and two revocations of
// one role are safe: the later one finds it gone. Each role's revocation is
// bounded (reapRoleTimeout), so one stuck role cannot hold up the pass.

// maxReapInterval caps the time between two passes.
const maxReapInterval = 5 * time.Minute

// reapInterval is the time between two passes of p's reaper when
// reap_orphans_after is after. It is a variable so that the tests can
// choose it per plugin (reap_test.go sets it once, at init, before any
// reaper runs); p is there for them.
var reapInterval = func(p *Postgres, after time.Duration) time.Duration {
	return min(after, maxReapInterval)
}

// reapPassTimeout bounds one pass; a pass cut short resumes at the next.
const reapPassTimeout = 5 * time.Minute

// reapRoleTimeout bounds the revocation of one orphan; one that runs out
// is counted as failed and tried again at the next pass.
const reapRoleTimeout = 30 * time.Second

// orphanCandidatesSQL lists the roles whose comment may be a label of ours,
// with the server's clock, and whether the connection's user may drop them:
// a superuser any role; from PostgreSQL 16 a CREATEROLE user the roles it
// holds ADMIN OPTION on (those it created); before 16 a CREATEROLE user any
// role but a superuser. Comments are only read as text here: the label is
// parsed in Go (parseLabel), so no comment, JSON or not, can make the query
// fail. The connection's own user and the reassign_owned_to role ($1) are
// never candidates.
var orphanCandidatesSQL = mustFill(loadSQL("orphan_candidates.sql"), map[string]string{
	"managed_by": render.QuoteLiteral("%" + labelManagedBy + "%"),
})

// reaper is one connection's reaper goroutine.
type reaper struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startReaper starts the reaper of st when reap_orphans_after is set. It
// holds no reference to st between passes, so it never keeps a retired
// state alive; retire stops it before dropping the plugin's reference.
func (p *Postgres) startReaper(st *state) *reaper {
	after := st.cfg.ReapOrphansAfter
	if after <= 0 {
		return nil
	}
	every := reapInterval(p, after)
	// Not a request: the reaper lives as long as the state, and stop
	// cancels it.
	ctx, cancel := context.WithCancel(context.Background())
	r := &reaper{cancel: cancel, done: make(chan struct{})}
	go p.runReaper(ctx, st, every, r.done)
	return r
}

// stop cancels a pass in flight and waits for the goroutine to end. A pass
// cut short leaves at worst a role already NOLOGIN and still labelled, which
// the next pass (here or elsewhere) finishes.
func (r *reaper) stop() {
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
}

func (p *Postgres) runReaper(ctx context.Context, st *state, every time.Duration, done chan struct{}) {
	defer close(done)
	for {
		if sleepCtx(ctx, jittered(every)) != nil {
			return
		}
		// A state not yet published or already retired has no reference
		// to take; stop ends the loop soon after.
		if !st.ref() {
			continue
		}
		passCtx, cancel := context.WithTimeout(ctx, reapPassTimeout)
		_, err := p.reapOnce(passCtx, st)
		cancel()
		st.release()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.logger.Warn("orphan reaper: pass failed; the next one tries again", "error", err)
		}
	}
}

// jittered is a wait in (every/2, every], so reapers started together drift
// apart and the first pass comes within one interval.
func jittered(every time.Duration) time.Duration {
	if every < 2 {
		return every
	}
	return every - rand.N(every/2)
}

// reapResult is what one pass did.
type reapResult struct {
	expired  int // labelled roles found past expiry + reap_orphans_after
	beyond   int // of those, roles the connection's user may not drop
	reaped   int // of those, dropped
	disabled int // revoked but not dropped (see defaultRevoke)
	failed   int // revocation returned an error
}

func (r reapResult) log(p *Postgres) {
	level := p.logger.Debug
	if r.reaped+r.disabled+r.failed > 0 {
		level = p.logger.Info
	}
	level("orphan reaper: pass done", "expired", r.expired, "beyond_reach", r.beyond, "reaped", r.reaped, "disabled", r.disabled, "failed", r.failed)
}

// reapOnce runs one pass: it revokes every role labelled by this plugin
// whose expiry is more than reap_orphans_after in the past, by the server's
// clock. The caller holds a reference to st. A revocation that fails is
// logged and counted, and the pass goes on; a pass logs its summary.
func (p *Postgres) reapOnce(ctx context.Context, st *state) (res reapResult, err error) {
	orphans, err := st.listOrphans(ctx)
	if err != nil {
		return res, st.failed("listing labelled roles", err)
	}
	res.expired = len(orphans)
	for _, o := range orphans {
		if !o.canDrop {
			// Another admin's role (another mount, another Vault): its
			// reaper's to revoke. Counted, not warned about every pass.
			res.beyond++
			p.logger.Debug("orphan reaper: skipping an orphaned role the connection's user may not drop", "username", o.name)
			continue
		}
		if err := p.reapRole(ctx, st, o); err != nil {
			if ctx.Err() != nil {
				// Stopped, or out of time: the next pass resumes.
				return res, fmt.Errorf("pass cut short after %d of %d roles: %w", res.beyond+res.reaped+res.disabled+res.failed, len(orphans), ctx.Err())
			}
			res.failed++
			p.logger.Warn("orphan reaper: could not revoke an orphaned role", "username", o.name, "label", o.label, "error", err)
			continue
		}
		if exists, err := st.roleExists(ctx, o.name); err == nil && exists {
			res.disabled++ // defaultRevoke warned why
			continue
		}
		res.reaped++
		p.logger.Info("orphan reaper: revoked an orphaned role", "username", o.name, "label", o.label)
	}
	res.log(p)
	return res, nil
}

// reapRole revokes one orphan within reapRoleTimeout, taking a revocation
// slot as DeleteUser does.
func (p *Postgres) reapRole(ctx context.Context, st *state, o orphan) error {
	ctx, cancel := context.WithTimeout(ctx, reapRoleTimeout)
	defer cancel()
	release, err := st.revokeSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	return p.defaultRevoke(ctx, st, o.name)
}

// orphan is a labelled role past its expiry and the grace period.
type orphan struct {
	name, label string
	canDrop     bool
}

// listOrphans reads the candidates in a transaction of their own, as the
// configured user with the plugin's pinned search_path (asPlugin), SET LOCAL (so it holds behind a
// transaction-pooling PgBouncer): the session's path may hold a schema a
// dynamic user can create in, and the query must not find its functions or
// operators.
func (st *state) listOrphans(ctx context.Context) ([]orphan, error) {
	var out []orphan
	err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		// As the configured user (a pooled session may have been left in
		// SET ROLE by a role's statements: current_user decides canDrop).
		if _, err := tx.Exec(ctx, asPlugin); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, orphanCandidatesSQL, st.cfg.reassignTarget())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var o orphan
			var now time.Time
			if err := rows.Scan(&o.name, &o.label, &now, &o.canDrop); err != nil {
				return err
			}
			if expires, ok := parseLabel(o.label); ok && expires.Before(now.Add(-st.cfg.ReapOrphansAfter)) {
				out = append(out, o)
			}
		}
		return rows.Err()
	})
	return out, err
}
