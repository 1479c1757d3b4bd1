package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	dbtesting "github.com/hashicorp/vault/sdk/database/dbplugin/v5/testing"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// TestFailover: a primary and its streaming replica, both in connection_url
// with target_session_attrs=read-write. The primary crashes: while only the
// standby is up, creation fails with an error naming both hosts and why,
// and no user is made anywhere. The standby is promoted: the plugin follows
// by itself and every operation works on the new primary.
func TestFailover(t *testing.T) {
	needPG(t)
	t.Parallel()
	// Two clusters to start and a promotion: more than testCtx's minute.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	primary, standby := startPrimaryAndStandby(t, ctx)
	db := newDB(t, map[string]interface{}{
		"connection_url": failoverURL(primary, standby),
		"username":       primary.SuperUser,
		"password":       primary.SuperPassword,
	})
	onPrimary := serverPool(t, primary)
	onStandby := serverPool(t, standby)

	// Requests work on the primary, and what they do reaches the standby.
	cycleOn(t, db, primary, onPrimary)
	req := newUserReq(createStmt)
	kept := dbtesting.AssertNewUser(t, db, req).Username
	waitRole(t, onStandby, kept)

	if err := primary.Crash(); err != nil {
		t.Fatal(err)
	}
	onPrimary.Close()
	display := assertCreationFailsOnStandbyAlone(t, ctx, db, primary, standby)

	var promoted bool
	if err := onStandby.QueryRow(ctx, "SELECT pg_promote()").Scan(&promoted); err != nil || !promoted {
		t.Fatalf("promoting the standby: %v (promoted %v)", err, promoted)
	}

	// The plugin follows by itself: no new configuration, no restart.
	var user string
	after := newUserReq(createStmt)
	err := pgtest.Poll(ctx, 30*time.Second, 250*time.Millisecond, func() error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := db.NewUser(rctx, after)
		user = resp.Username
		return err
	})
	if err != nil {
		t.Fatalf("NewUser after the promotion: %v", err)
	}
	assertLoginOn(t, standby, user, after.Password)
	dbtesting.AssertDeleteUser(t, db, dbplugin.DeleteUserRequest{Username: user})
	cycleOn(t, db, standby, onStandby)
	// The user made before the crash came across; the plugin manages it.
	rotateAndRevokeOn(t, db, standby, onStandby, kept)
	var n int
	if err := onStandby.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", "v-"+display[:8]+"-%").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d roles from the attempt against the read-only standby exist on the new primary (%v)", n, err)
	}
}

// startPrimaryAndStandby starts a primary of its own and a streaming
// replica of it, or skips where no replica can be made.
func startPrimaryAndStandby(t *testing.T, ctx context.Context) (primary, standby *pgtest.Server) {
	t.Helper()
	primary, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatalf("starting a separate primary: %v", err)
	}
	t.Cleanup(func() { _ = primary.Stop() })
	standby, err = pgtest.StartReplica(ctx, primary)
	if errors.Is(err, pgtest.ErrNoReplica) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = standby.Stop() }) // runs before the primary's Stop
	t.Logf("primary %s:%d, standby %s", primary.Host, primary.Port, standby.Source)
	return primary, standby
}

// assertCreationFailsOnStandbyAlone checks, while only the standby is up,
// that creation fails, clearly, and creates nobody (the standby would refuse
// the write anyway; the point is that the plugin says why instead of a bare
// "read-only transaction"). Twice: the first attempt meets the pool's dead
// connections, the second only fresh connection attempts. It returns the
// display name the attempts used.
func assertCreationFailsOnStandbyAlone(t *testing.T, ctx context.Context, db *Postgres, primary, standby *pgtest.Server) string {
	t.Helper()
	display := "ro" + randSuffix()
	primaryAddr := net.JoinHostPort(primary.Host, strconv.Itoa(primary.Port))
	standbyAddr := net.JoinHostPort(standby.Host, strconv.Itoa(standby.Port))
	for attempt := 1; attempt <= 2; attempt++ {
		roReq := newUserReq(createStmt)
		roReq.UsernameConfig.DisplayName = display
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := db.NewUser(rctx, roReq)
		rcancel()
		if err == nil {
			t.Fatal("NewUser succeeded with only a read-only standby up")
		}
		t.Logf("attempt %d with only the standby up: %v", attempt, err)
		msg := err.Error()
		if !strings.Contains(msg, primaryAddr) || !strings.Contains(msg, "connection refused") ||
			!strings.Contains(msg, standbyAddr) || !strings.Contains(msg, "read only") {
			t.Fatalf("error does not say that %s refused and %s is read-only: %v", primaryAddr, standbyAddr, err)
		}
		if strings.Contains(msg, roReq.Password) || strings.Contains(msg, primary.SuperPassword) {
			t.Fatalf("error holds a password: %v", err)
		}
	}
	return display
}

// failoverURL is a connection_url naming both servers, for the one that
// accepts writes.
func failoverURL(servers ...*pgtest.Server) string {
	var hosts []string
	for _, s := range servers {
		hosts = append(hosts, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
	}
	q := url.Values{"sslmode": {servers[0].SSLMode}, "target_session_attrs": {"read-write"}}
	if servers[0].CAFile != "" {
		q.Set("sslrootcert", servers[0].CAFile)
	}
	return fmt.Sprintf("postgres://{{username}}:{{password}}@%s/%s?%s", strings.Join(hosts, ","), servers[0].Database, q.Encode())
}

// serverPool is a superuser pool on s, for checks from outside the plugin.
func serverPool(t *testing.T, s *pgtest.Server) *pgxpool.Pool {
	t.Helper()
	p, err := s.Pool(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// waitRole waits until the role has replicated to a.
func waitRole(t *testing.T, a *pgxpool.Pool, name string) {
	t.Helper()
	err := pgtest.Poll(testCtx(t), 20*time.Second, 50*time.Millisecond, func() error {
		if !roleExists(t, a, name) {
			return fmt.Errorf("role %q has not reached the standby", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
