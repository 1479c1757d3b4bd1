package postgres

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
)

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

// TestCleartextPasswordRefusedOverUnverifiedTLS: sslmode=require (and
// prefer) encrypt without checking who answers, so a man in the middle with
// any certificate is as unproven as one that refuses TLS: the cleartext
// guard keeps the root password from it although the connection is TLS.
func TestCleartextPasswordRefusedOverUnverifiedTLS(t *testing.T) {
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
