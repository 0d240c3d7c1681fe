package agent_test

import (
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/xds"
)

// A sidecar's TLS material comes over SDS on its ADS stream, as Envoy asks
// for the secrets its clusters and listeners name: the leaf secret holds
// the service's leaf certificate and key (the one /v1/agent/connect/ca/leaf
// returns), the roots secret the CA roots.
func TestXDSDeltaSidecarSecrets(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, agenttest.Config(t), "")
	x := newDeltaClient(t, a, "web-sidecar-proxy", "")
	subscribeSidecar(t, x)
	x.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{xds.LeafSecretName, xds.RootsSecretName}})
	sds := x.next(resource.SecretType)
	secrets := map[string]*tlsv3.Secret{}
	for _, res := range sds.GetResources() {
		var s tlsv3.Secret
		if err := res.GetResource().UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		if err := s.ValidateAll(); err != nil {
			t.Fatalf("secret %s invalid: %v", s.GetName(), err)
		}
		secrets[s.GetName()] = &s
	}
	x.ack(sds)
	leaf, _, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := secrets[xds.LeafSecretName].GetTlsCertificate()
	if got.GetCertificateChain().GetInlineString() != leaf.CertPEM || got.GetPrivateKey().GetInlineString() != leaf.PrivateKeyPEM {
		t.Fatal("the leaf secret is not web's leaf certificate")
	}
	trusted := secrets[xds.RootsSecretName].GetValidationContext().GetTrustedCa().GetInlineString()
	for _, r := range roots.Roots {
		if !strings.Contains(trusted, r.RootCertPEM) {
			t.Fatalf("root %s missing from the roots secret", r.ID)
		}
	}
}
