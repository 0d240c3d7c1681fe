package connect

import (
	"errors"
	"testing"
	"time"
)

func TestSignAgentLeafWithPlaceholderTrustDomain(t *testing.T) {
	root := newRoot(t, t0)
	want := ID{Kind: KindAgent, TrustDomain: td, Datacenter: "dc1", Node: "c1"}
	asked := want
	asked.TrustDomain = AgentCSRTrustDomain
	csr, _, err := NewLeafCSR(asked, "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := SignLeaf(root, csr, want, time.Hour, t0)
	if err != nil {
		t.Fatalf("agent CSR with the placeholder trust domain: %v", err)
	}
	cert, err := ParseCert(leaf.CertPEM)
	if err != nil || len(cert.URIs) != 1 || cert.URIs[0].String() != want.String() {
		t.Fatalf("leaf URIs %v (%v), want %s", cert.URIs, err, want)
	}
	// The placeholder does not stand in for another node or for a
	// service.
	other := want
	other.Node = "c2"
	if _, err := SignLeaf(root, csr, other, time.Hour, t0); !errors.Is(err, ErrCSRMismatch) {
		t.Fatalf("CSR for another node: %v", err)
	}
	svc, _, _ := NewLeafCSR(ID{Kind: KindService, TrustDomain: AgentCSRTrustDomain, Namespace: DefaultNamespace, Datacenter: "dc1", Service: "web"}, "ec", 256)
	if _, err := SignLeaf(root, svc, ServiceID(td, "dc1", "web"), time.Hour, t0); !errors.Is(err, ErrCSRMismatch) {
		t.Fatalf("service CSR with the placeholder: %v", err)
	}
}
