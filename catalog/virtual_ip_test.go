package catalog_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

func vipOf(t *testing.T, s *catalog.Store, svc string) *catalog.ServiceVirtualIP {
	t.Helper()
	_, v, err := s.ServiceVirtualIPOf(nil, svc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func proxyFor(id, dest string) *catalog.Service {
	return &catalog.Service{Kind: "connect-proxy", ID: id, Service: dest + "-sidecar-proxy", Port: 21000,
		Proxy: &catalog.ConnectProxyConfig{DestinationServiceName: dest}}
}

// TestVirtualIPs: connect services and discovery chain entries get
// addresses from 240.0.0.1 up, the lowest free one first; an address is
// released with the last thing that named its service.
func TestVirtualIPs(t *testing.T) {
	s := newStore(t)
	registerNode(t, s, 1, "n1")
	register(t, s, 2, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: &catalog.Service{ID: "plain", Service: "plain"}})
	if v := vipOf(t, s, "plain"); v != nil {
		t.Fatalf("a service outside the mesh got %+v", v)
	}
	register(t, s, 3, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: proxyFor("web-proxy", "web")})
	register(t, s, 4, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: &catalog.Service{ID: "native", Service: "api",
		Connect: &catalog.ServiceConnect{Native: true}}})
	if r := s.ConfigEntryApply(5, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert,
		Entry: catalog.ConfigEntry{Kind: catalog.KindServiceResolver, Name: "db", Body: []byte(`{}`)}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for svc, want := range map[string]string{"web": "240.0.0.1", "api": "240.0.0.2", "db": "240.0.0.3"} {
		if v := vipOf(t, s, svc); v == nil || v.IP() != want {
			t.Errorf("%s: %+v, want %s", svc, v, want)
		}
	}
	// A second proxy for web keeps its address; removing one of two keeps it.
	register(t, s, 6, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: proxyFor("web-proxy-2", "web")})
	if err := s.Deregister(7, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web-proxy"}); err != nil {
		t.Fatal(err)
	}
	if v := vipOf(t, s, "web"); v == nil || v.IP() != "240.0.0.1" {
		t.Fatalf("web after one proxy left: %+v", v)
	}
	if err := s.Deregister(8, &catalog.DeregisterRequest{Node: "n1", ServiceID: "web-proxy-2"}); err != nil {
		t.Fatal(err)
	}
	if v := vipOf(t, s, "web"); v != nil {
		t.Fatalf("web after its last proxy left: %+v", v)
	}
	// The freed lowest address is taken next.
	register(t, s, 9, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: proxyFor("cache-proxy", "cache")})
	if v := vipOf(t, s, "cache"); v == nil || v.IP() != "240.0.0.1" {
		t.Fatalf("cache: %+v", v)
	}

	// Re-registering a proxy with a changed port counts it once; moving it
	// to another destination moves the count.
	p := proxyFor("cache-proxy", "cache")
	p.Port = 21001
	register(t, s, 10, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: p})
	p2 := proxyFor("cache-proxy", "db")
	register(t, s, 11, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: p2})
	if v := vipOf(t, s, "cache"); v != nil {
		t.Fatalf("cache after its proxy moved to db: %+v", v)
	}
	if v := vipOf(t, s, "db"); v == nil || v.Instances != 1 || v.IP() != "240.0.0.3" {
		t.Fatalf("db with a proxy and a resolver: %+v", v)
	}
	// The resolver keeps db's address once the proxy leaves; deleting it
	// then releases the address.
	if err := s.Deregister(12, &catalog.DeregisterRequest{Node: "n1", ServiceID: "cache-proxy"}); err != nil {
		t.Fatal(err)
	}
	if v := vipOf(t, s, "db"); v == nil {
		t.Fatal("db lost its address while its resolver exists")
	}
	register(t, s, 13, &catalog.RegisterRequest{Node: "n1", Address: "10.0.0.1", Service: proxyFor("db-proxy", "db")})

	// Snapshots carry the addresses.
	var buf bytes.Buffer
	if err := s.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	s2 := newStore(t)
	if err := s2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if v := vipOf(t, s2, "db"); v == nil || v.IP() != "240.0.0.3" {
		t.Fatalf("restored db: %+v", v)
	}
	if err := s.Deregister(14, &catalog.DeregisterRequest{Node: "n1", ServiceID: "db-proxy"}); err != nil {
		t.Fatal(err)
	}
	if r := s.ConfigEntryApply(15, &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryDelete,
		Entry: catalog.ConfigEntry{Kind: catalog.KindServiceResolver, Name: "db"}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if v := vipOf(t, s, "db"); v != nil {
		t.Fatalf("db after its resolver and proxies left: %+v", v)
	}
}

// TestManualVirtualIPs plays the client's TestAPI_Internal_AssignServiceVirtualIP.
func TestManualVirtualIPs(t *testing.T) {
	s := newStore(t)
	for i, name := range []string{"one", "two", "three"} {
		if r := s.ConfigEntryApply(uint64(i+1), &catalog.ConfigEntryRequest{Op: catalog.ConfigEntryUpsert,
			Entry: catalog.ConfigEntry{Kind: catalog.KindServiceResolver, Name: name, Body: []byte(`{}`)}}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	idx := uint64(10)
	for _, tc := range []struct {
		svc   string
		vips  []string
		found bool
		from  []string
	}{
		{"missing", []string{"1.1.1.1", "2.2.2.2"}, false, nil},
		{"one", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}, true, nil},
		{"two", []string{"2.2.2.2"}, true, []string{"one"}},
		{"three", []string{"3.3.3.3"}, true, []string{"one"}},
		{"missing", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}, false, nil},
		{"one", []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"}, true, []string{"three", "two"}},
	} {
		idx++
		res := s.AssignManualVirtualIPs(idx, &catalog.VirtualIPRequest{Service: tc.svc, ManualVIPs: tc.vips})
		if res.Err != nil || res.Found != tc.found || !reflect.DeepEqual(res.UnassignedFrom, tc.from) {
			t.Fatalf("%s %v = %+v, want found %v from %v", tc.svc, tc.vips, res, tc.found, tc.from)
		}
	}
	if v := vipOf(t, s, "two"); len(v.ManualIPs) != 0 {
		t.Errorf("two kept %v", v.ManualIPs)
	}
	if err := (&catalog.VirtualIPRequest{Service: "one", ManualVIPs: []string{"not-an-ip"}}).Validate(); err == nil {
		t.Error("a bad IP passed validation")
	}
}
