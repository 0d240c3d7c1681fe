package cluster

import (
	"fmt"
	"os"
	"path/filepath"
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

// TestAutoEncryptClients runs 3 servers with auto_encrypt.allow_tls and a
// client agent that has only the CA file (auto_encrypt.tls, as the
// consul-k8s DaemonSet runs it): the client gets its certificate from the
// servers, joins over TLS and serves a KV write and read over HTTPS with
// that certificate.
func TestAutoEncryptClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	p := tlstest.NewPKI(t, "dc1")
	httpsPort := procs.FreePorts(t, 1)[0]
	c := procs.StartCluster(t, procs.Options{Servers: 3, Clients: 1, AgentArgs: func(name string, server bool) []string {
		if server {
			return []string{"-hcl", "auto_encrypt { allow_tls = true }", "-hcl", "connect { enabled = true }", "-hcl", fmt.Sprintf(`tls {
  defaults { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = true, verify_outgoing = true }
  internal_rpc { verify_server_hostname = true }
}`, p.CAFile, p.Server.Cert, p.Server.Key)}
		}
		return []string{"-https-port", strconv.Itoa(httpsPort), "-hcl", "auto_encrypt { tls = true }", "-hcl", fmt.Sprintf(`tls {
  defaults { ca_file = %q, verify_outgoing = true }
  internal_rpc { verify_server_hostname = true }
}`, p.CAFile)}
	}})
	// The client's HTTPS certificate is the Connect CA's: trust its roots.
	// The leader creates the CA once elected: wait for it.
	var roots *api.CARootList
	waitUntil(t, 60*time.Second, "the Connect CA roots", func() error {
		var err error
		roots, _, err = c.Servers[0].Client(t).Connect().CARoots(nil)
		if err == nil && len(roots.Roots) == 0 {
			err = fmt.Errorf("no roots yet")
		}
		return err
	})
	caFile := filepath.Join(t.TempDir(), "connect-ca.pem")
	if err := os.WriteFile(caFile, []byte(roots.Roots[0].RootCertPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := api.NewClient(&api.Config{Address: fmt.Sprintf("127.0.0.1:%d", httpsPort), Scheme: "https",
		TLSConfig: api.TLSConfig{CAFile: caFile}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "a write through the auto_encrypt client over HTTPS", func() error {
		_, err := cl.KV().Put(&api.KVPair{Key: "auto", Value: []byte("encrypt")}, nil)
		return err
	})
	kv, _, err := cl.KV().Get("auto", &api.QueryOptions{RequireConsistent: true})
	if err != nil || kv == nil || string(kv.Value) != "encrypt" {
		t.Fatalf("read back: %v %v", kv, err)
	}
	if !c.Clients[0].Contains("agent certificate obtained from the servers") {
		t.Errorf("client log:\n%s", c.Clients[0].Tail(2000))
	}
}
