package postgres

// Adversarial review of issue 7: each test here is an attack that once worked
// (or still does, where it is skipped with the finding).

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestReviewQuotedLanguageName: DO takes its language as a name or a string
// (DO LANGUAGE 'plpgsql' $$…$$, the quoted form older scripts use). After a
// quoted language name the renderer took the body for data and pasted values
// verbatim into PL/pgSQL code.
func TestReviewQuotedLanguageName(t *testing.T) {
	v := newTemplateValues(`n"'`).withPassword(`p'`)
	for _, tc := range []struct{ in, want string }{
		{`DO LANGUAGE 'plpgsql' $$ BEGIN PERFORM '{{password}}', {{name}}; END $$`, `DO LANGUAGE 'plpgsql' $$ BEGIN PERFORM 'p''', "n""'"; END $$`},
		{`DO LANGUAGE E'plpgsql' 'BEGIN PERFORM ''{{password}}''; END'`, `DO LANGUAGE E'plpgsql' 'BEGIN PERFORM ''p''''''; END'`},
	} {
		got, err := renderSQL(tc.in, v)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("\n got %s\nwant %s", got, tc.want)
		}
	}

	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	user := "ql-" + randSuffix()
	password := fmt.Sprintf(`x'); CREATE TABLE %s(); END; --`, pwn)
	sql, err := renderStatements([]string{
		`CREATE ROLE "{{name}}";`,
		`DO LANGUAGE 'plpgsql' $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', '{{name}}', '{{password}}'); END $$;`,
	}, newTemplateValues(user).withPassword(password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+quoteIdent(user))
		_, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS "+quoteIdent(pwn))
	})
	assertCommentIsPassword(t, a, sql, pwn, user, password)
}

// assertCommentIsPassword runs rendered SQL that comments on user with
// password, and checks that the password stayed a value: no table pwn was
// made by it, and the comment holds it exactly.
func assertCommentIsPassword(t *testing.T, a *pgxpool.Pool, sql, pwn, user, password string) {
	t.Helper()
	err := execAtomic(testCtx(t), a, sql)
	var n int
	if qerr := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_class WHERE relname = $1", pwn).Scan(&n); qerr != nil || n != 0 {
		t.Fatalf("a password ran its own SQL (table %s exists)\n%s", pwn, sql)
	}
	if err != nil {
		t.Fatalf("rendered SQL failed: %v\n%s", err, sql)
	}
	if comment, _ := roleComment(t, a, user); comment != password {
		t.Fatalf("comment = %q, want the password\n%s", comment, sql)
	}
}

// TestReviewConformingStringsOffInRequest: PostgreSQL lexes a query string
// whole before running it, but code in strings (DO bodies, EXECUTE strings)
// is lexed when it runs, with the settings of that moment. A statement that
// turns standard_conforming_strings off makes the backslash of a value in a
// '…' string in later code an escape that the renderer did not double.
func TestReviewConformingStringsOffInRequest(t *testing.T) {
	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	user := "sc-" + randSuffix()
	password := fmt.Sprintf(`\'); CREATE TABLE %s(); END; --`, pwn)
	t.Cleanup(func() {
		_, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+quoteIdent(user))
		_, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS "+quoteIdent(pwn))
	})
	for _, off := range []string{
		`SET standard_conforming_strings = off;`,
		`SET LOCAL Standard_Conforming_Strings TO 'off';`,
		`SELECT set_config('standard_conforming_strings', 'off', true);`,
	} {
		sql, err := renderStatements([]string{
			`CREATE ROLE "{{name}}";`,
			off,
			`DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', '{{name}}', '{{password}}'); END $$;`,
		}, newTemplateValues(user).withPassword(password))
		if err != nil {
			if !strings.Contains(err.Error(), "standard_conforming_strings") {
				t.Errorf("%s: error does not say why: %v", off, err)
			}
			continue
		}
		_ = execAtomic(testCtx(t), a, sql)
		var n int
		if err := a.QueryRow(testCtx(t), "SELECT count(*) FROM pg_class WHERE relname = $1", pwn).Scan(&n); err != nil || n != 0 {
			t.Fatalf("after %s a password ran its own SQL (table %s exists)\n%s", off, pwn, sql)
		}
	}
}

// startFakeTLSPG is the man in the middle with a certificate of its own: it
// accepts TLS (which sslmode=require and prefer take without checking the
// certificate), asks for the password in cleartext and returns what the
// client answered.
func startFakeTLSPG(t *testing.T) (port int, got <-chan string) {
	t.Helper()
	_, certPEM, keyPEM := unrelatedCert(t)
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	out := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				var hdr [8]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[4:]) != 80877103 {
					return
				}
				if _, err := c.Write([]byte{'S'}); err != nil {
					return
				}
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				if _, err := io.ReadFull(tc, hdr[:4]); err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, tc, int64(binary.BigEndian.Uint32(hdr[:4]))-4); err != nil {
					return
				}
				if _, err := tc.Write([]byte{'R', 0, 0, 0, 8, 0, 0, 0, 3}); err != nil {
					return
				}
				var mh [5]byte
				if _, err := io.ReadFull(tc, mh[:]); err != nil || mh[0] != 'p' {
					return
				}
				body := make([]byte, binary.BigEndian.Uint32(mh[1:])-4)
				if _, err := io.ReadFull(tc, body); err != nil {
					return
				}
				out <- strings.TrimRight(string(body), "\x00")
				_, _ = tc.Write(errorResponse("28P01", "password authentication failed"))
			}(c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, out
}

// TestReviewCleartextPasswordOverUnverifiedTLS: sslmode=require (and prefer)
// encrypt without checking who answers, so a man in the middle with any
// certificate is as unproven as one that refuses TLS. The cleartext guard let
// the root password through to it because the connection was TLS.
func TestReviewCleartextPasswordOverUnverifiedTLS(t *testing.T) {
	for _, mode := range []string{"require", "prefer"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			port, got := startFakeTLSPG(t)
			password := "root-pw-" + randSuffix()
			db := newPostgres(hclog.NewNullLogger())
			defer db.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := db.Initialize(ctx, dbplugin.InitializeRequest{VerifyConnection: true, Config: map[string]interface{}{
				"connection_url": fmt.Sprintf("postgres://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=%s", port, mode),
				"username":       "vaultroot",
				"password":       password,
			}})
			if err == nil {
				t.Fatal("Initialize succeeded against the fake server")
			}
			select {
			case sent := <-got:
				if sent == password {
					t.Fatalf("the root password went in cleartext to a server whose certificate nobody checked (error: %v)", err)
				}
			default:
			}
			if !strings.Contains(err.Error(), "allow_cleartext_password") {
				t.Errorf("error does not name allow_cleartext_password: %v", err)
			}
		})
	}
}

// TestReviewExecuteFormatString: the first argument of EXECUTE format(…) and
// a parenthesized EXECUTE (…) string are code like a bare EXECUTE string. The
// renderer escaped a value there for the outer string only, so a quote in a
// password (password_authentication=password) or a static username ended the
// literal the value stands in when the command ran.
func TestReviewExecuteFormatString(t *testing.T) {
	needPG(t)
	a := admin(t)
	pwn := "pwn_" + randSuffix()
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS "+quoteIdent(pwn)) })
	for _, tc := range []struct{ stmt, password string }{
		{`DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS ''{{password}}''', '{{name}}'); END $$;`, fmt.Sprintf(`x'; CREATE TABLE %s(); --`, pwn)},
		{`DO $$ BEGIN EXECUTE ('COMMENT ON ROLE "{{name}}" IS ''{{password}}'''); END $$;`, fmt.Sprintf(`x'; CREATE TABLE %s(); --`, pwn)},
		// format() reads a % in the value as a directive: a password
		// with %% was stored as another one than reported.
		{`DO $$ BEGIN EXECUTE format('COMMENT ON ROLE %I IS ''{{password}}''', '{{name}}'); END $$;`, `50%%-off`},
	} {
		stmt, password := tc.stmt, tc.password
		user := "ef-" + randSuffix()
		t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+quoteIdent(user)) })
		sql, err := renderStatements([]string{`CREATE ROLE "{{name}}";`, stmt}, newTemplateValues(user).withPassword(password))
		if err != nil {
			t.Fatal(err)
		}
		assertCommentIsPassword(t, a, sql, pwn, user, password)
	}
}

// TestReviewTempObjectsDoNotOutliveRequest: a temporary table one request's
// statements create stays on the pooled session, and pg_temp comes first in
// the search path: the next request's GRANT on the real table of that name
// went to the leftover temporary one, silently.
func TestReviewTempObjectsDoNotOutliveRequest(t *testing.T) {
	db := newDB(t, map[string]interface{}{"max_open_connections": 1})
	a := admin(t)
	tbl := "orders_" + randSuffix()
	execSQL(t, a, "CREATE TABLE public."+tbl+" (id int)")
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP TABLE IF EXISTS public."+tbl) })

	first := newUserReq(createStmt, "CREATE TEMP TABLE "+tbl+" (id int);")
	if _, err := db.NewUser(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	second := newUserReq(createStmt, "GRANT SELECT ON "+tbl+" TO \"{{name}}\";")
	resp, err := db.NewUser(testCtx(t), second)
	if err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, resp.Username, second.Password, "")
	if _, err := c.Exec(testCtx(t), "SELECT * FROM public."+tbl); err != nil {
		t.Fatalf("the grant went elsewhere (a temporary table left by an earlier request?): %v", err)
	}
}
