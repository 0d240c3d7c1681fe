package agent_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
)

type uiServiceSummary struct {
	Name                                         string
	Datacenter                                   string
	Tags, Nodes                                  []string
	InstanceCount                                int
	ChecksPassing, ChecksWarning, ChecksCritical int
	ConnectedWithProxy                           bool
}

type uiNodeInfo struct {
	Node     string
	Address  string
	Services []struct{ ID, Service string }
	Checks   []struct{ CheckID, Status, Output, ServiceName string }
}

func decodeJSON[T any](t *testing.T, r httpResult) T {
	t.Helper()
	var v T
	if r.code != http.StatusOK {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

// The UI's summary endpoints: services with health counts and tags (a
// sidecar folded into its service), nodes with their services and checks,
// one node, and a blocking read woken by a check's change.
func TestUIEndpoints(t *testing.T) {
	a, c := startAPI(t)
	self := selfNode(t, c)
	reg := func(r *api.CatalogRegistration) {
		t.Helper()
		if _, err := c.Catalog().Register(r, nil); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	reg(&api.CatalogRegistration{Node: "n1", Address: "10.0.0.1",
		Service: &api.AgentService{ID: "web-1", Service: "web", Tags: []string{"v1"}, Port: 80},
		Checks: api.HealthChecks{
			{CheckID: "web-ok", Name: "web ok", Status: api.HealthPassing, ServiceID: "web-1"},
			{CheckID: "disk", Name: "disk", Status: api.HealthWarning},
		}})
	reg(&api.CatalogRegistration{Node: "n2", Address: "10.0.0.2",
		Service: &api.AgentService{ID: "web-2", Service: "web", Tags: []string{"v2"}, Port: 80}})
	reg(&api.CatalogRegistration{Node: "n2", Address: "10.0.0.2",
		Service: &api.AgentService{ID: "web-2-sidecar", Service: "web-sidecar-proxy", Kind: api.ServiceKindConnectProxy, Port: 21000,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web", DestinationServiceID: "web-2"}}})

	res := httpString(t, a, "GET", "/v1/internal/ui/services", "")
	index := res.header.Get("X-Consul-Index")
	if index == "" || index == "0" {
		t.Fatalf("no X-Consul-Index: %v", res.header)
	}
	sums := decodeJSON[[]uiServiceSummary](t, res)
	var web *uiServiceSummary
	for i := range sums {
		if sums[i].Name == "web-sidecar-proxy" {
			t.Errorf("the sidecar is listed on its own: %+v", sums)
		}
		if sums[i].Name == "web" {
			web = &sums[i]
		}
	}
	if web == nil {
		t.Fatalf("web missing: %+v", sums)
	}
	if web.InstanceCount != 2 || web.ChecksPassing != 1 || web.ChecksWarning != 1 || web.ChecksCritical != 0 ||
		strings.Join(web.Tags, ",") != "v1,v2" || strings.Join(web.Nodes, ",") != "n1,n2" || !web.ConnectedWithProxy || web.Datacenter == "" {
		t.Errorf("web summary = %+v", *web)
	}

	nodes := decodeJSON[[]uiNodeInfo](t, httpString(t, a, "GET", "/v1/internal/ui/nodes", ""))
	if len(nodes) != 3 || nodes[0].Node != "n1" || len(nodes[0].Services) != 1 || len(nodes[0].Checks) != 2 {
		t.Errorf("nodes = %+v (self %s)", nodes, self)
	}
	n1 := decodeJSON[uiNodeInfo](t, httpString(t, a, "GET", "/v1/internal/ui/node/n1", ""))
	if n1.Address != "10.0.0.1" || len(n1.Services) != 1 || n1.Services[0].ID != "web-1" {
		t.Errorf("node n1 = %+v", n1)
	}
	if r := httpString(t, a, "GET", "/v1/internal/ui/node/nope", ""); r.code != http.StatusNotFound {
		t.Errorf("unknown node: %d %s", r.code, r.body)
	}
	if r := httpString(t, a, "GET", "/v1/internal/ui/services?index=x", ""); r.code != http.StatusBadRequest {
		t.Errorf("bad index: %d %s", r.code, r.body)
	}

	// A blocking read returns when a check changes.
	done := make(chan httpResult, 1)
	go func() {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/v1/internal/ui/services?index=%s&wait=30s", a.HTTPAddr(), index), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- httpResult{code: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			done <- httpResult{code: -1, body: err.Error()}
			return
		}
		done <- httpResult{code: resp.StatusCode, header: resp.Header, body: string(b)}
	}()
	reg(&api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
		Check: &api.AgentCheck{CheckID: "web-ok", Name: "web ok", Status: api.HealthCritical, ServiceID: "web-1", Output: "down"}})
	select {
	case r := <-done:
		sums := decodeJSON[[]uiServiceSummary](t, r)
		for _, s := range sums {
			if s.Name == "web" && s.ChecksCritical != 1 {
				t.Errorf("after the check failed: %+v", s)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the blocking read did not wake on a check change")
	}
}

// The UI is served at /ui/ (any page path gets index.html), / redirects to
// it, its settings say whether ACLs are on, and with the UI off neither
// answers.
func TestUIServed(t *testing.T) {
	a, _ := startAPI(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get("http://" + a.HTTPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET / = %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A path that names no file (a Consul UI bookmark) goes to the root.
	resp, err = noRedirect.Get("http://" + a.HTTPAddr() + "/ui/dc1/services")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui/dc1/services = %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, p := range []string{"/ui/", "/ui/dc1/services", "/ui/app.js", "/ui/style.css"} {
		r := httpString(t, a, "GET", p, "")
		if r.code != http.StatusOK || r.header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s = %d %v", p, r.code, r.header)
		}
	}
	if r := httpString(t, a, "GET", "/ui/", ""); !strings.Contains(r.body, `src="app.js"`) {
		t.Errorf("/ui/ is not the index: %.200s", r.body)
	}
	if r := httpString(t, a, "GET", "/ui/app.js", ""); !strings.Contains(r.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js content type %q", r.header.Get("Content-Type"))
	}
	if r := httpString(t, a, "POST", "/ui/", ""); r.code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/ = %d", r.code)
	}
	settings := decodeJSON[map[string]any](t, httpString(t, a, "GET", "/ui/settings.json", ""))
	if settings["ACLsEnabled"] != false || settings["Datacenter"] != "dc1" {
		t.Errorf("settings = %v", settings)
	}

	// Another content path, and files from a directory (ui_config.dir).
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<p>custom</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(config.LoadOptions{Args: []string{"-dev", "-ui-content-path", "console", "-ui-dir", dir}})
	if err != nil {
		t.Fatal(err)
	}
	moved := agenttest.Config(t)
	moved.UI = cfg.UI
	custom := agenttest.Start(t, moved)
	resp, err = noRedirect.Get("http://" + custom.HTTPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Location") != "/console/" {
		t.Errorf("GET / with content path /console/: Location %q", resp.Header.Get("Location"))
	}
	if r := httpString(t, custom, "GET", "/console/services", ""); r.code != http.StatusOK || r.body != "<p>custom</p>" {
		t.Errorf("GET /console/services = %d %q", r.code, r.body)
	}

	cfg = agenttest.Config(t)
	cfg.UI.Enabled = false
	off := agenttest.Start(t, cfg)
	for _, p := range []string{"/", "/ui/"} {
		if r := httpString(t, off, "GET", p, ""); r.code != http.StatusNotFound {
			t.Errorf("UI off: GET %s = %d", p, r.code)
		}
	}
}
