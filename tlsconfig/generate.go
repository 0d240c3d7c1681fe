package tlsconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// CAOptions are the inputs of GenerateCA.
type CAOptions struct {
	// Days the CA is valid; 0 means 1825 (five years).
	Days int
	// Domain is the agents' DNS domain, "consul" by default.
	Domain string
	// NameConstraint limits the CA to certificates under Domain (and
	// localhost) plus AdditionalNameConstraints.
	NameConstraint            bool
	AdditionalNameConstraints []string
	// Now is the start of validity; zero means time.Now.
	Now time.Time
}

// CertOptions are the inputs of GenerateCert.
type CertOptions struct {
	// CACert and CAKey are the signing CA, in PEM.
	CACert, CAKey string
	// Days the certificate is valid; 0 means 365.
	Days int
	// CommonName, DNSNames and IPAddresses name the holder.
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	// ExtKeyUsage is what the certificate may be used for.
	ExtKeyUsage []x509.ExtKeyUsage
	// Now is the start of validity; zero means time.Now.
	Now time.Time
}

// GenerateKey makes an ECDSA P-256 key and returns it with its PEM form.
func GenerateKey() (crypto.Signer, string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, "", fmt.Errorf("encode key: %w", err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// GenerateCA makes a self-signed CA certificate and its key, in PEM.
func GenerateCA(o CAOptions) (certPEM, keyPEM string, err error) {
	if o.Days == 0 {
		o.Days = 1825
	}
	if o.Days < 0 {
		return "", "", errors.New("days must be positive")
	}
	if o.Domain == "" {
		o.Domain = "consul"
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	key, keyPEM, err := GenerateKey()
	if err != nil {
		return "", "", err
	}
	sn, err := serial()
	if err != nil {
		return "", "", err
	}
	id, err := keyID(key.Public())
	if err != nil {
		return "", "", fmt.Errorf("CA key id: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("Tribune Agent CA %d", sn)},
		NotBefore:             o.Now.Add(-time.Minute),
		NotAfter:              o.Now.AddDate(0, 0, o.Days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          id,
		AuthorityKeyId:        id,
	}
	if o.NameConstraint {
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = append([]string{o.Domain, "localhost"}, o.AdditionalNameConstraints...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", "", fmt.Errorf("create CA certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), keyPEM, nil
}

// ParseCA decodes a CA certificate and key in PEM.
func ParseCA(certPEM, keyPEM string) (*x509.Certificate, crypto.Signer, error) {
	cb, _ := pem.Decode([]byte(certPEM))
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	kb, _ := pem.Decode([]byte(keyPEM))
	if kb == nil {
		return nil, nil, errors.New("CA key: no PEM block")
	}
	var signer crypto.Signer
	switch kb.Type {
	case "EC PRIVATE KEY":
		signer, err = x509.ParseECPrivateKey(kb.Bytes)
	case "PRIVATE KEY":
		var k any
		k, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err == nil {
			var ok bool
			if signer, ok = k.(crypto.Signer); !ok {
				err = errors.New("key cannot sign")
			}
		}
	case "RSA PRIVATE KEY":
		signer, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		err = fmt.Errorf("unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	return cert, signer, nil
}

// GenerateCert makes a certificate signed by the CA, and its key, in PEM.
func GenerateCert(o CertOptions) (certPEM, keyPEM string, err error) {
	if o.Days == 0 {
		o.Days = 365
	}
	if o.Days < 0 {
		return "", "", errors.New("days must be positive")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	ca, caKey, err := ParseCA(o.CACert, o.CAKey)
	if err != nil {
		return "", "", err
	}
	key, keyPEM, err := GenerateKey()
	if err != nil {
		return "", "", err
	}
	sn, err := serial()
	if err != nil {
		return "", "", err
	}
	id, err := keyID(key.Public())
	if err != nil {
		return "", "", fmt.Errorf("key id: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: o.CommonName},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPAddresses,
		NotBefore:             o.Now.Add(-time.Minute),
		NotAfter:              o.Now.AddDate(0, 0, o.Days),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           o.ExtKeyUsage,
		SubjectKeyId:          id,
		AuthorityKeyId:        ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return "", "", fmt.Errorf("create certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), keyPEM, nil
}

// Role is what an agent certificate is for.
type Role string

// The roles of `tribune tls cert create`.
const (
	RoleServer Role = "server"
	RoleClient Role = "client"
	RoleCLI    Role = "cli"
)

// AgentCertOptions returns the names and usages Consul gives an agent
// certificate of role in datacenter dc and domain: servers carry
// server.<dc>.<domain> (and <node>.server.<dc>.<domain>), localhost and
// 127.0.0.1; clients client.<dc>.<domain>; the CLI cli.client.<dc>.<domain>.
func AgentCertOptions(role Role, dc, domain, node string, extraDNS []string, extraIPs []net.IP) (CertOptions, error) {
	domain = strings.TrimSuffix(domain, ".")
	var o CertOptions
	switch role {
	case RoleServer:
		o.CommonName = ServerName(dc, domain)
		o.DNSNames = []string{o.CommonName, "localhost"}
		if node != "" {
			o.DNSNames = append(o.DNSNames, node+"."+o.CommonName)
		}
		o.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case RoleClient:
		o.CommonName = "client." + dc + "." + domain
		o.DNSNames = []string{o.CommonName, "localhost"}
		o.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case RoleCLI:
		o.CommonName = "cli.client." + dc + "." + domain
		o.DNSNames = []string{o.CommonName, "localhost"}
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return o, fmt.Errorf("unknown certificate role %q", role)
	}
	o.DNSNames = append(o.DNSNames, extraDNS...)
	o.IPAddresses = append(o.IPAddresses, extraIPs...)
	return o, nil
}
