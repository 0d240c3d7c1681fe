package connect

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// Config is the built-in CA's configuration (connect.ca_config and
// PUT /v1/connect/ca/configuration), with Consul's defaults.
type Config struct {
	PrivateKeyType      string        // "ec" (default) or "rsa"
	PrivateKeyBits      int           // ec: 224, 256 (default), 384, 521; rsa: 2048, 4096
	LeafCertTTL         time.Duration // default 72h
	RootCertTTL         time.Duration // default 87600h (10 years)
	IntermediateCertTTL time.Duration // default 8760h
}

// Limits of the CA configuration. Consul's lowest leaf TTL is 1h; Tribune
// accepts down to a minute so that renewal can be tested end to end.
const (
	MinLeafCertTTL = time.Minute
	MaxLeafCertTTL = 365 * 24 * time.Hour
	MinRootCertTTL = 24 * time.Hour
)

// WithDefaults returns c with every unset field at Consul's default.
func (c Config) WithDefaults() Config {
	if c.PrivateKeyType == "" {
		c.PrivateKeyType = "ec"
	}
	if c.PrivateKeyBits == 0 {
		if c.PrivateKeyType == "rsa" {
			c.PrivateKeyBits = 2048
		} else {
			c.PrivateKeyBits = 256
		}
	}
	if c.LeafCertTTL == 0 {
		c.LeafCertTTL = 72 * time.Hour
	}
	if c.RootCertTTL == 0 {
		c.RootCertTTL = 87600 * time.Hour
	}
	if c.IntermediateCertTTL == 0 {
		c.IntermediateCertTTL = 8760 * time.Hour
	}
	return c
}

// Validate checks a configuration (after WithDefaults).
func (c Config) Validate() error {
	switch c.PrivateKeyType {
	case "ec":
		switch c.PrivateKeyBits {
		case 224, 256, 384, 521:
		default:
			return fmt.Errorf("PrivateKeyBits %d: an ec key is 224, 256, 384 or 521 bits", c.PrivateKeyBits)
		}
	case "rsa":
		if c.PrivateKeyBits != 2048 && c.PrivateKeyBits != 4096 {
			return fmt.Errorf("PrivateKeyBits %d: an rsa key is 2048 or 4096 bits", c.PrivateKeyBits)
		}
	default:
		return fmt.Errorf("PrivateKeyType %q: want ec or rsa", c.PrivateKeyType)
	}
	if c.LeafCertTTL < MinLeafCertTTL || c.LeafCertTTL > MaxLeafCertTTL {
		return fmt.Errorf("LeafCertTTL %v: must be between %v and %v", c.LeafCertTTL, MinLeafCertTTL, MaxLeafCertTTL)
	}
	if c.RootCertTTL < MinRootCertTTL {
		return fmt.Errorf("RootCertTTL %v: must be at least %v", c.RootCertTTL, MinRootCertTTL)
	}
	if c.IntermediateCertTTL < 3*c.LeafCertTTL {
		return fmt.Errorf("IntermediateCertTTL %v: must be at least three times LeafCertTTL (%v)", c.IntermediateCertTTL, c.LeafCertTTL)
	}
	return nil
}

// GenerateKey makes a private key of the type and size given and returns it
// with its PEM encoding.
func GenerateKey(keyType string, bits int) (crypto.Signer, string, error) {
	var (
		k   crypto.Signer
		der []byte
		typ string
		err error
	)
	switch keyType {
	case "ec", "":
		var curve elliptic.Curve
		switch bits {
		case 224:
			curve = elliptic.P224()
		case 256, 0:
			curve = elliptic.P256()
		case 384:
			curve = elliptic.P384()
		case 521:
			curve = elliptic.P521()
		default:
			return nil, "", fmt.Errorf("ec key of %d bits", bits)
		}
		var ek *ecdsa.PrivateKey
		if ek, err = ecdsa.GenerateKey(curve, rand.Reader); err == nil {
			k = ek
			der, err = x509.MarshalECPrivateKey(ek)
			typ = "EC PRIVATE KEY"
		}
	case "rsa":
		var rk *rsa.PrivateKey
		if rk, err = rsa.GenerateKey(rand.Reader, bits); err == nil {
			k = rk
			der = x509.MarshalPKCS1PrivateKey(rk)
			typ = "RSA PRIVATE KEY"
		}
	default:
		return nil, "", fmt.Errorf("key type %q", keyType)
	}
	if err != nil {
		return nil, "", fmt.Errorf("generate %s key: %w", keyType, err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})), nil
}

// ParseSigner decodes a PEM private key.
func ParseSigner(keyPEM string) (crypto.Signer, error) {
	b, _ := pem.Decode([]byte(keyPEM))
	if b == nil {
		return nil, errors.New("private key: no PEM block")
	}
	switch b.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("private key cannot sign")
		}
		return s, nil
	}
	return nil, fmt.Errorf("private key: unsupported PEM block %q", b.Type)
}

// ParseCert decodes the first certificate of a PEM text.
func ParseCert(certPEM string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(b.Bytes)
}

// HexString renders bytes as Consul does: lower-case hex pairs joined by ':'.
func HexString(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02x", c)
	}
	return sb.String()
}

func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// NewRoot makes a self-signed root for the trust domain, valid from now for
// cfg.RootCertTTL, with a fresh key.
func NewRoot(cfg Config, trustDomain string, now time.Time) (*catalog.CARoot, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, keyPEM, err := GenerateKey(cfg.PrivateKeyType, cfg.PrivateKeyBits)
	if err != nil {
		return nil, err
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	id, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	signing := ID{Kind: KindSigning, TrustDomain: trustDomain}
	name := fmt.Sprintf("Tribune CA Primary Cert %d", sn)
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		URIs:                  []*url.URL{signing.URI()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(cfg.RootCertTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          id,
		AuthorityKeyId:        id,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	fp := sha1.Sum(der)
	return &catalog.CARoot{
		ID:             HexString(fp[:]),
		Name:           name,
		SerialNumber:   sn.Uint64(),
		SigningKeyID:   HexString(id),
		NotBefore:      tmpl.NotBefore.UTC(),
		NotAfter:       tmpl.NotAfter.UTC(),
		RootCert:       certPEM(der),
		PrivateKey:     keyPEM,
		Active:         true,
		PrivateKeyType: cfg.PrivateKeyType,
		PrivateKeyBits: cfg.PrivateKeyBits,
	}, nil
}

// CrossSign returns a certificate for newRoot's key and subject signed by
// oldRoot's key: leaves signed by the new key then verify for a proxy that
// trusts only the old root, during a rotation. Put it in newRoot's
// IntermediateCerts.
func CrossSign(newRoot, oldRoot *catalog.CARoot, now time.Time) (string, error) {
	newCert, err := ParseCert(newRoot.RootCert)
	if err != nil {
		return "", fmt.Errorf("new root: %w", err)
	}
	oldCert, err := ParseCert(oldRoot.RootCert)
	if err != nil {
		return "", fmt.Errorf("old root: %w", err)
	}
	oldKey, err := ParseSigner(oldRoot.PrivateKey)
	if err != nil {
		return "", fmt.Errorf("old root: %w", err)
	}
	sn, err := serialNumber()
	if err != nil {
		return "", err
	}
	notAfter := newCert.NotAfter
	if oldCert.NotAfter.Before(notAfter) {
		notAfter = oldCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               newCert.Subject,
		URIs:                  newCert.URIs,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              newCert.KeyUsage,
		SubjectKeyId:          newCert.SubjectKeyId,
		AuthorityKeyId:        oldCert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, oldCert, newCert.PublicKey, oldKey)
	if err != nil {
		return "", fmt.Errorf("cross-sign: %w", err)
	}
	return certPEM(der), nil
}

// NewLeafCSR makes a key and a certificate signing request for id, as an
// agent does before asking a server for a leaf.
func NewLeafCSR(id ID, keyType string, bits int) (csrPEM, keyPEM string, err error) {
	key, keyPEM, err := GenerateKey(keyType, bits)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.Service},
		URIs:    []*url.URL{id.URI()},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", "", fmt.Errorf("create CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), keyPEM, nil
}

// AgentCSRTrustDomain is the trust domain an agent's CSR names when the
// agent cannot know the real one yet (auto_encrypt at start); SignLeaf
// signs such a CSR for the real trust domain.
const AgentCSRTrustDomain = "dummy.trustdomain"

// MaxCSRBytes bounds a CSR read from the network.
const MaxCSRBytes = 16 << 10

// ErrCSRMismatch is returned (wrapped) when a CSR asks for another identity
// than the one the caller is allowed.
var ErrCSRMismatch = errors.New("CSR does not name the requested identity")

// Leaf is a signed leaf certificate.
type Leaf struct {
	CertPEM      string
	SerialNumber string // colon hex, as Consul's API shows it
	ValidAfter   time.Time
	ValidBefore  time.Time
}

// SignLeaf checks that csrPEM is well signed and names exactly want (a
// service of the root's trust domain), and signs it with root's key for ttl
// from now, never past the root's own expiry. The certificate chain a proxy
// presents is the leaf followed by root.IntermediateCerts.
func SignLeaf(root *catalog.CARoot, csrPEM string, want ID, ttl time.Duration, now time.Time) (*Leaf, error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if len(csr.URIs) != 1 {
		return nil, fmt.Errorf("%w: it names %d URIs, want exactly one", ErrCSRMismatch, len(csr.URIs))
	}
	got, err := ParseID(csr.URIs[0].String())
	if err != nil {
		return nil, err
	}
	if got.Kind == KindAgent && got.TrustDomain == AgentCSRTrustDomain {
		// An agent asking through auto_encrypt does not know the trust
		// domain yet.
		got.TrustDomain = want.TrustDomain
	}
	if got != want {
		return nil, fmt.Errorf("%w: %s, want %s", ErrCSRMismatch, got, want)
	}
	if len(csr.DNSNames) > 64 || len(csr.IPAddresses) > 64 {
		return nil, errors.New("CSR names more than 64 DNS names or IP addresses")
	}
	rootCert, err := ParseCert(root.RootCert)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	key, err := ParseSigner(root.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	if rootCert, err = signingParent(root, rootCert, key.Public()); err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	subjectKey, err := keyID(csr.PublicKey)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(rootCert.NotAfter) {
		notAfter = rootCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: want.Service},
		URIs:                  []*url.URL{want.URI()},
		DNSNames:              csr.DNSNames,
		IPAddresses:           csr.IPAddresses,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		SubjectKeyId:          subjectKey,
		AuthorityKeyId:        rootCert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, csr.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf: %w", err)
	}
	return &Leaf{
		CertPEM:      certPEM(der),
		SerialNumber: HexString(sn.Bytes()),
		ValidAfter:   tmpl.NotBefore.UTC(),
		ValidBefore:  notAfter.UTC(),
	}, nil
}

// VerifyLeaf checks that a leaf chains to one of roots (through any of the
// roots' intermediates) at time now and returns its identity.
func VerifyLeaf(leafPEM string, roots []*catalog.CARoot, now time.Time) (ID, error) {
	leaf, err := ParseCert(leafPEM)
	if err != nil {
		return ID{}, fmt.Errorf("leaf: %w", err)
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		c, err := ParseCert(r.RootCert)
		if err != nil {
			return ID{}, fmt.Errorf("root %s: %w", r.ID, err)
		}
		pool.AddCert(c)
		for _, ip := range r.IntermediateCerts {
			if ic, err := ParseCert(ip); err == nil {
				inter.AddCert(ic)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return ID{}, fmt.Errorf("leaf: %w", err)
	}
	if len(leaf.URIs) != 1 {
		return ID{}, fmt.Errorf("%w: leaf names %d URIs", ErrBadSpiffeID, len(leaf.URIs))
	}
	return ParseID(leaf.URIs[0].String())
}

// RenewAt returns when a leaf valid from notBefore to notAfter should be
// replaced: a point between half and three quarters of its lifetime, chosen
// by r in [0, 1) (a random number, so that a fleet's renewals spread out).
func RenewAt(notBefore, notAfter time.Time, r float64) time.Time {
	if r < 0 || r >= 1 {
		r = 0
	}
	life := notAfter.Sub(notBefore)
	return notBefore.Add(life/2 + time.Duration(float64(life/4)*r))
}

// SameKey reports whether two PEM certificates carry the same public key.
func SameKey(a, b string) bool {
	ca, err1 := ParseCert(a)
	cb, err2 := ParseCert(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return bytes.Equal(ca.RawSubjectPublicKeyInfo, cb.RawSubjectPublicKeyInfo)
}
