package agent_test

import (
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// aclCluster starts one server and one client agent with ACLs on (deny
// by default) and returns the management clients of both and the client
// agent.
func aclCluster(t testing.TB) (srv, cli *api.Client, client *agent.Agent) {
	t.Helper()
	sc := aclConfig(agenttest.ClusterConfig(t, "s1", true, 1, ""))
	s := agenttest.StartNoWait(t, sc)
	cc := aclConfig(agenttest.ClusterConfig(t, "c1", false, 0, agenttest.SerfAddr(sc)))
	cc.ACL.Tokens.InitialManagement = "" // only servers create it
	c := agenttest.StartNoWait(t, cc)
	srv, cli = tokenClient(t, s, rootSecret), tokenClient(t, c, rootSecret)
	waitManagement(t, srv)
	waitManagement(t, cli)
	return srv, cli, c
}

// readerToken creates a token that may read app/ and returns its accessor
// and secret.
func readerToken(t testing.TB, srv *api.Client) (string, string) {
	t.Helper()
	if p, _, err := srv.ACL().PolicyReadByName("app-read", nil); err != nil || p == nil {
		if _, _, err := srv.ACL().PolicyCreate(&api.ACLPolicy{Name: "app-read", Rules: `key_prefix "app/" { policy = "read" }`}, nil); err != nil {
			t.Fatalf("policy: %v", err)
		}
	}
	tok, _, err := srv.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "app-read"}}}, nil)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	return tok.AccessorID, tok.SecretID
}

// kvStatus is the status of GET /v1/kv/app/x on an agent with a token.
func kvStatus(t testing.TB, addr, secret string) int {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/kv/app/x", nil)
	req.Header.Set("X-Consul-Token", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("kv get: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// revoke deletes a token warmed into the client agent's cache and returns
// how long until the client agent first refuses it.
func revoke(t testing.TB, srv *api.Client, client *agent.Agent, accessor, secret string) time.Duration {
	t.Helper()
	addr := client.HTTPAddr()
	if code := kvStatus(t, addr, secret); code != http.StatusOK {
		t.Fatalf("token before delete: status %d", code)
	}
	start := time.Now()
	if _, err := srv.ACL().TokenDelete(accessor, nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	for {
		if kvStatus(t, addr, secret) == http.StatusForbidden {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("deleted token still accepted by the client agent after %s", time.Since(start))
		}
		time.Sleep(time.Millisecond)
	}
}

func TestACLRevocationOnClientAgent(t *testing.T) {
	srv, _, client := aclCluster(t)
	if _, err := srv.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	accessor, secret := readerToken(t, srv)
	// The client agent may see the new token a moment after the server.
	wait.For(t, 5*time.Second, func() error {
		if code := kvStatus(t, client.HTTPAddr(), secret); code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	if d := revoke(t, srv, client, accessor, secret); d > time.Second {
		t.Fatalf("revocation took %s on the client agent, want < 1s", d)
	} else {
		t.Logf("revocation seen on the client agent after %s", d)
	}
	// A changed policy applies at once too: write is now refused.
	_, secret = readerToken(t, srv)
	wait.For(t, 5*time.Second, func() error {
		if code := kvStatus(t, client.HTTPAddr(), secret); code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	p, _, err := srv.ACL().PolicyReadByName("app-read", nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Rules = `key_prefix "app/" { policy = "deny" }`
	if _, _, err := srv.ACL().PolicyUpdate(p, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Second, func() error {
		if code := kvStatus(t, client.HTTPAddr(), secret); code != http.StatusForbidden {
			return fmt.Errorf("status %d after the policy denied", code)
		}
		return nil
	})
}

// BenchmarkTokenRevocation measures the time from DELETE /v1/acl/token/<id>
// on a server to the first 403 for that token on a client agent whose cache
// held it. Reported: the median and max over b.N revocations.
func BenchmarkTokenRevocation(b *testing.B) {
	srv, _, client := aclCluster(b)
	if _, err := srv.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil); err != nil {
		b.Fatal(err)
	}
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		accessor, secret := readerToken(b, srv)
		wait.For(b, 5*time.Second, func() error {
			if code := kvStatus(b, client.HTTPAddr(), secret); code != http.StatusOK {
				return fmt.Errorf("status %d", code)
			}
			return nil
		})
		b.StartTimer()
		ds = append(ds, revoke(b, srv, client, accessor, secret))
	}
	b.StopTimer()
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, "max-ms")
}
