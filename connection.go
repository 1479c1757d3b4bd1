package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/hashicorp/go-secure-stdlib/parseutil"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults, repeated in the README's parameter table.
const (
	defaultMaxOpenConnections = 4
	// defaultConnectTimeout bounds each connection attempt to each host
	// when connection_url sets no connect_timeout.
	defaultConnectTimeout = 10 * time.Second
	// pingTimeout bounds the liveness check of a pooled connection.
	pingTimeout              = 5 * time.Second
	defaultPasswordAuth      = passwordAuthAuto
	defaultTerminateSessions = true
	// defaultLabelRoles: roles NewUser creates carry a JSON comment.
	defaultLabelRoles = true
	// defaultAllowCleartextPassword: a server that asks for the password in
	// cleartext over a connection without TLS is refused unless the
	// operator allows it.
	defaultAllowCleartextPassword = false
	// defaultSSLModeWithTLS is the sslmode used when tls_ca or
	// tls_certificate is set and connection_url names none.
	defaultSSLModeWithTLS = "verify-full"
	// defaultLockTimeout bounds every lock wait of the plugin's sessions.
	// A revocation's REASSIGN/DROP OWNED waits for ACCESS EXCLUSIVE locks on
	// what the user owns, and every later query on those tables queues
	// behind it: this is how long an application can stall because of it.
	defaultLockTimeout = 3 * time.Second
	// retryAttempts bounds how often a transaction that failed transiently
	// (deadlock, concurrent catalog update) is run again.
	retryAttempts  = 8
	retryBaseDelay = 10 * time.Millisecond
)

// config is the plugin's connection configuration, decoded once from the map
// Vault stores. Field tags are the parameter names operators use.
type config struct {
	ConnectionURL          string        `mapstructure:"connection_url"`
	Username               string        `mapstructure:"username"`
	Password               string        `mapstructure:"password"`
	MaxOpenConnections     int           `mapstructure:"max_open_connections"`
	MaxIdleConnections     int           `mapstructure:"max_idle_connections"`
	MaxConnectionLifetime  time.Duration `mapstructure:"max_connection_lifetime"`
	UsernameTemplate       string        `mapstructure:"username_template"`
	DisableEscaping        bool          `mapstructure:"disable_escaping"`
	PasswordAuthentication string        `mapstructure:"password_authentication"`
	TLSCA                  string        `mapstructure:"tls_ca"`
	TLSCertificate         string        `mapstructure:"tls_certificate"`
	PrivateKey             string        `mapstructure:"private_key"`
	AuthType               string        `mapstructure:"auth_type"`
	ServiceAccountJSON     string        `mapstructure:"service_account_json"`
	TerminateSessions      bool          `mapstructure:"terminate_sessions"`
	ReassignOwnedTo        string        `mapstructure:"reassign_owned_to"`
	AllowCleartextPassword bool          `mapstructure:"allow_cleartext_password"`
	LockTimeout            time.Duration `mapstructure:"lock_timeout"`
	LabelRoles             bool          `mapstructure:"label_roles"`
	ReapOrphansAfter       time.Duration `mapstructure:"reap_orphans_after"`
}

// knownIgnoredKeys are keys Vault or older configurations may pass that this
// plugin accepts without acting on them.
var knownIgnoredKeys = map[string]bool{
	dbplugin.SupportedCredentialTypesKey: true,
	"verify_connection":                  true,
	"plugin_name":                        true,
	"plugin_version":                     true,
	"allowed_roles":                      true,
	"root_rotation_statements":           true,
	"password_policy":                    true,
	"use_private_ip":                     true,
}

// parseConfig decodes, validates and completes the raw configuration. It
// returns the keys it did not recognise so the caller can log them.
func parseConfig(raw map[string]interface{}) (*config, []string, error) {
	c, given, unknown, err := decodeConfig(raw)
	if err != nil {
		return nil, nil, err
	}
	// Validation reads the values as given, before defaults replace the
	// zero ones and max_idle_connections is capped at the pool size.
	if err := c.validate(); err != nil {
		return nil, nil, err
	}
	c.applyDefaults(raw, given)
	return c, unknown, nil
}

// decodeConfig decodes raw into a config, weakly typed (numbers arrive as
// float64 or strings over gRPC), with password_authentication in canonical
// form. given holds the keys decoded from a non-null value; unknown the keys
// the plugin neither uses nor knows to ignore, sorted.
func decodeConfig(raw map[string]interface{}) (c *config, given map[string]bool, unknown []string, err error) {
	c = &config{}
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           c,
		WeaklyTypedInput: true,
		Metadata:         &md,
		DecodeHook:       durationHook,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if err := dec.Decode(raw); err != nil {
		return nil, nil, nil, fmt.Errorf("invalid configuration: %w", err)
	}
	given = make(map[string]bool, len(md.Keys))
	for _, k := range md.Keys {
		given[k] = true
	}
	for _, k := range md.Unused {
		if !knownIgnoredKeys[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	c.PasswordAuthentication = strings.ToLower(strings.TrimSpace(c.PasswordAuthentication))
	return c, given, unknown, nil
}

// validate reports every mistake in the configuration as given, one error
// each, joined.
func (c *config) validate() error {
	var errs []error
	if strings.TrimSpace(c.ConnectionURL) == "" {
		errs = append(errs, errors.New("connection_url is required"))
	}
	switch c.AuthType {
	case "", "password":
	default:
		errs = append(errs, fmt.Errorf("auth_type %q is not supported by this plugin; remove it and authenticate with username and password", c.AuthType))
	}
	if c.ServiceAccountJSON != "" {
		errs = append(errs, errors.New("service_account_json (cloud IAM authentication) is not supported by this plugin"))
	}
	// pgxpool counts connections in an int32; a larger value would wrap.
	errs = append(errs, checkCount("max_open_connections", c.MaxOpenConnections, "must be positive"))
	errs = append(errs, checkCount("max_idle_connections", c.MaxIdleConnections, "must not be negative"))
	if c.MaxConnectionLifetime < 0 {
		errs = append(errs, fmt.Errorf("max_connection_lifetime must not be negative, got %s", c.MaxConnectionLifetime))
	}
	switch c.PasswordAuthentication {
	case "", passwordAuthAuto, passwordAuthPassword, passwordAuthSCRAM, passwordAuthMD5:
	default:
		errs = append(errs, fmt.Errorf("password_authentication %q is not valid; use auto, scram-sha-256, md5 or password", c.PasswordAuthentication))
	}
	if c.LockTimeout < 0 {
		errs = append(errs, fmt.Errorf("lock_timeout must not be negative, got %s (0 waits for locks without bound)", c.LockTimeout))
	}
	if (c.TLSCertificate == "") != (c.PrivateKey == "") {
		errs = append(errs, errors.New("tls_certificate and private_key must be set together"))
	}
	if c.ReapOrphansAfter < 0 {
		errs = append(errs, fmt.Errorf("reap_orphans_after must not be negative, got %s (0 turns the reaper off)", c.ReapOrphansAfter))
	}
	return errors.Join(errs...)
}

// checkCount checks a connection count: not negative (negative says why),
// and within pgxpool's int32.
func checkCount(key string, n int, negative string) error {
	switch {
	case n < 0:
		return fmt.Errorf("%s %s, got %d", key, negative, n)
	case n > math.MaxInt32:
		return fmt.Errorf("%s must be at most %d, got %d", key, math.MaxInt32, n)
	}
	return nil
}

// applyDefaults fills what the configuration leaves unset with the named
// defaults, and resolves the values that depend on others.
func (c *config) applyDefaults(raw map[string]interface{}, given map[string]bool) {
	if c.MaxOpenConnections == 0 {
		c.MaxOpenConnections = defaultMaxOpenConnections
	}
	// pgxpool has no idle cap of its own: idle connections stay up to the
	// pool size and close after 30 minutes unused. As in the built-in, an
	// unset (0) value means the pool size.
	if c.MaxIdleConnections == 0 || c.MaxIdleConnections > c.MaxOpenConnections {
		c.MaxIdleConnections = c.MaxOpenConnections
	}
	if c.PasswordAuthentication == "" {
		c.PasswordAuthentication = defaultPasswordAuth
	}
	// Only an absent lock_timeout takes the default: an explicit null or
	// 0 means no bound.
	if _, set := raw["lock_timeout"]; !set {
		c.LockTimeout = defaultLockTimeout
	}
	if !given["terminate_sessions"] {
		c.TerminateSessions = defaultTerminateSessions
	}
	if !given["label_roles"] {
		c.LabelRoles = defaultLabelRoles
	}
	if !given["allow_cleartext_password"] {
		c.AllowCleartextPassword = defaultAllowCleartextPassword
	}
}

// durationHook accepts durations as Go strings ("30s"), or as a number of
// seconds (a float64 or a numeric string), as the built-in plugin does.
func durationHook(from reflect.Type, to reflect.Type, data interface{}) (interface{}, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	d, err := parseutil.ParseDurationSecond(data)
	if err != nil {
		return nil, fmt.Errorf("not a duration: %w", err)
	}
	return d, nil
}

// poolConfig turns the configuration into a pgxpool configuration. The root
// credentials are never spliced into text that could be logged: placeholders
// are replaced by random tokens, the URL is parsed, and the tokens are then
// swapped for the real values in the parsed configuration.
func (c *config) poolConfig() (*pgxpool.Config, error) {
	connURL := c.ConnectionURL
	userTok, passTok := randomToken(), randomToken()
	if c.DisableEscaping {
		// The operator escaped the values themselves: insert them verbatim.
		connURL = strings.ReplaceAll(connURL, "{{username}}", c.Username)
		connURL = strings.ReplaceAll(connURL, "{{password}}", c.Password)
	} else {
		connURL = strings.ReplaceAll(connURL, "{{username}}", userTok)
		connURL = strings.ReplaceAll(connURL, "{{password}}", passTok)
	}
	sslmode, sslmodeSet := sslmodeSetting(connURL)
	if c.wantsTLS() && !sslmodeSet {
		// A CA or client certificate says the operator wants verified
		// TLS; libpq's default (prefer) would fall back to plaintext.
		connURL = withSSLMode(connURL, defaultSSLModeWithTLS)
		sslmode = defaultSSLModeWithTLS
	}
	pc, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		// pgx errors can quote the input; never echo a URL that may hold a password.
		return nil, errors.New("connection_url could not be parsed: use postgres://{{username}}:{{password}}@host:5432/db?sslmode=… or a keyword/value string")
	}
	cc := pc.ConnConfig
	cc.User = strings.ReplaceAll(cc.User, userTok, c.Username)
	cc.Password = strings.ReplaceAll(cc.Password, passTok, c.Password)
	if strings.Contains(cc.User, userTok) || cc.User == "" {
		return nil, errors.New("connection_url has no user: add {{username}} and set username")
	}
	c.setRuntimeParams(cc)
	if err := c.applyTLS(cc, sslmode); err != nil {
		return nil, err
	}
	if !c.AllowCleartextPassword {
		// BuildFrontend is part of the shared pgconn.Config, so the guard
		// covers the primary host, every fallback and every copy of this
		// configuration (other databases, connections as another user).
		cc.BuildFrontend = guardedFrontend
		if unverifiedTLS(cc) {
			// TLS that accepts any certificate proves nothing about the
			// server: guard those connections as if they had no TLS.
			cc.BuildFrontend = guardedFrontendAll
		}
	}
	c.setPoolLimits(pc)
	return pc, nil
}

// setRuntimeParams sets what every session starts with, in the startup
// packet.
func (c *config) setRuntimeParams(cc *pgx.ConnConfig) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "vault-plugin-database-postgres"
	}
	// Statement rendering escapes literals the standard way ('' only);
	// pin the setting in the startup packet (no extra round trip) so a
	// server, database or role default of off cannot reinterpret a
	// backslash in a password.
	cc.RuntimeParams["standard_conforming_strings"] = "on"
	// Every lock wait the plugin causes is bounded; in the startup packet,
	// so it costs no round trip and RESET ALL keeps it.
	cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(c.LockTimeout.Milliseconds(), 10)
}

// setPoolLimits bounds connection attempts, keeps idle connections alive,
// and sizes the pool.
func (c *config) setPoolLimits(pc *pgxpool.Config) {
	cc := pc.ConnConfig
	if cc.ConnectTimeout == 0 {
		// A host that drops packets must not hold a request until Vault's
		// own deadline: each host gets this long to answer.
		cc.ConnectTimeout = defaultConnectTimeout
	}
	// Keepalive probes keep NAT and load-balancer mappings of idle pooled
	// connections alive (AWS drops them after 350 s idle), and notice a
	// dead peer in about a minute instead of pgx's 5-minute default.
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}}
	cc.DialFunc = dialer.DialContext
	pc.ShouldPing = shouldPing

	pc.MaxConns = int32(c.MaxOpenConnections)
	pc.MinConns = 0
	if c.MaxConnectionLifetime > 0 {
		pc.MaxConnLifetime = c.MaxConnectionLifetime
	}
}

func randomToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "pgvaulttok" + hex.EncodeToString(b)
}

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

// shouldPing is the pool's liveness check for a connection it hands out: one
// idle for more than a second is pinged, as pgxpool does by default, but the
// ping gets pingTimeout, not the request's whole deadline. A connection whose
// NAT mapping was dropped swallows the ping without an answer; this way it is
// replaced by a fresh one and the request still succeeds. prepareSession
// clears the deadline again.
func shouldPing(_ context.Context, p pgxpool.ShouldPingParams) bool {
	if p.IdleDuration <= time.Second {
		return false
	}
	_ = p.Conn.PgConn().Conn().SetDeadline(time.Now().Add(pingTimeout))
	return true
}

// connLost reports a failure of the connection, not of the statements: the
// server went away (restart, failover, pg_terminate_backend, a dropped
// network path) before or while the request ran.
func connLost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// admin_shutdown, crash_shutdown, cannot_connect_now, and
		// connection exceptions: the session ended under the request.
		return strings.HasPrefix(pgErr.Code, "57P0") || strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return false // could not connect at all: retrying now will not help
	}
	return true
}

// execer is what exec needs: a pool, or a single connection.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// execAtomic runs sql (several statements) with the simple protocol in one
// round trip; PostgreSQL runs it as one implicit transaction. Transient
// failures of the whole transaction are retried with bounded, jittered
// exponential backoff, within the request's deadline. The statements start
// from a clean session (sessionReset).
func execAtomic(ctx context.Context, db execer, sql string) error {
	return withRetry(ctx, func() error {
		_, err := db.Exec(ctx, sessionReset+sql)
		return err
	})
}

// withRetry runs f again while it fails transiently, up to retryAttempts
// times, sleeping a jittered, doubling delay between attempts. It gives up
// early, returning the last error, when ctx ends.
func withRetry(ctx context.Context, f func() error) error {
	return retryWhile(ctx, isTransient, f)
}

// retryWhile runs f again while its error is retryable, up to
// retryAttempts times, with withRetry's backoff, and returns the last error
// (or nil). It gives up early when ctx ends.
func retryWhile(ctx context.Context, retryable func(error) bool, f func() error) error {
	var err error
	for attempt := 0; attempt < retryAttempts; attempt++ {
		if attempt > 0 {
			if werr := sleepCtx(ctx, backoff(attempt)); werr != nil {
				return err
			}
		}
		if err = f(); err == nil || !retryable(err) {
			return err
		}
	}
	return err
}

func backoff(attempt int) time.Duration {
	d := retryBaseDelay << (attempt - 1)
	j, _ := rand.Int(rand.Reader, big.NewInt(int64(d)))
	return d/2 + time.Duration(j.Int64())/2
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// transientFailure is one kind of failure that running the same transaction
// again fixes. The list is the one source for both sides that classify
// them: isTransient in Go, and the revocation's exception handler, which
// gets it as an SQL condition (transientCondition) and re-raises exactly
// these for the caller to retry instead of disabling the role.
type transientFailure struct {
	code string
	// messageHas, when set, narrows the code to messages that contain it.
	messageHas string
	// constraintPrefix, when set, narrows the code to constraints whose
	// name starts with it.
	constraintPrefix string
}

var transientFailures = []transientFailure{
	{code: pgerrcode.DeadlockDetected},
	{code: pgerrcode.SerializationFailure},
	// NOWAIT lost a race, or lock_timeout expired: isTransient retries only
	// the first; the caller reports the second.
	{code: pgerrcode.LockNotAvailable},
	// "tuple concurrently updated": concurrent GRANTs on one object.
	{code: pgerrcode.InternalError, messageHas: "concurrently"},
	// Two CREATE/GRANT racing on a catalog row.
	{code: pgerrcode.UniqueViolation, constraintPrefix: "pg_"},
}

func (f transientFailure) matches(e *pgconn.PgError) bool {
	return e.Code == f.code &&
		strings.Contains(e.Message, f.messageHas) &&
		strings.HasPrefix(e.ConstraintName, f.constraintPrefix)
}

// isTransient reports failures that a retry of the same transaction fixes
// (transientFailures), except an expired lock_timeout: someone holds the
// lock for long, and trying again at once would only stall their table
// again.
func isTransient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || isLockTimeout(err) {
		return false
	}
	return slices.ContainsFunc(transientFailures, func(f transientFailure) bool { return f.matches(pgErr) })
}

// transientCondition is transientFailures as a PL/pgSQL condition for an
// exception handler, over SQLSTATE, SQLERRM and a variable cname that holds
// GET STACKED DIAGNOSTICS' CONSTRAINT_NAME. It keeps lock timeouts: the
// caller tells them apart.
func transientCondition() string {
	parts := make([]string, 0, len(transientFailures))
	for _, f := range transientFailures {
		c := "SQLSTATE = " + quoteLiteral(f.code)
		if f.messageHas != "" {
			c += " AND pg_catalog.strpos(SQLERRM, " + quoteLiteral(f.messageHas) + ") > 0"
		}
		if f.constraintPrefix != "" {
			c += " AND pg_catalog.starts_with(cname, " + quoteLiteral(f.constraintPrefix) + ")"
		}
		parts = append(parts, "("+c+")")
	}
	return strings.Join(parts, "\n\t\t\tOR ")
}

// isLockTimeout reports an error from lock_timeout.
func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable && strings.Contains(pgErr.Message, "lock timeout")
}

// sqlState returns the SQLSTATE of err, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
