package connect

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"fmt"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// MaxProvidedPEM bounds the certificate and the key of a provided root.
const MaxProvidedPEM = 64 << 10

// ProvidedRoot makes the active root from an operator's own CA certificate
// and its private key (the built-in provider's RootCert and PrivateKey
// settings): the certificate must be a CA valid at now, and the key must be
// its key.
func ProvidedRoot(rootPEM, keyPEM string, now time.Time) (*catalog.CARoot, error) {
	if len(rootPEM) > MaxProvidedPEM || len(keyPEM) > MaxProvidedPEM {
		return nil, fmt.Errorf("RootCert and PrivateKey: at most %d bytes each", MaxProvidedPEM)
	}
	cert, err := ParseCert(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("RootCert: %w", err)
	}
	key, err := ParseSigner(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("PrivateKey: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("RootCert: not a CA certificate")
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, fmt.Errorf("RootCert: not valid now (valid from %s to %s)", cert.NotBefore.UTC(), cert.NotAfter.UTC())
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("PrivateKey: not the key of RootCert")
	}
	var kind string
	var bits int
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		kind, bits = "ec", k.Curve.Params().BitSize
	case *rsa.PublicKey:
		kind, bits = "rsa", k.N.BitLen()
	default:
		return nil, fmt.Errorf("PrivateKey: unsupported key type %T", k)
	}
	skid := cert.SubjectKeyId
	if len(skid) == 0 {
		if skid, err = keyID(key.Public()); err != nil {
			return nil, err
		}
	}
	fp := sha1.Sum(cert.Raw)
	return &catalog.CARoot{
		ID:             HexString(fp[:]),
		Name:           cert.Subject.CommonName,
		SerialNumber:   cert.SerialNumber.Uint64(),
		SigningKeyID:   HexString(skid),
		NotBefore:      cert.NotBefore.UTC(),
		NotAfter:       cert.NotAfter.UTC(),
		RootCert:       certPEM(cert.Raw),
		PrivateKey:     keyPEM,
		Active:         true,
		PrivateKeyType: kind,
		PrivateKeyBits: bits,
	}, nil
}
