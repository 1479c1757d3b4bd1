package postgres

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
	"github.com/hashicorp/vault/sdk/helper/certutil"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// certCreateStmt is the README's creation statement for certificate users.
const certCreateStmt = `CREATE ROLE "{{name}}" WITH LOGIN VALID UNTIL '{{expiration}}' IN ROLE ` + pgtest.CertGroup + `;`

// subjectOf is the subject as Vault sends it: pkix.Name.String() of a name
// with only a CN (builtin/logical/database/credentials.go).
func subjectOf(cn string) string { return pkix.Name{CommonName: cn}.String() }

func TestCertUsername(t *testing.T) {
	t.Parallel()
	hexCN, err := asn1.Marshal("v-hex")
	if err != nil {
		t.Fatal(err)
	}
	ok := []struct{ subject, want string }{
		{"CN=v-token-app-abc-1700000000", "v-token-app-abc-1700000000"},
		{subjectOf("v-token-app"), "v-token-app"},
		{subjectOf("a,b+c<d>e;f=g#h"), "a,b+c<d>e;f=g#h"},
		{subjectOf("#lead"), "#lead"},
		{subjectOf(" spaced "), " spaced "},
		{subjectOf("Ünïcødé-ロール"), "Ünïcødé-ロール"},
		{subjectOf(strings.Repeat("x", 63)), strings.Repeat("x", 63)},
		{pkix.Name{CommonName: "app", Organization: []string{"Acme, Inc."}, Country: []string{"DE"}}.String(), "app"},
		{"O=Acme,CN=app", "app"},
		{"CN=app, O=Acme", "app"},
		{"cn=app", "app"},
		{"commonName=app", "app"},
		{"2.5.4.3=app", "app"},
		{"OID.2.5.4.3=app", "app"},
		{`CN=a\2Cb`, "a,b"},
		{`CN=caf\C3\A9`, "café"},
		{"CN=#" + strings.ToUpper(hexOf(hexCN)), "v-hex"},
		{"CN=app+UID=7", "app"},
	}
	for _, c := range ok {
		got, err := certUsername(c.subject)
		if err != nil {
			t.Errorf("certUsername(%q): %v", c.subject, err)
			continue
		}
		if got != c.want {
			t.Errorf("certUsername(%q) = %q, want %q", c.subject, got, c.want)
		}
	}
}

func TestCertUsernameRefusals(t *testing.T) {
	t.Parallel()
	bad := []struct{ subject, want string }{
		{"", "has no CN"},
		{"O=Acme", "has no CN"},
		{"CN=a,CN=b", "has 2 CNs"},
		{"CN=a+CN=b", "has 2 CNs"},
		{"CN=", "empty"},
		{subjectOf(strings.Repeat("x", 64)), "at most 63 bytes"},
		{subjectOf("é" + strings.Repeat("x", 62)), "at most 63 bytes"},
		{subjectOf("a\x00b"), "NUL"},
		{`CN=a\00b`, "NUL"},
		{subjectOf(`a"b`), `character '"'`},
		{subjectOf("a'b"), `character '\''`},
		{subjectOf(`a\b`), `character '\\'`},
		{subjectOf("a$b"), `character '$'`},
		{subjectOf("a\nb"), `character '\n'`},
		{subjectOf("a\u2028b"), `character '\u2028'`},
		{`CN=\FF`, "not valid UTF-8"},
		{"CN", "not a distinguished name"},
		{"=app", "not a distinguished name"},
		{`CN=app\`, "ends in a backslash"},
		{"CN=#zz", "hex"},
	}
	for _, c := range bad {
		got, err := certUsername(c.subject)
		if err == nil {
			t.Errorf("certUsername(%q) = %q, want an error containing %q", c.subject, got, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("certUsername(%q): error %q does not contain %q", c.subject, err, c.want)
		}
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// FuzzCertUsernameRoundTrip: whatever CN Vault puts in a certificate, the
// plugin either creates exactly that role name or refuses it.
func FuzzCertUsernameRoundTrip(f *testing.F) {
	for _, s := range []string{"v-a", "a,b", `\`, "#", " x ", "a+b=c", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cn string) {
		got, err := certUsername(subjectOf(cn))
		if err == nil && got != cn {
			t.Fatalf("CN %q became username %q", cn, got)
		}
	})
}

func TestInitializeAdvertisesClientCertificate(t *testing.T) {
	needPG(t)
	t.Parallel()
	db := newPostgres(hclog.NewNullLogger())
	defer db.Close()
	resp, err := db.Initialize(testCtx(t), dbplugin.InitializeRequest{Config: baseConfig(), VerifyConnection: true})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := resp.Config[dbplugin.SupportedCredentialTypesKey].([]interface{})
	want := map[string]bool{"password": false, "client_certificate": false}
	for _, v := range got {
		if _, ok := want[v.(string)]; ok {
			want[v.(string)] = true
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("supported_credential_types = %v, missing %q", got, k)
		}
	}
}

// certSetup skips unless the server was started here with a test CA, and
// makes sure the cert group exists.
func certSetup(t *testing.T) *pgtest.CA {
	t.Helper()
	needPG(t)
	ca, err := pg.ClientCA()
	if err != nil {
		t.Skip(err)
	}
	if err := pg.CreateCertGroup(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return ca
}

func certUserReq(subject string, stmts ...string) dbplugin.NewUserRequest {
	return dbplugin.NewUserRequest{
		UsernameConfig: dbplugin.UsernameMetadata{DisplayName: "test", RoleName: "app"},
		Statements:     dbplugin.Statements{Commands: stmts},
		CredentialType: dbplugin.CredentialTypeClientCertificate,
		Subject:        subject,
		Expiration:     time.Now().Add(time.Hour),
	}
}

// connectCert connects as user with a certificate over verify-full, the way
// the README tells applications to.
func connectCert(t *testing.T, user, certPEM, keyPEM string) (*pgx.Conn, error) {
	t.Helper()
	certFile, keyFile, err := pgtest.WriteCertFiles(t.TempDir(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.CertURL(user, certFile, keyFile, ""))
	if err == nil {
		t.Cleanup(func() { _ = c.Close(context.Background()) })
	}
	return c, err
}

func TestClientCertificateUser(t *testing.T) {
	ca := certSetup(t)
	t.Parallel()
	db := newDB(t, nil)
	a := admin(t)
	name := "v-cert-" + randSuffix()
	resp, err := db.NewUser(testCtx(t), certUserReq(subjectOf(name), certCreateStmt))
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	if resp.Username != name {
		t.Fatalf("username %q, want the CN %q", resp.Username, name)
	}
	assertCertUserRole(t, a, name)
	assertCertLogins(t, ca, name)
	assertCertRenewal(t, db, a, name)

	// Revocation ends the session that is logged in and refuses the certificate.
	certPEM, keyPEM, err := ca.Issue(name, "ec")
	if err != nil {
		t.Fatal(err)
	}
	session, err := connectCert(t, name, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: name}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := session.Exec(testCtx(t), "SELECT 1"); !refused(err, "terminat") {
		t.Errorf("the session logged in with the certificate: got %v after revocation, want it terminated", err)
	}
	if roleExists(t, a, name) {
		t.Error("the role still exists after revocation")
	}
	// With the role gone, no pg_hba cert rule matches it any more; the
	// fallback rule asks for a password, which it never had.
	if _, err := connectCert(t, name, certPEM, keyPEM); !refused(err, "authentication failed") {
		t.Errorf("the certificate after revocation: got %v, want authentication failed", err)
	}
}

// assertCertUserRole checks the catalog row of a new certificate user: no
// password, an expiration, a label; and that it cannot log in without a
// certificate.
func assertCertUserRole(t *testing.T, a *pgxpool.Pool, name string) {
	t.Helper()
	var hasPassword bool
	var validUntil *time.Time
	if err := a.QueryRow(testCtx(t), "SELECT rolpassword IS NOT NULL, rolvaliduntil FROM pg_authid WHERE rolname = $1", name).
		Scan(&hasPassword, &validUntil); err != nil {
		t.Fatal(err)
	}
	if hasPassword {
		t.Error("the certificate user has a password in pg_authid")
	}
	if validUntil == nil {
		t.Error("{{expiration}} was not applied: rolvaliduntil is NULL")
	}
	comment, _ := roleComment(t, a, name)
	if _, ok := parseLabel(comment); !ok {
		t.Errorf("the certificate user carries no label: comment %q", comment)
	}
	if err := pg.CanLogin(testCtx(t), name, ""); err == nil {
		t.Error("the certificate user logged in without a certificate")
	}
}

// assertCertLogins checks that name logs in with an EC and an RSA
// certificate from ca, and that another CN from ca and the right CN from
// another CA are refused.
func assertCertLogins(t *testing.T, ca *pgtest.CA, name string) {
	t.Helper()
	for _, keyType := range []string{"ec", "rsa"} {
		certPEM, keyPEM, err := ca.Issue(name, keyType)
		if err != nil {
			t.Fatal(err)
		}
		c, err := connectCert(t, name, certPEM, keyPEM)
		if err != nil {
			t.Fatalf("%s certificate for %q: connect: %v", keyType, name, err)
		}
		var user, dn string
		if err := c.QueryRow(testCtx(t), "SELECT current_user, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &dn); err != nil {
			t.Fatal(err)
		}
		if user != name || dn != "/CN="+name {
			t.Errorf("%s certificate: logged in as %q with client_dn %q", keyType, user, dn)
		}
	}
	otherCert, otherKey, err := ca.Issue(name+"-other", "ec")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connectCert(t, name, otherCert, otherKey); !refused(err, "certificate authentication failed") {
		t.Errorf("a certificate for another CN: got %v, want certificate authentication failed", err)
	}
	foreign, err := pgtest.NewCA("foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := foreign.Issue(name, "ec")
	if err != nil {
		t.Fatal(err)
	}
	// Go's TLS client withholds a certificate the server's CA list does not
	// cover (libpq sends it and the handshake fails): refused either way.
	if _, err := connectCert(t, name, foreignCert, foreignKey); !refused(err, "requires a valid client certificate") {
		t.Errorf("a certificate from another CA: got %v, want requires a valid client certificate", err)
	}
}

// assertCertRenewal renews name as Vault sends it (no credential type, so
// password, and an expiration) and with the certificate type.
func assertCertRenewal(t *testing.T, db *Postgres, a *pgxpool.Pool, name string) {
	t.Helper()
	for _, ct := range []dbplugin.CredentialType{dbplugin.CredentialTypePassword, dbplugin.CredentialTypeClientCertificate} {
		exp := time.Now().Add(3 * time.Hour).Truncate(time.Second)
		if _, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: name, CredentialType: ct,
			Expiration: &dbplugin.ChangeExpiration{NewExpiration: exp}}); err != nil {
			t.Fatalf("renewing with credential type %s: %v", ct, err)
		}
		var got time.Time
		if err := a.QueryRow(testCtx(t), "SELECT rolvaliduntil FROM pg_authid WHERE rolname = $1", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !got.Equal(exp) {
			t.Errorf("after renewal (%s) rolvaliduntil = %v, want %v", ct, got, exp)
		}
	}
}

func TestClientCertificateUserErrors(t *testing.T) {
	certSetup(t)
	t.Parallel()
	db := newDB(t, nil)
	a := admin(t)
	cases := []struct {
		name    string
		subject func(cn string) string
		stmts   []string
		want    string
	}{
		{"no CN", func(string) string { return "O=Acme" }, []string{certCreateStmt}, "has no CN"},
		{"two CNs", func(cn string) string { return "CN=" + cn + ",CN=" + cn + "x" }, []string{certCreateStmt}, "has 2 CNs"},
		{"too long", func(cn string) string { return subjectOf(cn + strings.Repeat("x", 64)) }, []string{certCreateStmt}, "at most 63 bytes"},
		{"quote", func(cn string) string { return subjectOf(cn + `"x`) }, []string{certCreateStmt}, "character"},
		{"password placeholder", subjectOf, []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';`}, "{{password}}"},
		{"no statements", subjectOf, nil, "creation_statements"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cn := "v-certbad-" + randSuffix()
			_, err := db.NewUser(testCtx(t), certUserReq(c.subject(cn), c.stmts...))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewUser: got %v, want an error containing %q", err, c.want)
			}
			t.Logf("error: %v", err)
			if roleExists(t, a, cn) {
				t.Errorf("a role %q was created", cn)
			}
		})
	}
	t.Run("password change for a certificate user", func(t *testing.T) {
		t.Parallel()
		_, err := db.UpdateUser(testCtx(t), dbplugin.UpdateUserRequest{Username: "v-cert-x", CredentialType: dbplugin.CredentialTypeClientCertificate,
			Password: &dbplugin.ChangePassword{NewPassword: "Aa1-" + randSuffix()}})
		if err == nil || !strings.Contains(err.Error(), "client_certificate") {
			t.Fatalf("UpdateUser: got %v, want an error about client_certificate", err)
		}
	})
}

// TestVaultIssuedCertificate issues certificates the way Vault 1.21's
// database engine does (builtin/logical/database/credentials.go: the CA
// bundle parsed by certutil from credential_config, subject CN only, client
// auth, NotAfter at the lease's end) and proves each key type logs in.
func TestVaultIssuedCertificate(t *testing.T) {
	ca := certSetup(t)
	t.Parallel()
	db := newDB(t, nil)
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := certutil.ParsePEMBundle(ca.PEM + "\n" + caKey)
	if err != nil {
		t.Fatalf("Vault would refuse the test CA as credential_config ca_cert/ca_private_key: %v", err)
	}
	for _, c := range []struct {
		keyType       string
		keyBits, sigs int
	}{{"ec", 256, 256}, {"rsa", 2048, 256}, {"ed25519", 0, 256}} {
		t.Run(c.keyType, func(t *testing.T) {
			t.Parallel()
			expiration := time.Now().Add(time.Hour)
			subject := pkix.Name{CommonName: "v-vault-" + c.keyType + "-" + randSuffix()}
			noURLs := &certutil.URLEntries{IssuingCertificates: []string{}, CRLDistributionPoints: []string{}, OCSPServers: []string{}}
			bundle, err := certutil.CreateCertificate(&certutil.CreationBundle{
				Params: &certutil.CreationParameters{
					Subject: subject, KeyType: c.keyType, KeyBits: c.keyBits, SignatureBits: c.sigs,
					NotAfter: expiration, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: certutil.ClientAuthExtKeyUsage,
					NotBeforeDuration: 30 * time.Second, URLs: noURLs,
				},
				SigningBundle: &certutil.CAInfoBundle{ParsedCertBundle: *parsed, URLs: noURLs},
			})
			if err != nil {
				t.Fatal(err)
			}
			cb, err := bundle.ToCertBundle()
			if err != nil {
				t.Fatal(err)
			}
			req := certUserReq(subject.String(), certCreateStmt)
			req.Expiration = expiration
			resp, err := db.NewUser(testCtx(t), req)
			if err != nil {
				t.Fatalf("NewUser(%q): %v", req.Subject, err)
			}
			t.Cleanup(func() {
				_, _ = db.DeleteUser(context.Background(), dbplugin.DeleteUserRequest{Username: resp.Username})
			})
			if resp.Username != subject.CommonName {
				t.Fatalf("username %q, want the CN %q", resp.Username, subject.CommonName)
			}
			conn, err := connectCert(t, resp.Username, cb.Certificate, cb.PrivateKey)
			if err != nil {
				t.Fatalf("connect with a %s certificate as Vault issues it: %v", c.keyType, err)
			}
			var user string
			if err := conn.QueryRow(testCtx(t), "SELECT current_user").Scan(&user); err != nil || user != resp.Username {
				t.Fatalf("current_user %q, %v", user, err)
			}
		})
	}
}

// TestCertAuthIgnoresValidUntil pins down what the README says: PostgreSQL
// checks VALID UNTIL only for passwords, so a certificate user's access
// ends with its certificate's NotAfter or with revocation, not with
// rolvaliduntil.
func TestCertAuthIgnoresValidUntil(t *testing.T) {
	ca := certSetup(t)
	t.Parallel()
	a := admin(t)
	name := "v-expired-" + randSuffix()
	execSQL(t, a, `CREATE ROLE "`+name+`" LOGIN VALID UNTIL '2000-01-01' IN ROLE `+pgtest.CertGroup)
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), `DROP ROLE "`+name+`"`) })
	certPEM, keyPEM, err := ca.Issue(name, "ec")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connectCert(t, name, certPEM, keyPEM); err != nil {
		t.Fatalf("PostgreSQL now applies VALID UNTIL to certificate logins (update the README): %v", err)
	}
}

// TestClientCertificateUserCreateroleAdmin follows the README for an admin
// that is not a superuser: from PostgreSQL 16 on it needs ADMIN OPTION on
// the cert group to put users in it, and the error says so.
func TestClientCertificateUserCreateroleAdmin(t *testing.T) {
	ca := certSetup(t)
	t.Parallel()
	a := admin(t)
	crUser, crPw := createroleAdmin(t, a)
	db := newDB(t, map[string]interface{}{"username": crUser, "password": crPw})
	name := "v-certcr-" + randSuffix()
	if pg.VersionNum >= pg16 {
		_, err := db.NewUser(testCtx(t), certUserReq(subjectOf(name), certCreateStmt))
		if !refused(err, `ADMIN option on role "`+pgtest.CertGroup+`"`) {
			t.Fatalf("NewUser without ADMIN OPTION on the group: got %v, want the server's permission error naming it", err)
		}
		execSQL(t, a, `GRANT `+pgtest.CertGroup+` TO `+render.QuoteIdent(crUser)+` WITH ADMIN OPTION`)
	}
	resp, err := db.NewUser(testCtx(t), certUserReq(subjectOf(name), certCreateStmt))
	if err != nil {
		t.Fatalf("NewUser: %v", err)
	}
	certPEM, keyPEM, err := ca.Issue(resp.Username, "ec")
	if err != nil {
		t.Fatal(err)
	}
	session, err := connectCert(t, resp.Username, certPEM, keyPEM)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := db.DeleteUser(testCtx(t), dbplugin.DeleteUserRequest{Username: resp.Username}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := session.Exec(testCtx(t), "SELECT 1"); err == nil {
		t.Error("the session survived revocation")
	}
	if roleExists(t, a, resp.Username) {
		t.Error("the role survived revocation")
	}
}
