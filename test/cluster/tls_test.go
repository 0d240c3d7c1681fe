package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/tlsconfig/tlstest"
)

// TestACLAndTLSEverywhere runs 3 servers and 2 client agents as real
// processes with ACLs on (default deny) and TLS on the server port (Raft
// and RPC: verify_incoming, verify_outgoing, verify_server_hostname) and
// on HTTPS with client certificates required. The cluster forms, and a KV
// write through one client over HTTPS is read through the other.
func TestACLAndTLSEverywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	p := tlstest.NewPKI(t, "dc1")
	var mu sync.Mutex
	httpsPorts := map[string]int{}
	c := procs.StartCluster(t, procs.Options{Servers: 3, Clients: 2, AgentArgs: func(name string, server bool) []string {
		pair, acl := p.Client, `acl { enabled = true, default_policy = "deny", tokens { agent = "root" } }`
		if server {
			pair = p.Server
			acl = `acl { enabled = true, default_policy = "deny", tokens { initial_management = "root", agent = "root" } }`
		}
		port := procs.FreePorts(t, 1)[0]
		mu.Lock()
		httpsPorts[name] = port
		mu.Unlock()
		return []string{"-https-port", strconv.Itoa(port), "-hcl", acl, "-hcl", fmt.Sprintf(`tls {
  defaults { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = true, verify_outgoing = true }
  internal_rpc { verify_server_hostname = true }
}`, p.CAFile, pair.Cert, pair.Key)}
	}})
	https := func(a *procs.Agent, token string) *api.Client {
		cl, err := api.NewClient(&api.Config{Address: fmt.Sprintf("127.0.0.1:%d", httpsPorts[a.Name]), Scheme: "https", Token: token,
			TLSConfig: api.TLSConfig{CAFile: p.CAFile, CertFile: p.CLI.Cert, KeyFile: p.CLI.Key}})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	c1, c2 := https(c.Clients[0], "root"), https(c.Clients[1], "root")
	waitUntil(t, 60*time.Second, "a write through client c1 over HTTPS", func() error {
		_, err := c1.KV().Put(&api.KVPair{Key: "secure", Value: []byte("yes")}, nil)
		return err
	})
	waitUntil(t, 30*time.Second, "the read through client c2 over HTTPS", func() error {
		kv, _, err := c2.KV().Get("secure", &api.QueryOptions{RequireConsistent: true})
		if err != nil {
			return err
		}
		if kv == nil || string(kv.Value) != "yes" {
			return fmt.Errorf("got %v", kv)
		}
		return nil
	})
	// Five members joined, all over encrypted RPC.
	members, err := c1.Agent().Members(false)
	if err != nil || len(members) != 5 {
		t.Fatalf("members: %d %v", len(members), err)
	}
	// ACLs are on: without a token the write is refused.
	if _, err := https(c.Clients[0], "").KV().Put(&api.KVPair{Key: "anon", Value: []byte("x")}, nil); err == nil ||
		!strings.Contains(err.Error(), "403") {
		t.Fatalf("anonymous write: %v, want 403", err)
	}
	// Without a client certificate HTTPS refuses the connection.
	noCert, _ := api.NewClient(&api.Config{Address: fmt.Sprintf("127.0.0.1:%d", httpsPorts["c1"]), Scheme: "https", Token: "root",
		TLSConfig: api.TLSConfig{CAFile: p.CAFile}})
	if _, _, err := noCert.KV().Get("secure", nil); err == nil {
		t.Fatal("HTTPS served a client without a certificate")
	}
	for _, a := range append(append([]*procs.Agent{}, c.Servers...), c.Clients...) {
		if !a.Contains("HTTPS API listening") {
			t.Errorf("%s: no HTTPS listener", a.Name)
		}
		if a.Contains("TLS handshake with server failed") {
			t.Errorf("%s: an RPC handshake failed:\n%s", a.Name, a.Tail(2000))
		}
	}
}
