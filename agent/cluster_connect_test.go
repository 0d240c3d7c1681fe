package agent_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// TestClusterConnectCA runs the CA on three servers and a client agent: one
// cluster ID and one root however many leaders there are, a leaf signed
// through the client's RPC, the root kept across a leader change, and a
// rotation asked of the client that the client's leaf follows.
func TestClusterConnectCA(t *testing.T) {
	t.Parallel()
	srvs, cls := startCluster(t, 3, 1)
	client := cls[0].api

	roots := waitRoots(t, client)
	if len(roots.Roots) != 1 {
		t.Fatalf("roots = %+v", roots)
	}
	leaf, meta, err := client.Agent().ConnectCALeaf("web", nil)
	if err != nil || leaf.Service != "web" {
		t.Fatalf("leaf through the client: %+v %v", leaf, err)
	}

	// A new leader keeps the cluster's identity and root.
	old := leaderOf(t, srvs)
	old.stop(t)
	var rest []*node
	for _, s := range srvs {
		if s != old {
			rest = append(rest, s)
		}
	}
	oldAddr := fmt.Sprintf("127.0.0.1:%d", old.cfg.Ports.Server)
	wait.For(t, 30*time.Second, func() error {
		l, err := rest[0].api.Status().Leader()
		if err != nil || l == "" || l == oldAddr {
			return fmt.Errorf("leader %q (%v)", l, err)
		}
		return nil
	})
	wait.For(t, 20*time.Second, func() error {
		r, _, err := rest[0].api.Connect().CARoots(nil)
		if err != nil {
			return err
		}
		if r.TrustDomain != roots.TrustDomain || r.ActiveRootID != roots.ActiveRootID || len(r.Roots) != 1 {
			return fmt.Errorf("roots after leader change: %+v", r)
		}
		return nil
	})

	// Rotation through the client agent; its cached leaf follows.
	ch := goBlock(func() (*api.LeafCert, *api.QueryMeta, error) {
		return client.Agent().ConnectCALeaf("web", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
	})
	var conf *api.CAConfig
	wait.For(t, 20*time.Second, func() error {
		var err error
		conf, _, err = client.Connect().CAGetConfig(nil)
		return err
	})
	conf.Config["PrivateKeyType"] = "rsa"
	conf.Config["PrivateKeyBits"] = 2048
	wait.For(t, 20*time.Second, func() error {
		_, err := client.Connect().CASetConfig(conf, nil)
		return err
	})
	res := recvBlock(t, ch, 30*time.Second)
	after := waitRoots(t, client)
	if after.ActiveRootID == roots.ActiveRootID || len(after.Roots) != 2 {
		t.Fatalf("roots after rotation: %+v", after)
	}
	if res.val.SerialNumber == leaf.SerialNumber {
		t.Fatal("client's leaf not replaced after the rotation")
	}
	cert := parsePEMCert(t, res.val.CertPEM)
	// The agent makes its leaf key of the active root's type.
	if cert.PublicKeyAlgorithm.String() != "RSA" {
		t.Fatalf("leaf key %v after rotating to an rsa root", cert.PublicKeyAlgorithm)
	}
}
