package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/agenttest/inmem"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/gossip"
)

// IDs of what the fixture holds.
const (
	nodeName  = "node-1"
	sessionID = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
	queryID   = "8f246b77-f3e1-ff88-5b48-8ec93abf3e05"
	// Secrets that no refused read may show.
	kvSecret    = "kv-secret-value"
	queryToken  = "query-secret-token"
	serviceName = "websecret"
)

// control is the agent's own life as the API sees it, recording what it was
// asked to do. The real one is the agent itself, which a unit test of the
// API does not start.
type control struct {
	mu              sync.Mutex
	leaves, reloads int
}

func (c *control) Self() httpapi.Member      { return httpapi.Member{Name: nodeName} }
func (c *control) Members() []httpapi.Member { return []httpapi.Member{{Name: nodeName}} }
func (c *control) Leave()                    { c.mu.Lock(); c.leaves++; c.mu.Unlock() }
func (c *control) Reload() error             { c.mu.Lock(); c.reloads++; c.mu.Unlock(); return nil }
func (c *control) Monitor(string, bool) (<-chan []byte, func(), error) {
	return nil, nil, errors.New("no logs here")
}
func (c *control) Stats() map[string]map[string]string {
	return map[string]map[string]string{"agent": {"services": "1"}}
}

func (c *control) acted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaves + c.reloads
}

// noEvents is an event log that never accepted an event.
type noEvents struct{}

func (noEvents) List(string) ([]*gossip.UserEvent, <-chan struct{}) { return nil, nil }

// fixture is an API over an in-memory catalog holding one node with a
// service, a KV key, a session and a prepared query, and over local state
// holding a service with a TTL check and a node check.
type fixture struct {
	api     *httpapi.Handler
	backend *inmem.Backend
	local   *local.State
	control *control
}

func newFixture(t *testing.T, authz acl.Authorizer) *fixture {
	t.Helper()
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	be := inmem.New(fc)
	must := func(typ catalog.CommandType, body any) {
		t.Helper()
		resp, err := be.Apply(context.Background(), typ, body)
		if err == nil {
			err, _ = resp.(error)
		}
		if err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	must(catalog.CmdRegister, &catalog.RegisterRequest{Node: nodeName, Address: "10.0.0.1",
		Service: &catalog.Service{ID: "web-1", Service: serviceName, Port: 80},
		Checks:  []*catalog.HealthCheck{{CheckID: "web-check", Name: "web", ServiceID: "web-1", Status: catalog.HealthPassing}}})
	must(catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: "secret", Value: []byte(kvSecret)}})
	must(catalog.CmdSession, &catalog.SessionRequest{Op: catalog.SessionCreate, Session: catalog.Session{ID: sessionID, Node: nodeName, Behavior: "release"}})
	must(catalog.CmdPreparedQuery, &catalog.PreparedQueryRequest{Op: catalog.PreparedQueryCreate,
		Query: catalog.PreparedQuery{ID: queryID, Name: "q", Token: queryToken, Service: catalog.ServiceQuery{Service: serviceName}}})

	cfg := config.Default()
	cfg.NodeName, cfg.Datacenter = nodeName, "dc1"
	cfg.ACL.Enabled = true
	st := local.New(local.Config{Node: local.Node{Name: nodeName, Datacenter: "dc1"}, Backend: be, Clock: fc})
	st.AddService(&catalog.Service{ID: "web-1", Service: serviceName, Port: 80}, []*local.Check{
		{TTL: time.Minute, Health: &catalog.HealthCheck{CheckID: "web-check", Name: "web", ServiceID: "web-1", Status: catalog.HealthPassing}}})
	if err := st.AddCheck(&local.Check{TTL: time.Minute, Health: &catalog.HealthCheck{CheckID: "node-check", Name: "node", Status: catalog.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	ctl := &control{}
	api := httpapi.New(httpapi.Parts{
		Config: cfg, Version: "test", ACL: acl.StaticResolver{Authorizer: authz},
		Backend: be, Local: st, Events: noEvents{}, Control: ctl,
	})
	return &fixture{api: api, backend: be, local: st, control: ctl}
}

func (f *fixture) do(method, target, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	return rec
}

// TestDenyingAuthorizer sends every request that authorizes through an API
// whose every token resolves to acl.DenyAll. A request for one thing, and
// every write, is refused with 403 and changes nothing: no catalog write, no
// change to local state, no leave or reload. A list answers 200 with what the
// token may see, which is nothing (as Consul filters lists). Each request is
// also sent with an allowing authorizer, which must not answer 403: the
// refusal is the authorizer's.
func TestDenyingAuthorizer(t *testing.T) {
	type row struct {
		method, target, body string
		// want is 403 for a refusal; 200 for a list filtered to nothing,
		// then wantBody is the whole body; 409 for a transaction whose
		// every operation is refused.
		want     int
		wantBody string
		// queryRead marks the prepared-query reads: the authorizer has no
		// query read rule yet, so they answer with the query's
		// definition, its token redacted.
		queryRead bool
	}
	const svcDef = `{"Name":"api","Port":8080}`
	rows := []row{
		// agent
		{"GET", "/v1/agent/self", "", 403, "", false},
		{"GET", "/v1/agent/metrics", "", 403, "", false},
		{"GET", "/v1/agent/xds/proxies", "", 403, "", false},
		{"PUT", "/v1/agent/leave", "", 403, "", false},
		{"PUT", "/v1/agent/reload", "", 403, "", false},
		{"PUT", "/v1/agent/join/127.0.0.1:1", "", 403, "", false},
		{"PUT", "/v1/agent/force-leave/node-2", "", 403, "", false},
		{"GET", "/v1/agent/services", "", 200, "{}", false},
		{"GET", "/v1/agent/service/web-1", "", 403, "", false},
		{"PUT", "/v1/agent/service/register", svcDef, 403, "", false},
		{"PUT", "/v1/agent/service/deregister/web-1", "", 403, "", false},
		{"PUT", "/v1/agent/service/maintenance/web-1?enable=true", "", 403, "", false},
		{"PUT", "/v1/agent/maintenance?enable=true", "", 403, "", false},
		{"GET", "/v1/agent/checks", "", 200, "{}", false},
		{"PUT", "/v1/agent/check/register", `{"Name":"c2","TTL":"10s"}`, 403, "", false},
		{"PUT", "/v1/agent/check/deregister/node-check", "", 403, "", false},
		{"PUT", "/v1/agent/check/pass/node-check", "", 403, "", false},
		{"PUT", "/v1/agent/check/warn/node-check", "", 403, "", false},
		{"PUT", "/v1/agent/check/fail/node-check", "", 403, "", false},
		{"PUT", "/v1/agent/check/update/node-check", `{"Status":"critical","Output":"x"}`, 403, "", false},
		{"GET", "/v1/agent/health/service/id/web-1", "", 403, "", false},
		{"GET", "/v1/agent/host", "", 403, "", false},
		{"GET", "/v1/agent/monitor?loglevel=debug", "", 403, "", false},
		{"GET", "/debug/pprof/heap", "", 403, "", false},
		{"GET", "/v1/agent/health/service/name/" + serviceName, "", 403, "", false},
		// catalog and health
		{"PUT", "/v1/catalog/register", `{"Node":"node-2","Address":"10.0.0.2"}`, 403, "", false},
		{"PUT", "/v1/catalog/deregister", `{"Node":"node-1"}`, 403, "", false},
		{"GET", "/v1/catalog/nodes", "", 200, "[]", false},
		{"GET", "/v1/internal/ui/services", "", 200, "[]", false},
		{"GET", "/v1/internal/ui/nodes", "", 200, "[]", false},
		{"GET", "/v1/internal/ui/node/" + nodeName, "", 403, "", false},
		{"GET", "/v1/catalog/services", "", 200, "{}", false},
		{"GET", "/v1/catalog/service/" + serviceName, "", 403, "", false},
		{"GET", "/v1/catalog/node/node-1", "", 403, "", false},
		{"GET", "/v1/catalog/node-services/node-1", "", 403, "", false},
		{"GET", "/v1/health/node/node-1", "", 200, "[]", false},
		{"GET", "/v1/health/checks/" + serviceName, "", 200, "[]", false},
		{"GET", "/v1/health/state/any", "", 200, "[]", false},
		{"GET", "/v1/health/service/" + serviceName, "", 403, "", false},
		{"GET", "/v1/health/connect/" + serviceName, "", 403, "", false},
		{"GET", "/v1/catalog/connect/" + serviceName, "", 403, "", false},
		{"GET", "/v1/catalog/gateway-services/" + serviceName, "", 403, "", false},
		{"GET", "/v1/health/ingress/" + serviceName, "", 403, "", false},
		{"GET", "/v1/coordinate/nodes", "", 200, "[]", false},
		{"GET", "/v1/coordinate/node/node-1", "", 404, "", false}, // filtered away, so not found
		{"PUT", "/v1/coordinate/update", `{"Node":"node-1","Coord":{"Vec":[0,0,0,0,0,0,0,0],"Error":1.5,"Adjustment":0,"Height":0.00001}}`, 403, "", false},
		// KV and transactions
		{"GET", "/v1/kv/secret", "", 403, "", false},
		{"GET", "/v1/kv/?recurse", "", 403, "", false},
		{"GET", "/v1/kv/?keys", "", 403, "", false},
		{"PUT", "/v1/kv/secret", "new", 403, "", false},
		{"DELETE", "/v1/kv/secret", "", 403, "", false},
		{"PUT", "/v1/txn", `[{"KV":{"Verb":"set","Key":"secret","Value":"eA=="}}]`, 409, "", false},
		{"PUT", "/v1/txn", `[{"KV":{"Verb":"get","Key":"secret"}}]`, 409, "", false},
		// sessions
		{"PUT", "/v1/session/create", `{"Node":"node-1"}`, 403, "", false},
		{"PUT", "/v1/session/destroy/" + sessionID, "", 403, "", false},
		{"PUT", "/v1/session/renew/" + sessionID, "", 403, "", false},
		{"GET", "/v1/session/info/" + sessionID, "", 200, "[]", false},
		{"GET", "/v1/session/node/node-1", "", 200, "[]", false},
		{"GET", "/v1/session/list", "", 200, "[]", false},
		// prepared queries
		{"POST", "/v1/query", `{"Name":"q2","Service":{"Service":"web"}}`, 403, "", false},
		{"PUT", "/v1/query/" + queryID, `{"Name":"q","Service":{"Service":"other"}}`, 403, "", false},
		{"DELETE", "/v1/query/" + queryID, "", 403, "", false},
		{"GET", "/v1/query", "", 200, "", true},
		{"GET", "/v1/query/" + queryID, "", 200, "", true},
		{"GET", "/v1/query/" + queryID + "/execute", "", 200, "", true},
		{"GET", "/v1/query/" + queryID + "/explain", "", 200, "", true},
		// events, snapshots, operator
		{"PUT", "/v1/event/fire/deploy", "", 403, "", false},
		{"GET", "/v1/snapshot", "", 403, "", false},
		{"PUT", "/v1/snapshot", "x", 403, "", false},
		{"GET", "/v1/operator/raft/configuration", "", 403, "", false},
		{"DELETE", "/v1/operator/raft/peer?id=x", "", 403, "", false},
		{"GET", "/v1/operator/autopilot/health", "", 403, "", false},
		{"POST", "/v1/operator/raft/transfer-leader", "", 403, "", false},
		{"GET", "/v1/operator/autopilot/state", "", 403, "", false},
		{"GET", "/v1/operator/usage", "", 403, "", false},
		{"GET", "/v1/operator/autopilot/configuration", "", 403, "", false},
		{"PUT", "/v1/operator/autopilot/configuration", `{"CleanupDeadServers":false}`, 403, "", false},
		{"GET", "/v1/operator/keyring", "", 403, "", false},
		{"POST", "/v1/operator/keyring", `{"Key":"x"}`, 403, "", false},
		{"PUT", "/v1/operator/keyring", `{"Key":"x"}`, 403, "", false},
		{"DELETE", "/v1/operator/keyring", `{"Key":"x"}`, 403, "", false},

		{"PUT", "/v1/acl/token", `{"Description":"x"}`, 403, "", false},
		{"DELETE", "/v1/acl/token/x", "", 403, "", false},
		{"GET", "/v1/acl/tokens", "", 403, "", false},
		{"PUT", "/v1/acl/policy", `{"Name":"p"}`, 403, "", false},
		{"DELETE", "/v1/acl/policy/x", "", 403, "", false},
		{"GET", "/v1/acl/policies", "", 403, "", false},
		{"PUT", "/v1/acl/role", `{"Name":"r"}`, 403, "", false},
		{"DELETE", "/v1/acl/role/x", "", 403, "", false},
		{"GET", "/v1/acl/roles", "", 403, "", false},
		{"PUT", "/v1/acl/auth-method", `{"Name":"m","Type":"jwt"}`, 403, "", false},
		{"DELETE", "/v1/acl/auth-method/x", "", 403, "", false},
		{"GET", "/v1/acl/auth-methods", "", 403, "", false},
		{"PUT", "/v1/acl/binding-rule", `{"AuthMethod":"m","BindType":"service","BindName":"x"}`, 403, "", false},
		{"DELETE", "/v1/acl/binding-rule/x", "", 403, "", false},
		{"GET", "/v1/acl/binding-rules", "", 403, "", false},
		{"PUT", "/v1/agent/token/default", `{"Token":"x"}`, 403, "", false},
		// connect: CA, leaves, config entries, intentions
		{"GET", "/v1/connect/ca/configuration", "", 403, "", false},
		{"PUT", "/v1/connect/ca/configuration", `{"Provider":"consul","Config":{}}`, 403, "", false},
		{"GET", "/v1/agent/connect/ca/leaf/" + serviceName, "", 403, "", false},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"` + serviceName + `"}`, 403, "", false},
		{"GET", "/v1/config/service-defaults/" + serviceName, "", 403, "", false},
		{"GET", "/v1/config/service-defaults", "", 200, "[]", false},
		{"GET", "/v1/discovery-chain/" + serviceName, "", 403, "", false},
		{"GET", "/v1/config/inline-certificate/" + serviceName, "", 403, "", false},
		{"GET", "/v1/config/inline-certificate", "", 200, "[]", false},
		{"PUT", "/v1/internal/service-virtual-ip", `{"Service":"` + serviceName + `","ManualVIPs":["1.1.1.1"]}`, 403, "", false},
		{"PUT", "/v1/config", `{"Kind":"service-resolver","Name":"` + serviceName + `"}`, 403, "", false},
		{"DELETE", "/v1/config/service-defaults/" + serviceName, "", 403, "", false},
		{"GET", "/v1/connect/intentions/exact?source=a&destination=" + serviceName, "", 403, "", false},
		{"PUT", "/v1/connect/intentions/exact?source=a&destination=" + serviceName, `{"Action":"allow"}`, 403, "", false},
		{"DELETE", "/v1/connect/intentions/exact?source=a&destination=" + serviceName, "", 403, "", false},
		{"GET", "/v1/connect/intentions/check?source=a&destination=" + serviceName, "", 403, "", false},
		{"GET", "/v1/connect/intentions", "", 200, "[]", false},
		{"POST", "/v1/connect/intentions", `{"SourceName":"a","DestinationName":"` + serviceName + `","Action":"allow"}`, 403, "", false},
		{"GET", "/v1/connect/intentions/match?by=destination&name=other", "", 200, `{"other":[]}`, false},
		{"GET", "/v1/connect/intentions/" + queryID, "", 404, "", false}, // no such intention
		{"POST", "/v1/agent/connect/authorize", `{"Target":"` + serviceName + `","ClientCertURI":"spiffe://x.consul/ns/default/dc/dc1/svc/a"}`, 403, "", false},
	}
	// Every endpoint is in the table but those that authorize nothing.
	open := map[string]bool{
		"/v1/status/leader": true, "/v1/status/peers": true, "/v1/catalog/datacenters": true,
		"/v1/agent/members": true, "/v1/event/list": true, "/v1/coordinate/datacenters": true,
		"/v1/acl/bootstrap": true,
		// A login is authorized by its bearer token, a logout by the
		// login token it deletes; replication status is public.
		"/v1/acl/login": true, "/v1/acl/logout": true, "/v1/acl/replication": true,
		"/v1/connect/ca/roots": true, "/v1/agent/connect/ca/roots": true,
	}
	patterns := httpapi.RoutePatterns(newFixture(t, acl.DenyAll()).api)
	for _, pattern := range patterns {
		covered := open[pattern]
		for _, tc := range rows {
			path, _, _ := strings.Cut(tc.target, "?")
			if path == pattern || (strings.HasSuffix(pattern, "/") && strings.HasPrefix(path, pattern) &&
				!coveredByLonger(pattern, path, patterns)) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("endpoint %s is not in the table", pattern)
		}
	}

	for _, tc := range rows {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			f := newFixture(t, acl.DenyAll())
			svcs, checks := f.local.Services(), f.local.Checks()
			writes := f.backend.Applies()

			rec := f.do(tc.method, tc.target, tc.body)
			body := rec.Body.String()
			if rec.Code != tc.want {
				t.Fatalf("answered %d (%q), want %d", rec.Code, body, tc.want)
			}
			if (tc.want == http.StatusForbidden || tc.want == http.StatusConflict) && !strings.Contains(body, acl.ErrPermissionDenied.Error()) {
				t.Errorf("%d body %q does not say %q", tc.want, body, acl.ErrPermissionDenied)
			}
			if tc.want == http.StatusOK && tc.wantBody != "" && body != tc.wantBody {
				t.Errorf("filtered answer %q, want %q", body, tc.wantBody)
			}
			secrets := []string{kvSecret, queryToken, serviceName}
			if tc.queryRead {
				secrets = secrets[:2]
			}
			for _, secret := range secrets {
				// A name the request itself carries is no secret to
				// its sender (a 403 names the resource it was refused).
				if strings.Contains(body, secret) && !strings.Contains(tc.target, secret) {
					t.Errorf("refused request shows %q: %s", secret, body)
				}
			}
			if n := f.backend.Applies(); n != writes {
				t.Errorf("refused request made %d catalog writes", n-writes)
			}
			if !reflect.DeepEqual(f.local.Services(), svcs) || !reflect.DeepEqual(f.local.Checks(), checks) {
				t.Error("refused request changed the local services or checks")
			}
			if f.control.acted() != 0 {
				t.Error("refused request made the agent leave or reload")
			}

			// With an allowing authorizer the same request is not refused.
			if rec := newFixture(t, acl.AllowAll()).do(tc.method, tc.target, tc.body); rec.Code == http.StatusForbidden {
				t.Errorf("allowed request answered 403: %s", rec.Body)
			}
		})
	}
}

// coveredByLonger reports whether a longer pattern than pattern serves path.
func coveredByLonger(pattern, path string, patterns []string) bool {
	for _, p := range patterns {
		if len(p) > len(pattern) && (p == path || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p))) {
			return true
		}
	}
	return false
}
