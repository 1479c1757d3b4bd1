package postgres

// TLS to the database: the rules tls_ca and tls_certificate impose on
// sslmode (applyTLS), and the guard that refuses a server's request for a
// cleartext password over a connection that does not verify the server.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func (c *config) wantsTLS() bool { return c.TLSCA != "" || c.TLSCertificate != "" }

// applyTLS enforces the TLS rule: with tls_ca or tls_certificate set, every
// connection pgx may make (the primary host and each fallback) is TLS that
// verifies the server, or the configuration is refused with the reason. It
// installs the inline CA and client certificate on each of them. sslmode is
// the value connection_url gives, for messages ("" when it comes from the
// environment or a service file).
func (c *config) applyTLS(cc *pgx.ConnConfig, sslmode string) error {
	if !c.wantsTLS() {
		return nil
	}
	var roots *x509.CertPool
	if c.TLSCA != "" {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(c.TLSCA)) {
			return errors.New("tls_ca holds no PEM certificate")
		}
	}
	var certs []tls.Certificate
	if c.TLSCertificate != "" {
		cert, err := tls.X509KeyPair([]byte(c.TLSCertificate), []byte(c.PrivateKey))
		if err != nil {
			return fmt.Errorf("tls_certificate/private_key: %w", err)
		}
		certs = []tls.Certificate{cert}
	}
	mode := "sslmode=" + sslmode
	if sslmode == "" {
		mode = "the sslmode in effect (PGSSLMODE or a service file)"
	}
	targets := append([]*pgconn.FallbackConfig{{Host: cc.Host, Port: cc.Port, TLSConfig: cc.TLSConfig}}, cc.Fallbacks...)
	for _, t := range targets {
		if t.TLSConfig != nil {
			continue
		}
		if network, _ := pgconn.NetworkAddress(t.Host, t.Port); network == "unix" {
			return fmt.Errorf("tls_ca/tls_certificate are set but host %s is a Unix socket, which has no TLS: connect over TCP, or remove tls_ca/tls_certificate", t.Host)
		}
		return fmt.Errorf("tls_ca/tls_certificate are set but %s lets the connection to %s:%d go without TLS: set sslmode=verify-full (or verify-ca) in connection_url", mode, t.Host, t.Port)
	}
	for _, t := range targets {
		tc := t.TLSConfig
		switch {
		case roots != nil:
			tc.RootCAs = roots
			if tc.InsecureSkipVerify {
				// require and verify-ca check the chain but not the host
				// name, as libpq does with a CA. pgx's own check reads
				// the pool of the configuration it was built for; this
				// one holds tls_ca itself, so copies and an sslrootcert
				// in the URL cannot change what verifies the server.
				tc.VerifyPeerCertificate = verifyChain(roots)
			}
		case tc.InsecureSkipVerify && tc.VerifyPeerCertificate == nil:
			// require without any CA encrypts but accepts any server.
			return fmt.Errorf("tls_certificate is set but %s does not verify the server's certificate: set tls_ca, or use sslmode=verify-full to verify against the system's CAs", mode)
		}
		tc.Certificates = certs
	}
	return nil
}

// sslmodeSetting returns the sslmode connection_url (a URL or keyword/value
// string) sets, and whether one is set there or in the environment
// (PGSSLMODE, or a service file that may set it).
func sslmodeSetting(connString string) (string, bool) {
	var settings map[string]string
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", false // pgx reports the parse error
		}
		settings = map[string]string{}
		for k, v := range u.Query() {
			settings[k] = v[0]
		}
	} else {
		settings = keywordValueSettings(connString)
	}
	if mode, ok := settings["sslmode"]; ok {
		return mode, true
	}
	for _, env := range []string{"PGSSLMODE", "PGSERVICE"} {
		if os.Getenv(env) != "" {
			return "", true
		}
	}
	_, service := settings["service"]
	return "", service
}

// keywordValueSettings splits a keyword/value connection string the way
// pgconn does (values unquoted or in '…', with backslash escapes); it only
// reads the keys, so a malformed string yields what it could read.
func keywordValueSettings(s string) map[string]string {
	const space = " \t\n\r\v\f"
	settings := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.Trim(s[:eq], space)
		s = strings.TrimLeft(s[eq+1:], space)
		quoted := len(s) > 0 && s[0] == '\''
		if quoted {
			s = s[1:]
		}
		end := 0
		for ; end < len(s); end++ {
			if quoted && s[end] == '\'' || !quoted && strings.IndexByte(space, s[end]) >= 0 {
				break
			}
			if s[end] == '\\' {
				end++
			}
		}
		if end > len(s) {
			end = len(s)
		}
		val := strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(s[:end])
		settings[key] = val
		if end < len(s) {
			s = s[end+1:]
		} else {
			s = ""
		}
	}
	return settings
}

// withSSLMode adds sslmode to a connection string that has none.
func withSSLMode(connString, mode string) string {
	if !strings.HasPrefix(connString, "postgres://") && !strings.HasPrefix(connString, "postgresql://") {
		return connString + " sslmode=" + mode
	}
	frag := ""
	if i := strings.IndexByte(connString, '#'); i >= 0 {
		connString, frag = connString[:i], connString[i:]
	}
	sep := "?"
	if strings.Contains(connString, "?") {
		sep = "&"
	}
	return connString + sep + "sslmode=" + mode + frag
}

// guardedFrontend is pgconn's BuildFrontend with a guard on connections
// without TLS: pgconn passes the connection it writes to, a *tls.Conn once
// TLS is up, so the guard knows the channel before the server speaks.
func guardedFrontend(r io.Reader, w io.Writer) *pgproto3.Frontend {
	if _, isTLS := w.(*tls.Conn); !isTLS {
		r = &cleartextGuard{r: r, addr: remoteAddr(w), channel: "a connection without TLS"}
	}
	return pgproto3.NewFrontend(r, w)
}

// guardedFrontendAll guards every connection, TLS included: it serves
// configurations where TLS does not verify the server (sslmode=require or
// prefer without a CA), which a man in the middle answers with a
// certificate of its own.
func guardedFrontendAll(r io.Reader, w io.Writer) *pgproto3.Frontend {
	channel := "a connection without TLS"
	if _, isTLS := w.(*tls.Conn); isTLS {
		channel = "TLS that does not verify the server's certificate"
	}
	return pgproto3.NewFrontend(&cleartextGuard{r: r, addr: remoteAddr(w), channel: channel}, w)
}

func remoteAddr(w io.Writer) string {
	if nc, ok := w.(net.Conn); ok {
		return nc.RemoteAddr().String()
	}
	return "the server"
}

// unverifiedTLS reports whether a connection pgx may make (the primary host
// or a fallback) uses TLS without checking the server's certificate.
func unverifiedTLS(cc *pgx.ConnConfig) bool {
	unverified := func(tc *tls.Config) bool {
		return tc != nil && tc.InsecureSkipVerify && tc.VerifyPeerCertificate == nil
	}
	if unverified(cc.TLSConfig) {
		return true
	}
	for _, fb := range cc.Fallbacks {
		if unverified(fb.TLSConfig) {
			return true
		}
	}
	return false
}

// cleartextGuard reads the backend's messages (a type byte, an int32 length
// counting itself, the body) until the session is ready, and fails the read
// that brings an AuthenticationCleartextPassword ('R', code 3), so pgconn
// never answers it with the password.
type cleartextGuard struct {
	r       io.Reader
	addr    string
	channel string // what the connection is, for the error
	done    bool   // ReadyForQuery seen: authentication is over

	hdr    [5]byte // type and length of the current message
	hdrLen int
	body   int    // body bytes of the current message not yet seen
	code   []byte // first bytes of an 'R' body: the authentication code
}

func (g *cleartextGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if !g.done && n > 0 {
		if gerr := g.inspect(p[:n]); gerr != nil {
			return 0, gerr
		}
	}
	return n, err
}

func (g *cleartextGuard) inspect(b []byte) error {
	for len(b) > 0 && !g.done {
		if g.hdrLen < len(g.hdr) {
			k := copy(g.hdr[g.hdrLen:], b)
			g.hdrLen += k
			b = b[k:]
			if g.hdrLen < len(g.hdr) {
				return nil
			}
			g.body = int(binary.BigEndian.Uint32(g.hdr[1:])) - 4
			g.code = g.code[:0]
			if g.body < 0 {
				return fmt.Errorf("server %s sent a malformed message", g.addr)
			}
		}
		k := min(g.body, len(b))
		if g.hdr[0] == 'R' && len(g.code) < 4 {
			g.code = append(g.code, b[:min(k, 4-len(g.code))]...)
			if len(g.code) == 4 && binary.BigEndian.Uint32(g.code) == 3 {
				channel := g.channel
				if channel == "" {
					channel = "a connection without TLS"
				}
				return fmt.Errorf("server %s asked for the password in cleartext over %s; refused so the password is not exposed: use verified TLS (sslmode=verify-full), or set allow_cleartext_password=true", g.addr, channel)
			}
		}
		g.body -= k
		b = b[k:]
		if g.body == 0 {
			g.done = g.hdr[0] == 'Z'
			g.hdrLen = 0
		}
	}
	return nil
}

func verifyChain(roots *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("server sent no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}
