//lint:file-ignore SA1019 the legacy intention ID API is tested on purpose: clients still call it.

package agent_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestAPIConfigEntries(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	ce := c.ConfigEntries()

	ok, _, err := ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http", Meta: map[string]string{"team": "a"}}, nil)
	if err != nil || !ok {
		t.Fatalf("set: %v %v", ok, err)
	}
	got, meta, err := ce.Get(api.ServiceDefaults, "web", nil)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	sd, isSD := got.(*api.ServiceConfigEntry)
	if !isSD || sd.Protocol != "http" || sd.Meta["team"] != "a" || sd.ModifyIndex == 0 || meta.LastIndex == 0 {
		t.Fatalf("get = %#v", got)
	}
	// CAS: a stale index fails, the current one succeeds.
	sd.Protocol = "grpc"
	if ok, _, err := ce.CAS(sd, sd.ModifyIndex-1, nil); err != nil || ok {
		t.Fatalf("stale CAS = %v %v", ok, err)
	}
	if ok, _, err := ce.CAS(sd, sd.ModifyIndex, nil); err != nil || !ok {
		t.Fatalf("CAS = %v %v", ok, err)
	}
	if ok, _, err := ce.Set(&api.ProxyConfigEntry{Kind: api.ProxyDefaults, Name: api.ProxyConfigGlobal, Config: map[string]interface{}{"protocol": "http"}}, nil); err != nil || !ok {
		t.Fatalf("proxy-defaults: %v %v", ok, err)
	}
	if ok, _, err := ce.Set(&api.MeshConfigEntry{TransparentProxy: api.TransparentProxyMeshConfig{MeshDestinationsOnly: true}}, nil); err != nil || !ok {
		t.Fatalf("mesh: %v %v", ok, err)
	}
	list, _, err := ce.List(api.ServiceDefaults, nil)
	if err != nil || len(list) != 1 || list[0].(*api.ServiceConfigEntry).Protocol != "grpc" {
		t.Fatalf("list = %v %v", list, err)
	}

	// Deleting an entry, and one that does not exist, answer 200.
	if _, err := ce.Delete(api.ServiceDefaults, "web", nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := ce.Get(api.ServiceDefaults, "web", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("get deleted = %v", err)
	}
	if _, err := ce.Delete(api.ServiceIntentions, "never-written", nil); err != nil {
		t.Fatalf("delete missing: %v", err)
	}

	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPut, "/v1/config", `{"Kind":"nope","Name":"x"}`},
		{http.MethodGet, "/v1/config/nope", ``},
		{http.MethodPut, "/v1/config", `{"Kind":"service-defaults"}`},
		{http.MethodPut, "/v1/config", `{"Kind":"proxy-defaults","Name":"web"}`},
		{http.MethodPut, "/v1/config", `{"Kind":"mesh","Name":"other"}`},
		{http.MethodPut, "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocol":7}`},
		{http.MethodPut, "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"maybe"}]}`},
		{http.MethodPut, "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"web","Action":"deny"}]}`},
		{http.MethodPut, "/v1/config?cas=x", `{"Kind":"mesh","Name":"mesh"}`},
		{http.MethodPut, "/v1/config", `[1]`},
	} {
		if res := httpString(t, a, tc.method, tc.path, tc.body); res.code != http.StatusBadRequest {
			t.Errorf("%s %s %s = %d %s, want 400", tc.method, tc.path, tc.body, res.code, res.body)
		}
	}
}

func TestAPIIntentionsAndAuthorize(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	roots := waitRoots(t, c)
	conn := c.Connect()

	uri := func(svc string) string { return "spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/" + svc }
	authorize := func(src, dst string) *api.AgentAuthorize {
		t.Helper()
		res, err := c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: dst, ClientCertURI: uri(src)})
		if err != nil {
			t.Fatalf("authorize %s -> %s: %v", src, dst, err)
		}
		return res
	}
	check := func(src, dst string) bool {
		t.Helper()
		ok, _, err := conn.IntentionCheck(&api.IntentionCheck{Source: src, Destination: dst}, nil)
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		return ok
	}
	// No intentions, ACLs off: allowed by default.
	if r := authorize("web", "db"); !r.Authorized || !check("web", "db") {
		t.Fatalf("default = %+v", r)
	}
	if _, err := conn.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatalf("upsert: %v", err)
	}
	if _, err := conn.IntentionUpsert(&api.Intention{SourceName: "*", DestinationName: "db", Action: api.IntentionActionAllow}, nil); err != nil {
		t.Fatalf("upsert wildcard: %v", err)
	}
	if r := authorize("web", "db"); r.Authorized || !strings.Contains(r.Reason, "web => db") {
		t.Fatalf("web -> db = %+v", r)
	}
	if r := authorize("api", "db"); !r.Authorized || check("web", "db") || !check("api", "db") {
		t.Fatalf("api -> db = %+v", r)
	}
	ixn, _, err := conn.IntentionGetExact("web", "db", nil)
	if err != nil || ixn == nil || ixn.Action != api.IntentionActionDeny || ixn.Precedence != 9 {
		t.Fatalf("get exact = %+v %v", ixn, err)
	}
	// The intentions are a service-intentions config entry.
	e, _, err := c.ConfigEntries().Get(api.ServiceIntentions, "db", nil)
	if err != nil || len(e.(*api.ServiceIntentionsConfigEntry).Sources) != 2 {
		t.Fatalf("entry = %+v %v", e, err)
	}
	if _, err := conn.IntentionDeleteExact("web", "db", nil); err != nil {
		t.Fatalf("delete exact: %v", err)
	}
	if r := authorize("web", "db"); !r.Authorized {
		t.Fatalf("after delete = %+v", r)
	}
	if _, err := conn.IntentionDeleteExact("*", "db", nil); err != nil {
		t.Fatalf("delete wildcard: %v", err)
	}
	if _, _, err := c.ConfigEntries().Get(api.ServiceIntentions, "db", nil); err == nil {
		t.Fatal("entry survives its last source")
	}
	// The legacy ID API over the same entries.
	id, _, err := conn.IntentionCreate(&api.Intention{SourceName: "api", DestinationName: "db", Action: api.IntentionActionAllow}, nil)
	if err != nil || id == "" {
		t.Fatalf("create: %q %v", id, err)
	}
	if _, _, err := conn.IntentionCreate(&api.Intention{SourceName: "api", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err == nil {
		t.Fatal("duplicate create succeeded")
	}
	if _, _, err := conn.IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "*", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	list, _, err := conn.Intentions(nil)
	if err != nil || len(list) != 2 || list[0].DestinationName != "db" || list[1].DestinationName != "*" || list[0].ID != id {
		t.Fatalf("list = %+v %v", list, err)
	}
	got, _, err := conn.IntentionGet(id, nil)
	if err != nil || got == nil || got.SourceName != "api" || got.CreatedAt.IsZero() {
		t.Fatalf("get = %+v %v", got, err)
	}
	match, _, err := conn.IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchDestination, Names: []string{"db"}}, nil)
	if err != nil || len(match["db"]) != 2 {
		t.Fatalf("match = %+v %v", match, err)
	}
	got.SourceName = "api2"
	if _, err := conn.IntentionUpdate(got, nil); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got, _, err := conn.IntentionGet(id, nil); err != nil || got.SourceName != "api2" {
		t.Fatalf("after update = %+v %v", got, err)
	}
	if _, err := conn.IntentionDelete(id, nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got, _, err := conn.IntentionGet(id, nil); err != nil || got != nil {
		t.Fatalf("deleted = %+v %v", got, err)
	}
	if _, _, err := conn.IntentionGet("hello", nil); err == nil || !strings.Contains(err.Error(), "UUID") {
		t.Fatalf("bad ID = %v", err)
	}

	// Bad input.
	if _, err := c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: "db", ClientCertURI: "http://x"}); err == nil {
		t.Fatal("authorize with a non-SPIFFE URI succeeded")
	}
	if _, err := conn.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: "maybe"}, nil); err == nil {
		t.Fatal("upsert with a bad action succeeded")
	}
}
