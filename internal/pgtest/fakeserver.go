package pgtest

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FakeServer is a man in the middle that speaks just enough of the
// PostgreSQL protocol to ask for the password in cleartext: it refuses TLS
// ('N' to SSLRequest) or, with a certificate of its own, accepts it
// (which sslmode=require and prefer take without checking the
// certificate); refuses GSSENCRequest; answers the StartupMessage with
// AuthenticationCleartextPassword, and a password message with 28P01. It
// records every byte clients send (over TLS: the plaintext before the
// handshake and the decrypted bytes after it). It needs no real server.
type FakeServer struct {
	ln        net.Listener
	tls       *tls.Config // nil: TLS is refused
	passwords chan string
	wg        sync.WaitGroup
	got       recorder
	conns     atomic.Int64
}

// recorder keeps what is written to it, for any number of writers.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// Protocol codes of the untyped startup-phase requests.
const (
	sslRequest    = 80877103
	gssEncRequest = 80877104
)

// NewFakeServer starts a FakeServer on a free loopback port; cert nil
// refuses TLS, otherwise the server accepts it with cert. Call Close (or
// Received) when done.
func NewFakeServer(cert *tls.Certificate) (*FakeServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &FakeServer{ln: ln, passwords: make(chan string, 16)}
	if cert != nil {
		f.tls = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Port is the loopback port the server listens on.
func (f *FakeServer) Port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// Passwords receives each password a client sent (up to 16 unread ones
// are kept), before the server answers it.
func (f *FakeServer) Passwords() <-chan string { return f.passwords }

// Received stops the server, waits for every connection to end and returns
// all the bytes clients sent and how many connections there were.
func (f *FakeServer) Received() (got string, conns int) {
	f.Close()
	return f.got.String(), int(f.conns.Load())
}

// Close stops the server and waits for every connection to end.
func (f *FakeServer) Close() {
	_ = f.ln.Close()
	f.wg.Wait()
}

func (f *FakeServer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.conns.Add(1)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer c.Close()
			f.serve(c)
		}()
	}
}

func (f *FakeServer) serve(c net.Conn) {
	// A guard against a client that never hangs up, not a timing assertion.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	conn, ok := f.startup(c)
	if !ok {
		return
	}
	// AuthenticationCleartextPassword: 'R', length 8, code 3.
	if _, err := conn.Write([]byte{'R', 0, 0, 0, 8, 0, 0, 0, 3}); err != nil {
		return
	}
	// Typed messages until the client hangs up; a password message gets an
	// authentication failure so a client that sent it stops waiting.
	r := io.TeeReader(conn, &f.got)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[1:]))
		if n < 4 || n > 1<<20 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		if hdr[0] == 'p' {
			select {
			case f.passwords <- strings.TrimRight(string(body), "\x00"):
			default:
			}
			_, _ = conn.Write(errorResponse("28P01", "password authentication failed"))
			return
		}
	}
}

// startup reads the untyped startup-phase messages up to the
// StartupMessage: SSLRequest is refused or, with a certificate, answered
// with the TLS handshake; GSSENCRequest is refused. It returns the
// connection the session goes on over (c, or TLS over it).
func (f *FakeServer) startup(c net.Conn) (net.Conn, bool) {
	conn := c
	for {
		var hdr [8]byte
		r := io.TeeReader(conn, &f.got)
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, false
		}
		n := int(binary.BigEndian.Uint32(hdr[:4]))
		code := binary.BigEndian.Uint32(hdr[4:])
		if n < 8 {
			return nil, false
		}
		if _, err := io.CopyN(io.Discard, r, int64(n-8)); err != nil {
			return nil, false
		}
		switch {
		case code == sslRequest && f.tls != nil && conn == c:
			if _, err := c.Write([]byte{'S'}); err != nil {
				return nil, false
			}
			conn = tls.Server(c, f.tls)
		case code == sslRequest || code == gssEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, false
			}
		default:
			return conn, true
		}
	}
}

// errorResponse is a FATAL ErrorResponse message with SQLSTATE code.
func errorResponse(code, msg string) []byte {
	var body bytes.Buffer
	for _, fld := range []struct {
		k byte
		v string
	}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', code}, {'M', msg}} {
		body.WriteByte(fld.k)
		body.WriteString(fld.v)
		body.WriteByte(0)
	}
	body.WriteByte(0)
	out := []byte{'E', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(body.Len()+4))
	return append(out, body.Bytes()...)
}
