package connect

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

func TestIntermediateSignsLeavesOfThePrimaryTrustDomain(t *testing.T) {
	now := time.Now()
	td := TrustDomain("11111111-2222-3333-4444-555555555555")
	root, err := NewRoot(Config{}, td, now)
	if err != nil {
		t.Fatal(err)
	}
	csr, key, err := NewIntermediateCSR(Config{}, td, "dc2")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := SignIntermediate(root, csr, td, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	// The secondary's copy of the root: public, with its intermediate.
	secondary := root.Public()
	secondary.PrivateKey, secondary.IntermediateCerts = key, []string{inter}

	id := ServiceID(td, "dc2", "web")
	leafCSR, _, err := NewLeafCSR(id, "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := SignLeaf(secondary, leafCSR, id, time.Hour, now)
	if err != nil {
		t.Fatalf("sign a leaf with the intermediate: %v", err)
	}
	if got, err := VerifyLeaf(leaf.CertPEM, []*catalog.CARoot{secondary}, now); err != nil || got != id {
		t.Fatalf("verify through the intermediate: %v %v", got, err)
	}
	// A proxy of the primary trusts only the root and is shown the
	// intermediate by the secondary's proxy.
	rootCert, _ := ParseCert(root.RootCert)
	interCert, _ := ParseCert(inter)
	leafCert, _ := ParseCert(leaf.CertPEM)
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(rootCert)
	inters.AddCert(interCert)
	if _, err := leafCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the primary's root does not verify a secondary's leaf: %v", err)
	}
	// Without the intermediate it does not.
	if _, err := leafCert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatal("a leaf of the intermediate verified without it")
	}

	// Only a signing CSR of the root's trust domain is signed.
	other, _, _ := NewIntermediateCSR(Config{}, TrustDomain("99999999-2222-3333-4444-555555555555"), "dc3")
	if _, err := SignIntermediate(root, other, td, time.Hour, now); !errors.Is(err, ErrNotSigningCSR) {
		t.Fatalf("foreign trust domain: %v", err)
	}
	if _, err := SignIntermediate(root, leafCSR, td, time.Hour, now); !errors.Is(err, ErrNotSigningCSR) {
		t.Fatalf("a leaf CSR as an intermediate: %v", err)
	}
}
