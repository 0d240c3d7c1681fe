package xds

import (
	"bytes"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// The leaf and the roots reach the proxy as SDS secrets that every TLS
// context names: no cluster or listener carries them, proxies of different
// services share their upstream clusters (the same objects), and a leaf
// renewal changes only the secrets.
func TestBuildSecrets(t *testing.T) {
	m := NewMemo()
	web := testProxy(t)
	api := *web
	api.ID, api.Service, api.PublicPort = "api-sidecar-proxy", "api", 21001
	api.LeafCert, api.LeafKey = "API-LEAF-CERT", "API-LEAF-KEY"
	a, err := BuildMemo(web, m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildMemo(&api, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, snap := range []*Snapshot{a, b} {
		if err := snap.Consistent(); err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
			for name, r := range snap.GetResources(typ) {
				raw, err := proto.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(raw, []byte(web.LeafKey)) || bytes.Contains(raw, []byte(api.LeafKey)) || bytes.Contains(raw, []byte(web.Roots[0])) {
					t.Errorf("%s %s carries TLS material", typ, name)
				}
			}
		}
	}
	for name, r := range a.GetResources(resource.ClusterType) {
		if name != LocalAppCluster && b.GetResources(resource.ClusterType)[name] != r {
			t.Errorf("cluster %s not shared between the proxies", name)
		}
	}
	leaf := func(s *Snapshot) *tlsv3.TlsCertificate {
		sec, _ := s.GetResources(resource.SecretType)[LeafSecretName].(*tlsv3.Secret)
		if err := sec.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		return sec.GetTlsCertificate()
	}
	if leaf(a).GetPrivateKey().GetInlineString() != web.LeafKey || leaf(b).GetCertificateChain().GetInlineString() != api.LeafCert {
		t.Fatal("the leaf secrets are not the proxies' leaves")
	}
	roots := a.GetResources(resource.SecretType)[RootsSecretName].(*tlsv3.Secret)
	if roots.GetValidationContext().GetTrustedCa().GetInlineString() != web.Roots[0] || b.GetResources(resource.SecretType)[RootsSecretName] != roots {
		t.Fatal("the roots secret is wrong or not shared")
	}

	// A renewed leaf: new secrets, the same clusters and listeners.
	web.LeafCert, web.LeafKey = "RENEWED-CERT", "RENEWED-KEY"
	c, err := BuildMemo(web, m)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetVersion(resource.SecretType) == a.GetVersion(resource.SecretType) {
		t.Error("a renewed leaf kept the secrets' version")
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		if c.GetVersion(typ) != a.GetVersion(typ) {
			t.Errorf("a renewed leaf changed the %s version", typ)
		}
	}
}
