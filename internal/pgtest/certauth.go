package pgtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// CertGroup is the group role whose members a local cluster admits with a
// client certificate from its CA (pg_hba: hostssl all +vault_cert_users
// 127.0.0.1/32 cert), the setup the README recommends for Vault's
// client_certificate credentials. Create it with CreateCertGroup.
const CertGroup = "vault_cert_users"

// testCA is the CA that signs the server's and clients' certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// CA is a certificate authority that issues client certificates.
type CA struct {
	ca *testCA
	// PEM is the CA certificate.
	PEM string
}

// NewCA returns a fresh CA that no server trusts, for proving that a
// certificate from another CA is refused.
func NewCA(name string) (*CA, error) {
	ca, caPEM, err := newTestCA(name)
	if err != nil {
		return nil, err
	}
	return &CA{ca: ca, PEM: caPEM}, nil
}

// newTestCA makes a CA valid for two days, and its certificate's PEM.
func newTestCA(name string) (*testCA, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	return &testCA{cert: cert, key: key}, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// ClientCA is the CA the server trusts for client certificates (its
// ssl_ca_file). Only a local cluster has one.
func (s *Server) ClientCA() (*CA, error) {
	if s.ca == nil {
		return nil, errors.New("no test CA: the server was not started here (client certificates need the local cluster: unset PG_URL, or set PG_BINDIR)")
	}
	return &CA{ca: s.ca, PEM: s.CAPEM}, nil
}

// KeyPEM is the CA's private key (SEC 1, "EC PRIVATE KEY"), for Vault's
// credential_config ca_private_key.
func (c *CA) KeyPEM() (string, error) {
	der, err := x509.MarshalECPrivateKey(c.ca.key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
}

// Issue returns a client certificate with subject CN=cn and its private key
// (PEM), valid for a day. keyType is "ec" (P-256) or "rsa" (2048 bits).
func (c *CA) Issue(cn, keyType string) (certPEM, keyPEM string, err error) {
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return "", "", err
	}
	return c.ca.sign(&x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, keyType)
}

// sign makes a key of keyType ("ec" or "rsa") and a certificate for it from
// tmpl, signed by the CA; both PEM.
func (c *testCA) sign(tmpl *x509.Certificate, keyType string) (certPEM, keyPEM string, err error) {
	var pub crypto.PublicKey
	var keyBlock *pem.Block
	switch keyType {
	case "ec":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return "", "", err
		}
		pub, keyBlock = &k.PublicKey, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return "", "", err
		}
		pub, keyBlock = &k.PublicKey, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	default:
		return "", "", fmt.Errorf("key type %q: use ec or rsa", keyType)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(keyBlock)), nil
}

// CreateCertGroup creates CertGroup (NOLOGIN) unless it exists; concurrent
// callers are fine.
func (s *Server) CreateCertGroup(ctx context.Context) error {
	c, err := s.Connect(ctx, s.SuperUser, s.SuperPassword, "")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '`+CertGroup+`') THEN
			CREATE ROLE `+CertGroup+` NOLOGIN;
		END IF;
	EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
	END $$`)
	return err
}

// WriteCertFiles writes a certificate and its key into dir (the key 0600,
// as libpq demands) and returns their paths.
func WriteCertFiles(dir, certPEM, keyPEM string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, []byte(certPEM), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, []byte(keyPEM), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// CertURL is how an application connects with a client certificate: no
// password, sslcert and sslkey, and sslmode=verify-full against the
// server's CA.
func (s *Server) CertURL(user, certFile, keyFile, database string) string {
	if database == "" {
		database = s.Database
	}
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Path: "/" + database}
	q := url.Values{"sslmode": {"verify-full"}, "sslcert": {certFile}, "sslkey": {keyFile}}
	if s.CAFile != "" {
		q.Set("sslrootcert", s.CAFile)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
