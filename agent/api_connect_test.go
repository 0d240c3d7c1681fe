package agent_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// waitRoots waits until the CA has an active root and returns the list.
func waitRoots(t *testing.T, c *api.Client) *api.CARootList {
	t.Helper()
	var roots *api.CARootList
	wait.For(t, 10*time.Second, func() error {
		r, _, err := c.Agent().ConnectCARoots(nil)
		if err != nil {
			return err
		}
		if len(r.Roots) == 0 || r.ActiveRootID == "" {
			return fmt.Errorf("no active root yet: %+v", r)
		}
		roots = r
		return nil
	})
	return roots
}

// rawRoot is a root with the fields the official client does not decode.
type rawRoot struct {
	ID                  string
	SigningKeyID        string
	NotBefore, NotAfter time.Time
	RootCert            string
	IntermediateCerts   []string
	Active              bool
	PrivateKeyBits      int
}

func rawRoots(t *testing.T, a *agent.Agent) (out struct{ Roots []rawRoot }) {
	t.Helper()
	res := httpString(t, a, http.MethodGet, "/v1/connect/ca/roots", "")
	if err := json.Unmarshal([]byte(res.body), &out); err != nil || len(out.Roots) == 0 {
		t.Fatalf("roots %d %s: %v", res.code, res.body, err)
	}
	return out
}

func parsePEMCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM block in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAPIConnect_CARootsAndLeaf(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	roots := waitRoots(t, c)
	if !strings.HasSuffix(roots.TrustDomain, ".consul") || len(roots.Roots) != 1 {
		t.Fatalf("roots = %+v", roots)
	}
	root := roots.Roots[0]
	if !root.Active || root.ID != roots.ActiveRootID || root.RootCertPEM == "" {
		t.Fatalf("root = %+v", root)
	}
	if full := rawRoots(t, a); full.Roots[0].SigningKeyID == "" || !full.Roots[0].NotAfter.After(full.Roots[0].NotBefore) ||
		full.Roots[0].IntermediateCerts == nil {
		t.Fatalf("raw root = %+v", full.Roots[0])
	}
	// The server-side endpoint answers the same; neither carries a key.
	r2, meta, err := c.Connect().CARoots(nil)
	if err != nil || r2.ActiveRootID != roots.ActiveRootID || meta.LastIndex == 0 {
		t.Fatalf("CARoots = %+v %+v %v", r2, meta, err)
	}
	for _, path := range []string{"/v1/connect/ca/roots", "/v1/agent/connect/ca/roots"} {
		if res := httpString(t, a, http.MethodGet, path, ""); res.code != 200 || strings.Contains(res.body, "PRIVATE") {
			t.Fatalf("%s = %d %s", path, res.code, res.body)
		}
	}

	conf, _, err := c.Connect().CAGetConfig(nil)
	if err != nil || conf.Provider != "consul" || conf.Config["LeafCertTTL"] != "72h0m0s" || conf.Config["PrivateKeyType"] != "ec" {
		t.Fatalf("CAGetConfig = %+v, %v", conf, err)
	}

	leaf, lmeta, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatalf("leaf: %v", err)
	}
	if leaf.Service != "web" || !strings.HasSuffix(leaf.ServiceURI, "/svc/web") || !strings.HasPrefix(leaf.ServiceURI, "spiffe://"+roots.TrustDomain+"/ns/default/dc/dc1") ||
		leaf.PrivateKeyPEM == "" || leaf.SerialNumber == "" || lmeta.LastIndex == 0 {
		t.Fatalf("leaf = %+v", leaf)
	}
	cert := parsePEMCert(t, leaf.CertPEM)
	pool := x509.NewCertPool()
	pool.AddCert(parsePEMCert(t, root.RootCertPEM))
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not verify to the root: %v", err)
	}
	// The second call is answered from the cache: the same leaf.
	again, _, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil || again.SerialNumber != leaf.SerialNumber {
		t.Fatalf("cached leaf = %+v, %v", again, err)
	}

	// A blocking leaf query wakes when a rotation replaces the leaf.
	ch := goBlock(func() (*api.LeafCert, *api.QueryMeta, error) {
		return c.Agent().ConnectCALeaf("web", &api.QueryOptions{WaitIndex: lmeta.LastIndex, WaitTime: 20 * time.Second})
	})
	rootsCh := goBlock(func() (*api.CARootList, *api.QueryMeta, error) {
		return c.Agent().ConnectCARoots(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 20 * time.Second})
	})
	conf.Config["PrivateKeyBits"] = 384
	if _, err := c.Connect().CASetConfig(conf, nil); err != nil {
		t.Fatalf("CASetConfig: %v", err)
	}
	res := recvBlock(t, ch, 15*time.Second)
	if rb := recvBlock(t, rootsCh, 15*time.Second); rb.meta.LastIndex <= meta.LastIndex || len(rb.val.Roots) != 2 || rb.elapsed > 10*time.Second {
		t.Fatalf("blocking roots query answered %+v at %d after %v", rb.val, rb.meta.LastIndex, rb.elapsed)
	}
	rotated := waitRoots(t, c)
	if len(rotated.Roots) != 2 || rotated.ActiveRootID == roots.ActiveRootID {
		t.Fatalf("after rotation: %+v", rotated)
	}
	var newRoot *rawRoot
	for _, r := range rawRoots(t, a).Roots {
		if r.ID == roots.ActiveRootID && r.Active {
			t.Fatal("old root still active")
		}
		if r.Active {
			newRoot = &r
		}
	}
	if newRoot == nil || len(newRoot.IntermediateCerts) != 1 || newRoot.PrivateKeyBits != 384 {
		t.Fatalf("new root = %+v", newRoot)
	}
	if res.val.SerialNumber == leaf.SerialNumber || res.meta.LastIndex <= lmeta.LastIndex {
		t.Fatalf("leaf not replaced on rotation: %+v", res.val)
	}
	newCert := parsePEMCert(t, res.val.CertPEM)
	newPool := x509.NewCertPool()
	newPool.AddCert(parsePEMCert(t, newRoot.RootCert))
	if _, err := newCert.Verify(x509.VerifyOptions{Roots: newPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("new leaf does not verify to the new root: %v", err)
	}
	// A proxy that trusts only the old root still accepts the new leaf
	// through the cross-signed certificate appended to its chain.
	inter := x509.NewCertPool()
	rest := []byte(res.val.CertPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := newCert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("new leaf does not verify to the old root through the cross-signed cert: %v", err)
	}

	// Bad input.
	if res := httpString(t, a, http.MethodPut, "/v1/connect/ca/configuration", `{"Provider":"consul","Config":{"PrivateKeyType":"dsa"}}`); res.code != 400 {
		t.Fatalf("bad key type = %d %s", res.code, res.body)
	}
	if res := httpString(t, a, http.MethodPut, "/v1/connect/ca/configuration", `{"Provider":"vault","Config":{}}`); res.code != 400 {
		t.Fatalf("vault provider = %d %s", res.code, res.body)
	}
	if res := httpString(t, a, http.MethodPut, "/v1/connect/ca/configuration", `{"Config":{"LeafCertTTL":"x"}}`); res.code != 400 {
		t.Fatalf("bad TTL = %d %s", res.code, res.body)
	}
}

func TestAPIConnect_CAConfigFromAgentConfig(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	cfg.Connect.CAConfig = map[string]interface{}{"cluster_id": "11111111-2222-3333-4444-555555555555", "leaf_cert_ttl": "2h", "private_key_bits": 384}
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	roots := waitRoots(t, c)
	if roots.TrustDomain != "11111111-2222-3333-4444-555555555555.consul" {
		t.Fatalf("trust domain %q", roots.TrustDomain)
	}
	conf, _, err := c.Connect().CAGetConfig(nil)
	if err != nil || conf.Config["LeafCertTTL"] != "2h0m0s" || conf.Config["PrivateKeyBits"] != float64(384) {
		t.Fatalf("config = %+v %v", conf, err)
	}

	for _, bad := range []map[string]interface{}{
		{"cluster_id": "not-a-uuid"},
		{"leaf_cert_ttl": "1s"},
		{"private_key_type": "dsa"},
	} {
		cfg := agenttest.Config(t)
		cfg.Connect.CAConfig = bad
		if a, err := agent.New(cfg, nil); err == nil {
			_ = a.Shutdown(context.Background())
			t.Errorf("agent started with connect.ca_config %v", bad)
		}
	}
}
