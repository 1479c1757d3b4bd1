package postgres

// The plugin's configuration: decoded from the map Vault stores
// (decodeConfig), checked (validate) and completed with the defaults
// (applyDefaults), into a config whose fields are resolved values.

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/hashicorp/go-secure-stdlib/parseutil"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
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
)

// config is the plugin's connection configuration, decoded once from the map
// Vault stores. Field tags are the parameter names operators use.
type config struct {
	ConnectionURL      string `mapstructure:"connection_url"`
	Username           string `mapstructure:"username"`
	Password           string `mapstructure:"password"`
	MaxOpenConnections int    `mapstructure:"max_open_connections"`
	// MaxIdleConnections is accepted and checked for compatibility with the
	// built-in, and not used: pgxpool has no idle cap of its own (idle
	// connections stay up to the pool size and close after 30 minutes).
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
	SelfManaged            bool          `mapstructure:"self_managed"`
	TerminateSessions      bool          `mapstructure:"terminate_sessions"`
	ReassignOwnedTo        string        `mapstructure:"reassign_owned_to"`
	// AllowPrivilegedReassign lets reassign_owned_to name a superuser, the
	// admin, or a role with the admin's rights.
	AllowPrivilegedReassign bool          `mapstructure:"allow_privileged_reassign"`
	AllowCleartextPassword  bool          `mapstructure:"allow_cleartext_password"`
	LockTimeout             time.Duration `mapstructure:"lock_timeout"`
	LabelRoles              bool          `mapstructure:"label_roles"`
	ReapOrphansAfter        time.Duration `mapstructure:"reap_orphans_after"`

	// inlineTLS: tls_ca, tls_certificate and private_key came from
	// connection_url's sslinline PEMs (takeInlineTLS), so messages name those.
	inlineTLS bool
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
	// connection_url's inline PEMs become tls_ca, tls_certificate and
	// private_key before those are validated (tls.go).
	if err := c.takeInlineTLS(); err != nil {
		return nil, nil, err
	}
	// Validation reads the values as given, before defaults replace the
	// zero ones.
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
	case "", "password", "cert":
		// The built-in accepts "cert" and then authenticates with the
		// username and password as usual; so does this plugin.
	default:
		errs = append(errs, fmt.Errorf("auth_type %q is not supported by this plugin; remove it and authenticate with username and password", c.AuthType))
	}
	if c.SelfManaged {
		errs = append(errs, errors.New("self_managed=true (a connection without root credentials, for Vault Enterprise's self-managed static roles) is not supported by this plugin: configure username and password for the connection, or use Vault's built-in postgresql-database-plugin for this mount"))
	}
	// service_account_json is read only with auth_type=gcp_iam, which is
	// refused above; otherwise it is ignored, as the built-in ignores it.
	// pgxpool counts connections in an int32; a larger value would wrap.
	errs = append(errs, checkCount("max_open_connections", c.MaxOpenConnections, "must be positive"))
	// A negative max_idle_connections disables idle connections for the
	// built-in (database/sql); unused here, it is only bounded.
	if c.MaxIdleConnections > math.MaxInt32 {
		errs = append(errs, checkCount("max_idle_connections", c.MaxIdleConnections, ""))
	}
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

// reassignTarget is the role revoked users' objects go to: reassign_owned_to,
// else the plugin's holding role.
func (c *config) reassignTarget() string {
	if c.ReassignOwnedTo != "" {
		return c.ReassignOwnedTo
	}
	return holdingRole
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
