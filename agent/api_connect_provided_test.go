package agent_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// testCA returns a self-signed certificate (a CA one when isCA) and its
// key in PEM.
func testCA(t *testing.T, trustDomain string, isCA bool) (certPEM, keyPEM string) {
	t.Helper()
	return selfSignedPEMOf(t, &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "CA Modified"},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
		BasicConstraintsValid: true, IsCA: isCA,
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().AddDate(10, 0, 0),
	})
}

// An operator's own CA, given as the built-in provider's RootCert and
// PrivateKey, becomes the active root beside the old one, and leaves are
// then signed by it (the official client's TestConnectRootsWatch and
// TestConnectLeafWatch); setting it again changes nothing; a certificate
// without its key, a key of another certificate and a certificate that is
// not a CA are refused with 400.
func TestAPIConnect_ProvidedRoot(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	roots := waitRoots(t, c)
	conf, _, err := c.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, keyPEM := testCA(t, roots.TrustDomain, true)
	conf.Config["RootCert"], conf.Config["PrivateKey"] = rootPEM, keyPEM
	if _, err := c.Connect().CASetConfig(conf, nil); err != nil {
		t.Fatalf("CASetConfig with a provided root: %v", err)
	}
	after := waitRoots(t, c)
	var active *api.CARoot
	for _, r := range after.Roots {
		if r.Active {
			active = r
		}
	}
	if len(after.Roots) != 2 || after.ActiveRootID == roots.ActiveRootID || active == nil || active.Name != "CA Modified" {
		t.Fatalf("roots after the provided root: %+v", after)
	}
	leaf, _, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(parsePEMCert(t, active.RootCertPEM))
	if _, err := parsePEMCert(t, leaf.CertPEM).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not verify to the provided root: %v", err)
	}
	// The same root again: no rotation.
	if _, err := c.Connect().CASetConfig(conf, nil); err != nil {
		t.Fatal(err)
	}
	if again := waitRoots(t, c); len(again.Roots) != 2 || again.ActiveRootID != after.ActiveRootID {
		t.Fatalf("setting the same root again rotated: %+v", again)
	}

	otherPEM, otherKey := testCA(t, roots.TrustDomain, true)
	leafPEM, leafKey := testCA(t, roots.TrustDomain, false)
	for name, cfg := range map[string]map[string]any{
		"cert without key":  {"RootCert": otherPEM},
		"key of another CA": {"RootCert": otherPEM, "PrivateKey": keyPEM},
		"not a CA":          {"RootCert": leafPEM, "PrivateKey": leafKey},
		"not PEM":           {"RootCert": "nope", "PrivateKey": otherKey},
	} {
		_, err := c.Connect().CASetConfig(&api.CAConfig{Provider: "consul", Config: cfg}, nil)
		if statusOf(err) != http.StatusBadRequest {
			t.Errorf("%s: %v, want 400", name, err)
		}
	}
	if res := httpString(t, a, http.MethodPut, "/v1/connect/ca/configuration", `{"Provider":"consul","Config":{"RootCert":1}}`); res.code != 400 {
		t.Fatalf("RootCert not a string: %d %s", res.code, res.body)
	}
}
