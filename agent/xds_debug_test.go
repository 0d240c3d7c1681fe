package agent_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
	"github.com/tribune-mesh/tribune/xds"
)

// getXDSProxies reads GET /v1/agent/xds/proxies with token and returns the
// HTTP status and the decoded list.
func getXDSProxies(t *testing.T, addr, token string) (int, []xds.StreamStatus) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/agent/xds/proxies", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var out []xds.StreamStatus
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return resp.StatusCode, out
}

// The debug view of the connected proxies: a raw delta client ACKs the
// clusters and listeners, then NACKs the next listener version; the view
// shows, for its stream, the version sent and ACKed of each type and the
// NACK with Envoy's message, and it needs agent:read with ACLs on.
func TestXDSDebugProxiesView(t *testing.T) {
	t.Parallel()
	a, c := meshAgentWith(t, aclConfig(agenttest.Config(t)), rootSecret)
	const node = "web-sidecar-proxy"
	x := newDeltaClient(t, a, node, rootSecret)
	subscribeSidecar(t, x)

	if code, _ := getXDSProxies(t, a.HTTPAddr(), ""); code != http.StatusForbidden {
		t.Fatalf("anonymous read of the view: %d, want 403", code)
	}
	// A token with agent:read alone may read it.
	pol, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{Name: "agent-read", Rules: `agent_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := a.XDSServer()
	var lds1 string
	wait.For(t, 10*time.Second, func() error {
		lds1 = srv.Acked(node, resource.ListenerType)
		_, list := getXDSProxies(t, a.HTTPAddr(), tok.SecretID)
		if len(list) != 1 || list[0].Proxy != node || !list[0].Delta || list[0].Started.IsZero() {
			return fmt.Errorf("streams = %+v", list)
		}
		for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
			ts := list[0].Types[typ]
			if ts.SentVersion == "" || ts.AckedVersion != ts.SentVersion || ts.LastNack != nil {
				return fmt.Errorf("%s: %+v", typ, ts)
			}
		}
		if list[0].Types[resource.ListenerType].AckedVersion != lds1 {
			return fmt.Errorf("listeners acked %+v, server says %s", list[0].Types[resource.ListenerType], lds1)
		}
		return nil
	})

	// An intention change (an allow: ACLs deny by default): the proxy
	// NACKs the new listeners.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "web",
		Sources: []*api.SourceIntention{{Name: "api", Action: api.IntentionActionAllow}}}, nil); err != nil {
		t.Fatal(err)
	}
	lds2 := x.next(resource.ListenerType)
	x.nack(lds2, "test: listener rejected")
	wait.For(t, 10*time.Second, func() error {
		_, list := getXDSProxies(t, a.HTTPAddr(), rootSecret)
		if len(list) != 1 {
			return fmt.Errorf("streams = %+v", list)
		}
		ts := list[0].Types[resource.ListenerType]
		if ts.LastNack == nil || ts.LastNack.Error != "test: listener rejected" || ts.LastNack.Version != lds2.GetSystemVersionInfo() || ts.LastNack.At.IsZero() {
			return fmt.Errorf("listeners: %+v (nack %+v)", ts, ts.LastNack)
		}
		if ts.SentVersion != lds2.GetSystemVersionInfo() || ts.AckedVersion != lds1 {
			return fmt.Errorf("listeners sent %s acked %s, want %s and %s", ts.SentVersion, ts.AckedVersion, lds2.GetSystemVersionInfo(), lds1)
		}
		return nil
	})
	// The stream gone, the view is empty.
	x.cancel()
	wait.For(t, 10*time.Second, func() error {
		if _, list := getXDSProxies(t, a.HTTPAddr(), rootSecret); len(list) != 0 {
			return fmt.Errorf("streams after the client left = %+v", list)
		}
		return nil
	})
}
