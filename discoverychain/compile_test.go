package discoverychain

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// entriesFromJSON reads entries written as the API takes them.
func entriesFromJSON(t *testing.T, src string) *Entries {
	t.Helper()
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(src), &raw); err != nil {
		t.Fatalf("entries: %v", err)
	}
	var list []*catalog.ConfigEntry
	for _, m := range raw {
		var kind, name string
		_ = json.Unmarshal(m["Kind"], &kind)
		_ = json.Unmarshal(m["Name"], &name)
		delete(m, "Kind")
		delete(m, "Name")
		body, _ := json.Marshal(m)
		if kind != catalog.KindServiceDefaults && kind != catalog.KindProxyDefaults {
			var err error
			if body, err = catalog.NormalizeConfigEntry(kind, name, body); err != nil {
				t.Fatalf("%s/%s: %v", kind, name, err)
			}
		}
		list = append(list, &catalog.ConfigEntry{Kind: kind, Name: name, Body: body})
	}
	e, err := FromConfigEntries(list)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const trustDomain = "11111111-2222-3333-4444-555555555555.consul"

// TestCompileGolden compiles chains and compares them with
// testdata/<name>.golden (go test -update rewrites them).
func TestCompileGolden(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     Request
		entries string
	}{
		{name: "default", req: Request{Service: "web", Datacenter: "dc1"}, entries: `[]`},
		{name: "resolver-timeout", req: Request{Service: "web", Datacenter: "dc1"},
			entries: `[{"Kind":"service-resolver","Name":"web","ConnectTimeout":"33s"}]`},
		{name: "overrides", req: Request{Service: "web", Datacenter: "dc2", OverrideProtocol: "grpc", OverrideConnectTimeout: 22 * time.Second, OverrideMeshGateway: "local"},
			entries: `[{"Kind":"service-resolver","Name":"web","ConnectTimeout":"33s"}]`},
		{name: "subsets-failover", req: Request{Service: "web", Datacenter: "dc1"}, entries: `[
			{"Kind":"service-resolver","Name":"web","DefaultSubset":"v1",
			 "Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2","OnlyPassing":true}},
			 "Failover":{"*":{"Datacenters":["dc2","dc3"]},"v2":{"Targets":[{"Peer":"cluster-01"},{"Service":"backup"}]}}}]`},
		{name: "redirect", req: Request{Service: "old", Datacenter: "dc1"}, entries: `[
			{"Kind":"service-resolver","Name":"old","Redirect":{"Service":"new","Datacenter":"dc2"}},
			{"Kind":"service-resolver","Name":"new","DefaultSubset":"v2","Subsets":{"v2":{"Filter":"Service.Meta.v == 2"}}}]`},
		{name: "redirect-self-dc", req: Request{Service: "web", Datacenter: "dc1"},
			entries: `[{"Kind":"service-resolver","Name":"web","Redirect":{"Datacenter":"dc2"},"ConnectTimeout":"3s"}]`},
		{name: "router-splitter", req: Request{Service: "web", Datacenter: "dc1"}, entries: `[
			{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"}},
			{"Kind":"service-router","Name":"web","Routes":[
				{"Match":{"HTTP":{"PathPrefix":"/admin","Methods":["get"]}},"Destination":{"Service":"admin","RequestTimeout":"2s","NumRetries":3}},
				{"Match":{"HTTP":{"Header":[{"Name":"x-canary","Exact":"1"}]}},"Destination":{"ServiceSubset":"canary"}}]},
			{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"stable"},{"Weight":10,"Service":"web-next"}]},
			{"Kind":"service-splitter","Name":"web-next","Splits":[{"Weight":50,"ServiceSubset":"a"},{"Weight":50,"ServiceSubset":"b"}]},
			{"Kind":"service-resolver","Name":"web","Subsets":{"stable":{"Filter":"Service.Meta.track == stable"},"canary":{"Filter":"Service.Meta.track == canary"}},
			 "LoadBalancer":{"Policy":"least_request","LeastRequestConfig":{"ChoiceCount":3}}},
			{"Kind":"service-resolver","Name":"web-next","Subsets":{"a":{},"b":{}}}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.TrustDomain = trustDomain
			chain, err := CompileRequest(entriesFromJSON(t, tc.entries), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(chain, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("chain differs from %s:\n%s", path, got)
			}
		})
	}
}

// TestCompileErrors: sets of entries that make no valid chain.
func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, service, entries, want string
	}{
		{"router on tcp", "web", `[{"Kind":"service-router","Name":"web","Routes":[]}]`, "does not permit advanced routing"},
		{"splitter on tcp", "web", `[{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100}]}]`, "does not permit advanced routing"},
		{"mixed protocols", "web", `[{"Kind":"service-defaults","Name":"web","Protocol":"http"},{"Kind":"service-defaults","Name":"db","Protocol":"grpc"},
			{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50},{"Weight":50,"Service":"db"}]}]`, "inconsistent protocols"},
		{"missing subset", "web", `[{"Kind":"service-defaults","Name":"web","Protocol":"http"},
			{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"ServiceSubset":"v9"}]}]`, "does not have a subset named"},
		{"redirect loop", "a", `[{"Kind":"service-resolver","Name":"a","Redirect":{"Service":"b"}},{"Kind":"service-resolver","Name":"b","Redirect":{"Service":"a"}}]`, "circular resolver redirect"},
		{"splitter loop", "a", `[{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http"}},
			{"Kind":"service-splitter","Name":"a","Splits":[{"Weight":50},{"Weight":50,"Service":"b"}]},
			{"Kind":"service-splitter","Name":"b","Splits":[{"Weight":50},{"Weight":50,"Service":"a"}]}]`, "circular reference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(entriesFromJSON(t, tc.entries), tc.service, "dc1")
			if err == nil || !errors.Is(err, ErrInvalidChain) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
