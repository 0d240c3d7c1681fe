package connect

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// A secondary datacenter's CA signs its leaves with an intermediate whose
// certificate the primary's active root signed, so that one trust domain
// (the primary's roots) spans every datacenter. The secondary keeps the
// primary's roots, public, and on the active one its intermediate's key
// (PrivateKey) and certificate (IntermediateCerts): SignLeaf then signs
// with the intermediate and proxies present leaf + intermediate.

// NewIntermediateCSR makes a key and a CSR for a secondary datacenter's
// intermediate CA in trustDomain.
func NewIntermediateCSR(cfg Config, trustDomain, dc string) (csrPEM, keyPEM string, err error) {
	cfg = cfg.WithDefaults()
	key, keyPEM, err := GenerateKey(cfg.PrivateKeyType, cfg.PrivateKeyBits)
	if err != nil {
		return "", "", err
	}
	signing := ID{Kind: KindSigning, TrustDomain: trustDomain}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: fmt.Sprintf("Tribune CA Intermediate %s", dc)},
		URIs:    []*url.URL{signing.URI()},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", "", fmt.Errorf("create intermediate CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), keyPEM, nil
}

// ErrNotSigningCSR is returned (wrapped) for an intermediate CSR that does
// not name the root's trust domain as a signing ID.
var ErrNotSigningCSR = errors.New("CSR is not a signing request of this trust domain")

// SignIntermediate signs an intermediate CA's CSR with root's key for ttl
// from now (never past the root's expiry). The CSR must name exactly the
// signing ID of trustDomain.
func SignIntermediate(root *catalog.CARoot, csrPEM, trustDomain string, ttl time.Duration, now time.Time) (string, error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return "", err
	}
	want := ID{Kind: KindSigning, TrustDomain: trustDomain}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != want.URI().String() {
		return "", fmt.Errorf("%w: want %s", ErrNotSigningCSR, want.URI())
	}
	rootCert, err := ParseCert(root.RootCert)
	if err != nil {
		return "", fmt.Errorf("root: %w", err)
	}
	key, err := ParseSigner(root.PrivateKey)
	if err != nil {
		return "", fmt.Errorf("root: %w", err)
	}
	sn, err := serialNumber()
	if err != nil {
		return "", err
	}
	id, err := keyID(csr.PublicKey)
	if err != nil {
		return "", err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(rootCert.NotAfter) {
		notAfter = rootCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               csr.Subject,
		URIs:                  []*url.URL{want.URI()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          id,
		AuthorityKeyId:        rootCert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, csr.PublicKey, key)
	if err != nil {
		return "", fmt.Errorf("sign intermediate: %w", err)
	}
	return certPEM(der), nil
}

// signingParent returns the certificate leaves of root are issued under:
// the root's own when its key is root.PrivateKey's, else the intermediate
// of root.IntermediateCerts that holds that key (a secondary datacenter's).
func signingParent(root *catalog.CARoot, rootCert *x509.Certificate, pub any) (*x509.Certificate, error) {
	same := func(c *x509.Certificate) bool {
		a, err1 := x509.MarshalPKIXPublicKey(c.PublicKey)
		b, err2 := x509.MarshalPKIXPublicKey(pub)
		return err1 == nil && err2 == nil && bytes.Equal(a, b)
	}
	if same(rootCert) {
		return rootCert, nil
	}
	for _, pemCert := range root.IntermediateCerts {
		c, err := ParseCert(pemCert)
		if err == nil && c.IsCA && same(c) {
			return c, nil
		}
	}
	return nil, errors.New("no certificate of the root holds its signing key")
}

// parseCSR decodes a PEM CSR read from the network (bounded by MaxCSRBytes)
// and checks its signature.
func parseCSR(csrPEM string) (*x509.CertificateRequest, error) {
	if len(csrPEM) > MaxCSRBytes {
		return nil, fmt.Errorf("CSR of %d bytes, more than %d", len(csrPEM), MaxCSRBytes)
	}
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("CSR: no PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	return csr, nil
}
