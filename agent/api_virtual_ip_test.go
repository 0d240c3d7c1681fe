package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// TestAPIServiceVirtualIP carries the expectations of the client's
// TestAPI_Internal_AssignServiceVirtualIP, and checks that the discovery
// chain reports the addresses.
func TestAPIServiceVirtualIP(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, name := range []string{"one", "two", "three"} {
		if ok, _, err := c.ConfigEntries().Set(&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: name}, nil); err != nil || !ok {
			t.Fatalf("resolver %s: %v %v", name, ok, err)
		}
	}
	psn := func(names ...string) []api.PeeredServiceName {
		var out []api.PeeredServiceName
		for _, n := range names {
			out = append(out, api.PeeredServiceName{ServiceName: api.CompoundServiceName{Name: n}})
		}
		return out
	}
	for _, tc := range []struct {
		svc   string
		vips  []string
		found bool
		from  []api.PeeredServiceName
	}{
		{"missing", []string{"1.1.1.1", "2.2.2.2"}, false, nil},
		{"one", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}, true, nil},
		{"two", []string{"2.2.2.2"}, true, psn("one")},
		{"three", []string{"3.3.3.3"}, true, psn("one")},
		{"missing", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}, false, nil},
		{"one", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"}, true, psn("three", "two")},
	} {
		resp, _, err := c.Internal().AssignServiceVirtualIP(ctx, tc.svc, tc.vips, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.svc, err)
		}
		if len(resp.UnassignedFrom) == 0 {
			resp.UnassignedFrom = nil
		}
		if resp.ServiceFound != tc.found || !reflect.DeepEqual(resp.UnassignedFrom, tc.from) {
			t.Errorf("%s %v = %+v, want found %v from %v", tc.svc, tc.vips, resp, tc.found, tc.from)
		}
	}
	chain, _, err := c.DiscoveryChain().Get("one", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Chain struct{ AutoVirtualIPs, ManualVirtualIPs []string }
	}
	res := httpString(t, a, http.MethodGet, "/v1/discovery-chain/one", "")
	if err := json.Unmarshal([]byte(res.body), &raw); err != nil || len(raw.Chain.AutoVirtualIPs) != 1 || len(raw.Chain.ManualVirtualIPs) != 4 || chain.Chain.ServiceName != "one" {
		t.Errorf("chain of one = %s (%v)", res.body, err)
	}
	for _, body := range []string{`{"Service":"one","ManualVIPs":["nope"]}`, `{"ManualVIPs":["1.1.1.1"]}`} {
		if r := httpString(t, a, http.MethodPut, "/v1/internal/service-virtual-ip", body); r.code != http.StatusBadRequest {
			t.Errorf("PUT %s = %d %s", body, r.code, r.body)
		}
	}
}
