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
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func (c *config) wantsTLS() bool { return c.TLSCA != "" || c.TLSCertificate != "" }

// tlsNames, certName and caName name the TLS parameters in the operator's
// words: tls_ca and tls_certificate, or connection_url's sslinline PEMs.
func (c *config) tlsNames() string {
	if c.inlineTLS {
		return "connection_url's sslinline certificates (sslrootcert/sslcert)"
	}
	return "tls_ca/tls_certificate"
}

func (c *config) certName() string {
	if c.inlineTLS {
		return "connection_url's sslcert (sslinline=true)"
	}
	return "tls_certificate"
}

func (c *config) caName() string {
	if c.inlineTLS {
		return "sslrootcert"
	}
	return "tls_ca"
}

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
	if sslmode == "prefer" || sslmode == "allow" {
		// The built-in puts the certificates on every attempt of these
		// modes, the one without TLS too, so it never goes without TLS:
		// here that attempt is dropped, and TLS checks tls_ca's chain.
		targets = withTLSOnly(cc, targets)
	}
	for _, t := range targets {
		if t.TLSConfig != nil {
			continue
		}
		if network, _ := pgconn.NetworkAddress(t.Host, t.Port); network == "unix" {
			return fmt.Errorf("%s are set but host %s is a Unix socket, which has no TLS: connect over TCP, or remove %s", c.tlsNames(), t.Host, c.tlsNames())
		}
		return fmt.Errorf("%s are set but %s lets the connection to %s:%d go without TLS: set sslmode=verify-full (or verify-ca) in connection_url", c.tlsNames(), mode, t.Host, t.Port)
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
			return fmt.Errorf("%s is set but %s does not verify the server's certificate: set %s, or use sslmode=verify-full to verify against the system's CAs", c.certName(), mode, c.caName())
		}
		tc.Certificates = certs
	}
	return nil
}

// withTLSOnly keeps the attempts of targets that use TLS, and makes them
// cc's host and fallbacks.
func withTLSOnly(cc *pgx.ConnConfig, targets []*pgconn.FallbackConfig) []*pgconn.FallbackConfig {
	var kept []*pgconn.FallbackConfig
	for _, t := range targets {
		if t.TLSConfig != nil {
			kept = append(kept, t)
		}
	}
	if len(kept) == 0 {
		return targets
	}
	cc.Host, cc.Port, cc.TLSConfig = kept[0].Host, kept[0].Port, kept[0].TLSConfig
	cc.Fallbacks = kept[1:]
	return kept
}

// takeInlineTLS serves connection_url's sslinline, a form Vault's built-in
// plugin takes (from pgx v4): with sslinline=true, sslrootcert, sslcert and
// sslkey hold PEMs, not file names. pgx v5 would read them as file names,
// and send sslinline to the server as a setting it does not know, so they
// leave connection_url here and become tls_ca, tls_certificate and
// private_key, whose rules (applyTLS) then hold: verified TLS on every
// connection, verify-full unless sslmode says otherwise. sslinline=false is
// only taken out. Everything else in connection_url stays byte for byte.
func (c *config) takeInlineTLS() error {
	settings := connSettings(c.ConnectionURL)
	v, ok := settings["sslinline"]
	if !ok {
		return nil
	}
	inline, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("connection_url: sslinline=%q is not true or false", v)
	}
	drop := map[string]bool{"sslinline": true}
	if inline {
		if err := c.setInlinePEMs(settings); err != nil {
			return err
		}
		drop["sslrootcert"], drop["sslcert"], drop["sslkey"] = true, true, true
		c.inlineTLS = c.wantsTLS()
	}
	c.ConnectionURL = withoutSettings(c.ConnectionURL, drop)
	return nil
}

// pemHint says how a PEM survives connection_url: a URL decodes + as a
// space, and raw newlines are not allowed in it.
const pemHint = `in a URL, percent-encode the PEM (newlines as %0A, "+" as %2B); in a keyword/value string, quote it ('…')`

// setInlinePEMs checks sslinline's PEMs and moves them to tls_ca,
// tls_certificate and private_key. Errors name the parameters and never
// quote a PEM.
func (c *config) setInlinePEMs(settings map[string]string) error {
	ca, cert, key := settings["sslrootcert"], settings["sslcert"], settings["sslkey"]
	switch {
	case settings["sslpassword"] != "":
		return errors.New("connection_url: sslpassword (an encrypted sslkey) is not supported with sslinline=true: give the decrypted key in sslkey, or as private_key")
	case ca != "" && c.TLSCA != "":
		return errors.New("connection_url's sslrootcert (sslinline=true) and tls_ca are both set: keep one")
	case (cert != "" || key != "") && (c.TLSCertificate != "" || c.PrivateKey != ""):
		return errors.New("connection_url's sslcert/sslkey (sslinline=true) and tls_certificate/private_key are both set: keep one pair")
	case (cert == "") != (key == ""):
		return errors.New("connection_url: with sslinline=true, sslcert and sslkey must be given together")
	}
	if ca != "" {
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(ca)) {
			return errors.New("connection_url's sslrootcert (sslinline=true) holds no PEM certificate: " + pemHint)
		}
		c.TLSCA = ca
	}
	if cert != "" {
		if _, err := tls.X509KeyPair([]byte(cert), []byte(key)); err != nil {
			// crypto/tls describes what is wrong without quoting the input.
			return fmt.Errorf("connection_url's sslcert/sslkey (sslinline=true): %w; %s", err, pemHint)
		}
		c.TLSCertificate, c.PrivateKey = cert, key
	}
	return nil
}

// isURL reports whether a connection string is a URL rather than
// keyword/value settings.
func isURL(connString string) bool {
	return strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://")
}

// splitURL cuts a URL where url.Parse does: the fragment at the first #,
// then the query at the first ?. It needs no valid URL: connection_url
// still holds its {{username}} and {{password}} placeholders.
func splitURL(u string) (base, query, fragment string) {
	if i := strings.IndexByte(u, '#'); i >= 0 {
		u, fragment = u[:i], u[i:]
	}
	base, query, _ = strings.Cut(u, "?")
	return base, query, fragment
}

// connSettings returns the query parameters of a URL, or the settings of a
// keyword/value string, decoded; of a repeated key, the one pgconn uses (in
// a URL the first, in keyword/value the last).
func connSettings(connString string) map[string]string {
	if !isURL(connString) {
		return keywordValueSettings(connString)
	}
	_, query, _ := splitURL(connString)
	q, _ := url.ParseQuery(query) // what it could read; pgx reports the rest
	settings := map[string]string{}
	for k, v := range q {
		settings[k] = v[0]
	}
	return settings
}

// withoutSettings returns connString without the settings named in drop,
// the rest of it unchanged.
func withoutSettings(connString string, drop map[string]bool) string {
	if isURL(connString) {
		base, query, fragment := splitURL(connString)
		var keep []string
		for _, p := range strings.Split(query, "&") {
			k, _, _ := strings.Cut(p, "=")
			if k, err := url.QueryUnescape(k); p == "" || err == nil && drop[k] {
				continue
			}
			keep = append(keep, p)
		}
		if len(keep) > 0 {
			base += "?" + strings.Join(keep, "&")
		}
		return base + fragment
	}
	var b strings.Builder
	last := 0
	for _, p := range keywordValuePairs(connString) {
		if drop[p.key] {
			b.WriteString(connString[last:p.start])
			last = p.end
		}
	}
	b.WriteString(connString[last:])
	return b.String()
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
	settings := map[string]string{}
	for _, p := range keywordValuePairs(s) {
		settings[p.key] = p.val
	}
	return settings
}

// kvPair is one setting of a keyword/value string: s[start:end] is the
// whole of it, key, =, value and quotes.
type kvPair struct {
	key, val   string
	start, end int
}

// keywordValuePairs reads the settings of a keyword/value string, in order.
func keywordValuePairs(s string) []kvPair {
	const space = " \t\n\r\v\f"
	var pairs []kvPair
	for i := 0; i < len(s); {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			break
		}
		start := len(s) - len(strings.TrimLeft(s[i:], space))
		key := strings.Trim(s[i:i+eq], space)
		j := len(s) - len(strings.TrimLeft(s[i+eq+1:], space))
		quoted := j < len(s) && s[j] == '\''
		if quoted {
			j++
		}
		end := j
		for ; end < len(s); end++ {
			if quoted && s[end] == '\'' || !quoted && strings.IndexByte(space, s[end]) >= 0 {
				break
			}
			if s[end] == '\\' {
				end++
			}
		}
		end = min(end, len(s))
		val := strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(s[j:end])
		stop := end
		if quoted {
			stop = min(end+1, len(s)) // the closing quote
		}
		pairs = append(pairs, kvPair{key: key, val: val, start: start, end: stop})
		i = min(end+1, len(s))
	}
	return pairs
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
	if _, isTLS := w.(*tls.Conn); !isTLS && !unixSocket(w) {
		r = &cleartextGuard{r: r, addr: remoteAddr(w), channel: "a connection without TLS"}
	}
	return pgproto3.NewFrontend(r, w)
}

// guardedFrontendAll guards every connection, TLS included: it serves
// configurations where TLS does not verify the server (sslmode=require or
// prefer without a CA), which a man in the middle answers with a
// certificate of its own.
func guardedFrontendAll(r io.Reader, w io.Writer) *pgproto3.Frontend {
	if unixSocket(w) {
		return pgproto3.NewFrontend(r, w)
	}
	channel := "a connection without TLS"
	if _, isTLS := w.(*tls.Conn); isTLS {
		channel = "TLS that does not verify the server's certificate"
	}
	return pgproto3.NewFrontend(&cleartextGuard{r: r, addr: remoteAddr(w), channel: channel}, w)
}

// unixSocket reports a connection over a Unix socket: it never leaves the
// host, so a password in the clear crosses no network (pg_hba's password,
// ldap, pam and radius methods ask for one), as libpq and the built-in
// plugin allow.
func unixSocket(w io.Writer) bool {
	nc, ok := w.(net.Conn)
	return ok && nc.RemoteAddr() != nil && nc.RemoteAddr().Network() == "unix"
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
