package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// webCatalog is a small catalog: three nodes, service web on each (one
// warning, one with its own address), db on n1 critical, and a node with a
// host name for an address.
func webCatalog(t testing.TB) *storeSource {
	s := newStoreSource()
	s.node(t, "agent1", "127.0.0.1", nil)
	s.node(t, "n1", "10.0.0.1", map[string]string{"rack": "r1", "rfc1035-raw": "just the value"})
	s.node(t, "n2", "10.0.0.2", nil)
	s.register(t, &catalog.RegisterRequest{Node: "n3", Address: "2001:db8::3",
		TaggedAddresses: map[string]string{"lan_ipv4": "10.0.0.3"}})
	s.node(t, "hostnode", "host.example.com", nil)
	s.service(t, "n1", &catalog.Service{ID: "web1", Service: "web", Tags: []string{"v1", "primary"}, Port: 8080}, catalog.HealthPassing)
	s.service(t, "n2", &catalog.Service{ID: "web2", Service: "web", Tags: []string{"v2"}, Port: 8081,
		Weights: catalog.Weights{Passing: 10, Warning: 2}}, catalog.HealthWarning)
	s.service(t, "n3", &catalog.Service{ID: "web3", Service: "web", Tags: []string{"v1"}, Port: 8082, Address: "192.0.2.10"}, catalog.HealthPassing)
	s.service(t, "n1", &catalog.Service{ID: "db1", Service: "db", Port: 5432}, catalog.HealthCritical)
	s.service(t, "hostnode", &catalog.Service{ID: "ext", Service: "ext", Port: 443}, "")
	s.service(t, "n1", &catalog.Service{ID: "named", Service: "named", Port: 80, Address: "svc.example.org"}, "")
	return s
}

func TestServiceA(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	m := ask(t, h, "web.service.consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if !m.Authoritative {
		t.Error("answer not authoritative")
	}
	if got := addrs(m.Answer); !sameSet(got, []string{"10.0.0.1", "10.0.0.2", "192.0.2.10"}) {
		t.Fatalf("A answers = %v", got)
	}
	for _, rr := range m.Answer {
		if rr.Header().Name != "web.service.consul." {
			t.Fatalf("owner %s", rr.Header().Name)
		}
	}
	// Case-insensitive, owner as asked.
	m = ask(t, h, "WEB.Service.CONSUL.", dns.TypeA, "tcp")
	if len(m.Answer) != 3 || m.Answer[0].Header().Name != "WEB.Service.CONSUL." {
		t.Fatalf("mixed case: %v", m.Answer)
	}
	// The local datacenter by name, both forms.
	for _, n := range []string{"web.service.dc1.consul.", "web.service.dc1.dc.consul."} {
		if m := ask(t, h, n, dns.TypeA, "tcp"); len(m.Answer) != 3 {
			t.Fatalf("%s: %v", n, m)
		}
	}
}

func TestServiceAAAAAndNodata(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	// Only web3's node has IPv6, but web3 has its own IPv4 address.
	m := ask(t, h, "web.service.consul.", dns.TypeAAAA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if len(m.Answer) != 0 {
		t.Fatalf("AAAA answers = %v", m.Answer)
	}
	wantSOA(t, m, "consul.")

	m = ask(t, h, "web.service.consul.", dns.TypeTXT, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if len(m.Answer) != 0 {
		t.Fatalf("TXT answers = %v", m.Answer)
	}
	wantSOA(t, m, "consul.")
}

func TestServiceSRV(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	m := ask(t, h, "web.service.consul.", dns.TypeSRV, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	srvs := ofType[*dns.SRV](m.Answer)
	if len(srvs) != 3 {
		t.Fatalf("SRV answers = %v", m.Answer)
	}
	byPort := map[uint16]*dns.SRV{}
	for _, s := range srvs {
		byPort[s.Port] = s
	}
	if s := byPort[8080]; s == nil || s.Target != "n1.node.dc1.consul." || s.Weight != 1 || s.Priority != 1 {
		t.Errorf("web1 SRV = %v", s)
	}
	if s := byPort[8081]; s == nil || s.Target != "n2.node.dc1.consul." || s.Weight != 2 {
		t.Errorf("web2 (warning) SRV = %v, want the warning weight 2", s)
	}
	if s := byPort[8082]; s == nil || s.Target != "c000020a.addr.dc1.consul." {
		t.Errorf("web3 (own address) SRV = %v", s)
	}
	extra := map[string][]string{}
	for _, rr := range m.Extra {
		switch r := rr.(type) {
		case *dns.A:
			extra[r.Hdr.Name] = append(extra[r.Hdr.Name], r.A.String())
		case *dns.TXT:
			extra[r.Hdr.Name] = append(extra[r.Hdr.Name], strings.Join(r.Txt, ""))
		}
	}
	if got := extra["n1.node.dc1.consul."]; !sameSet(got, []string{"10.0.0.1", "rack=r1", "just the value"}) {
		t.Errorf("n1 additional = %v", got)
	}
	if got := extra["c000020a.addr.dc1.consul."]; !sameSet(got, []string{"192.0.2.10"}) {
		t.Errorf("web3 additional = %v", got)
	}

	// With node meta TXT off, no TXT in additional.
	h = newTestHandler(t, webCatalog(t), func(c *Config) { c.EnableAdditionalNodeMetaTXT = false })
	m = ask(t, h, "web.service.consul.", dns.TypeSRV, "tcp")
	if txt := ofType[*dns.TXT](m.Extra); len(txt) != 0 {
		t.Errorf("TXT in additional with the option off: %v", txt)
	}
}

func TestServiceHostnames(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	// A node known by a host name: CNAME for A, the node name as target.
	m := ask(t, h, "ext.service.consul.", dns.TypeA, "tcp")
	if c := ofType[*dns.CNAME](m.Answer); len(c) != 1 || c[0].Target != "host.example.com." {
		t.Fatalf("ext A = %v", m.Answer)
	}
	m = ask(t, h, "ext.service.consul.", dns.TypeSRV, "tcp")
	if s := ofType[*dns.SRV](m.Answer); len(s) != 1 || s[0].Target != "hostnode.node.dc1.consul." {
		t.Fatalf("ext SRV = %v", m.Answer)
	}
	// A service with its own host name: that name is the SRV target.
	m = ask(t, h, "named.service.consul.", dns.TypeSRV, "tcp")
	if s := ofType[*dns.SRV](m.Answer); len(s) != 1 || s[0].Target != "svc.example.org." || s[0].Port != 80 {
		t.Fatalf("named SRV = %v", m.Answer)
	}
}

func TestServiceTagsAndRFC2782(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	tests := map[string][]string{
		"v1.web.service.consul.":      {"10.0.0.1", "192.0.2.10"},
		"V2.web.service.consul.":      {"10.0.0.2"},
		"primary.web.service.consul.": {"10.0.0.1"},
		"_web._v1.service.consul.":    {"10.0.0.1", "192.0.2.10"},
		"_web._tcp.service.consul.":   {"10.0.0.1", "10.0.0.2", "192.0.2.10"},
	}
	for name, want := range tests {
		m := ask(t, h, name, dns.TypeA, "tcp")
		if got := addrs(m.Answer); !sameSet(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		m = ask(t, h, name, dns.TypeSRV, "tcp")
		if len(ofType[*dns.SRV](m.Answer)) != len(want) {
			t.Errorf("%s SRV = %v", name, m.Answer)
		}
	}
	m := ask(t, h, "nosuchtag.web.service.consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeNameError)
	wantSOA(t, m, "consul.")
}

func TestServiceHealthFiltering(t *testing.T) {
	src := webCatalog(t)
	h := newTestHandler(t, src, nil)
	// db's only instance is critical.
	m := ask(t, h, "db.service.consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeNameError)
	wantSOA(t, m, "consul.")

	// only_passing drops web2 (warning).
	h = newTestHandler(t, src, func(c *Config) { c.OnlyPassing = true })
	m = ask(t, h, "web.service.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"10.0.0.1", "192.0.2.10"}) {
		t.Fatalf("only_passing: %v", got)
	}

	// A critical node check excludes every service on the node.
	src.register(t, &catalog.RegisterRequest{Node: "n1", SkipNodeUpdate: true,
		Check: &catalog.HealthCheck{CheckID: "serfHealth", Name: "serf", Status: catalog.HealthCritical}})
	h = newTestHandler(t, src, nil)
	m = ask(t, h, "web.service.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"10.0.0.2", "192.0.2.10"}) {
		t.Fatalf("node critical: %v", got)
	}
	// Maintenance counts as critical.
	src.register(t, &catalog.RegisterRequest{Node: "n2", SkipNodeUpdate: true,
		Check: &catalog.HealthCheck{CheckID: "_node_maintenance", Name: "maint", Status: catalog.HealthMaint}})
	m = ask(t, h, "web.service.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"192.0.2.10"}) {
		t.Fatalf("maintenance: %v", got)
	}
}

func TestNodeLookups(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), func(c *Config) { c.NodeTTL = 30 * time.Second })
	m := ask(t, h, "n1.node.consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if got := addrs(m.Answer); !sameSet(got, []string{"10.0.0.1"}) || m.Answer[0].Header().Ttl != 30 {
		t.Fatalf("n1 A = %v", m.Answer)
	}
	if txt := ofType[*dns.TXT](m.Extra); len(txt) != 2 {
		t.Fatalf("n1 additional TXT = %v", m.Extra)
	}
	m = ask(t, h, "n1.node.dc1.consul.", dns.TypeTXT, "tcp")
	var texts []string
	for _, r := range ofType[*dns.TXT](m.Answer) {
		texts = append(texts, strings.Join(r.Txt, ""))
	}
	if !sameSet(texts, []string{"rack=r1", "just the value"}) {
		t.Fatalf("n1 TXT = %v", texts)
	}
	m = ask(t, h, "n1.node.consul.", dns.TypeANY, "tcp")
	if len(m.Answer) != 3 {
		t.Fatalf("n1 ANY = %v", m.Answer)
	}
	m = ask(t, h, "n1.node.consul.", dns.TypeAAAA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if len(m.Answer) != 0 {
		t.Fatalf("n1 AAAA = %v", m.Answer)
	}
	wantSOA(t, m, "consul.")

	// Dual stack: the address is IPv6, lan_ipv4 answers A.
	m = ask(t, h, "n3.node.consul.", dns.TypeAAAA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"2001:db8::3"}) {
		t.Fatalf("n3 AAAA = %v", m.Answer)
	}
	m = ask(t, h, "n3.node.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"10.0.0.3"}) {
		t.Fatalf("n3 A = %v", m.Answer)
	}
	m = ask(t, h, "hostnode.node.consul.", dns.TypeA, "tcp")
	if c := ofType[*dns.CNAME](m.Answer); len(c) != 1 || c[0].Target != "host.example.com." {
		t.Fatalf("hostnode A = %v", m.Answer)
	}
	m = ask(t, h, "nosuch.node.consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeNameError)
	wantSOA(t, m, "consul.")
}

func TestAddrLookups(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	m := ask(t, h, "c000020a.addr.dc1.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"192.0.2.10"}) {
		t.Fatalf("hex v4 = %v", m)
	}
	m = ask(t, h, "20010db800010002cafe000000001337.addr.dc1.consul.", dns.TypeAAAA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"2001:db8:1:2:cafe::1337"}) {
		t.Fatalf("hex v6 = %v", m)
	}
	m = ask(t, h, "192.0.2.10.addr.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"192.0.2.10"}) {
		t.Fatalf("dotted = %v", m)
	}
	m = ask(t, h, "c000020a.addr.dc1.consul.", dns.TypeAAAA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	wantSOA(t, m, "consul.")
	m = ask(t, h, "nothex.addr.dc1.consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeNameError)
}

func TestReverseLookups(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	m := ask(t, h, "1.0.0.10.in-addr.arpa.", dns.TypePTR, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if p := ofType[*dns.PTR](m.Answer); len(p) != 1 || p[0].Ptr != "n1.node.dc1.consul." {
		t.Fatalf("PTR = %v", m)
	}
	// Tagged addresses count: n3's lan_ipv4.
	m = ask(t, h, "3.0.0.10.in-addr.arpa.", dns.TypePTR, "tcp")
	if p := ofType[*dns.PTR](m.Answer); len(p) != 1 || p[0].Ptr != "n3.node.dc1.consul." {
		t.Fatalf("PTR tagged = %v", m)
	}
	name, _ := dns.ReverseAddr("2001:db8::3")
	m = ask(t, h, name, dns.TypePTR, "tcp")
	if p := ofType[*dns.PTR](m.Answer); len(p) != 1 || p[0].Ptr != "n3.node.dc1.consul." {
		t.Fatalf("PTR v6 = %v", m)
	}
	m = ask(t, h, "9.9.9.9.in-addr.arpa.", dns.TypePTR, "tcp")
	wantRcode(t, m, dns.RcodeNameError)
	m = ask(t, h, "1.0.0.10.in-addr.arpa.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	if len(m.Answer) != 0 {
		t.Fatalf("A on a reverse name: %v", m)
	}
}

func TestApexSOAAndNS(t *testing.T) {
	src := webCatalog(t)
	h := newTestHandler(t, src, func(c *Config) {
		c.SOA = SOAConfig{Refresh: 1, Retry: 2, Expire: 3, MinTTL: 4}
	})
	m := ask(t, h, "consul.", dns.TypeSOA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	soa, ok := m.Answer[0].(*dns.SOA)
	if !ok || soa.Ns != "ns.consul." || soa.Mbox != "hostmaster.consul." || soa.Serial != 1_700_000_000 ||
		soa.Refresh != 1 || soa.Retry != 2 || soa.Expire != 3 || soa.Minttl != 4 || soa.Hdr.Ttl != 4 {
		t.Fatalf("SOA = %v", m.Answer)
	}
	// No server is registered as "consul": the agent's node serves.
	m = ask(t, h, "consul.", dns.TypeNS, "tcp")
	if ns := ofType[*dns.NS](m.Answer); len(ns) != 1 || ns[0].Ns != "agent1.node.dc1.consul." {
		t.Fatalf("NS = %v", m.Answer)
	}
	if got := addrs(m.Extra); !sameSet(got, []string{"127.0.0.1"}) {
		t.Fatalf("NS glue = %v", m.Extra)
	}
	// Registered servers are the name servers.
	src.service(t, "n1", &catalog.Service{ID: "consul", Service: "consul", Port: 8300}, catalog.HealthPassing)
	src.service(t, "n2", &catalog.Service{ID: "consul", Service: "consul", Port: 8300}, catalog.HealthPassing)
	m = ask(t, h, "consul.", dns.TypeNS, "tcp")
	var names []string
	for _, ns := range ofType[*dns.NS](m.Answer) {
		names = append(names, ns.Ns)
	}
	if !sameSet(names, []string{"n1.node.dc1.consul.", "n2.node.dc1.consul."}) {
		t.Fatalf("NS with servers = %v", m.Answer)
	}
	m = ask(t, h, "consul.", dns.TypeA, "tcp")
	wantRcode(t, m, dns.RcodeSuccess)
	wantSOA(t, m, "consul.")
}

func TestNXDOMAIN(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	for _, name := range []string{
		"nosuch.service.consul.", "foo.consul.", "web.service.dc2.consul.", "web.service.a.b.c.consul.",
		"web.connect.consul.", "q.query.consul.", "service.consul.",
	} {
		m := ask(t, h, name, dns.TypeA, "udp")
		wantRcode(t, m, dns.RcodeNameError)
		wantSOA(t, m, "consul.")
		if !m.Authoritative {
			t.Errorf("%s: NXDOMAIN not authoritative", name)
		}
	}
}

func TestAltDomain(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), func(c *Config) { c.AltDomain = "test-domain" })
	m := ask(t, h, "web.service.test-domain.", dns.TypeSRV, "tcp")
	for _, s := range ofType[*dns.SRV](m.Answer) {
		if !strings.HasSuffix(s.Target, ".dc1.test-domain.") {
			t.Fatalf("SRV target %s not in the alt domain", s.Target)
		}
	}
	if len(m.Answer) != 3 {
		t.Fatalf("alt domain SRV = %v", m)
	}
	m = ask(t, h, "nosuch.service.test-domain.", dns.TypeA, "tcp")
	wantSOA(t, m, "test-domain.")
	m = ask(t, h, "test-domain.", dns.TypeSOA, "tcp")
	if soa, ok := m.Answer[0].(*dns.SOA); !ok || soa.Hdr.Name != "test-domain." {
		t.Fatalf("alt SOA = %v", m)
	}
}

func TestTTLs(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), func(c *Config) {
		c.ServiceTTL = map[string]time.Duration{"*": 5 * time.Second, "web": 10 * time.Second, "na*": 7 * time.Second, "n*": 6 * time.Second}
		c.NodeTTL = 20 * time.Second
	})
	tests := map[string]uint32{"web.service.consul.": 10, "named.service.consul.": 7, "ext.service.consul.": 5}
	for name, want := range tests {
		m := ask(t, h, name, dns.TypeSRV, "tcp")
		for _, rr := range append(m.Answer, m.Extra...) {
			if rr.Header().Ttl != want {
				t.Errorf("%s: %v has TTL %d, want %d", name, rr, rr.Header().Ttl, want)
			}
		}
	}
	m := ask(t, h, "n2.node.consul.", dns.TypeA, "tcp")
	if m.Answer[0].Header().Ttl != 20 {
		t.Errorf("node TTL = %d", m.Answer[0].Header().Ttl)
	}
}

// bigCatalog has service big with n passing instances on their own nodes.
func bigCatalog(t testing.TB, n int) *storeSource {
	s := newStoreSource()
	addBig(t, s, n)
	return s
}

func addBig(t testing.TB, s *storeSource, n int) {
	for i := 0; i < n; i++ {
		node := fmt.Sprintf("node-with-a-long-name-%03d", i)
		s.node(t, node, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), nil)
		s.service(t, node, &catalog.Service{ID: "big", Service: "big", Port: 1000 + i}, catalog.HealthPassing)
	}
}

func TestUDPLimitsAndTruncation(t *testing.T) {
	src := bigCatalog(t, 100)
	h := newTestHandler(t, src, nil)

	// No EDNS: udp_answer_limit (3) answers, no TC without enable_truncate.
	m := ask(t, h, "big.service.consul.", dns.TypeA, "udp")
	if len(m.Answer) != 3 || m.Truncated {
		t.Fatalf("plain UDP: %d answers, TC %v", len(m.Answer), m.Truncated)
	}
	m = ask(t, h, "big.service.consul.", dns.TypeSRV, "udp")
	if len(m.Answer) != 3 || len(m.Extra) != 3 {
		t.Fatalf("plain UDP SRV: %d answers, %d extra", len(m.Answer), len(m.Extra))
	}
	for _, s := range ofType[*dns.SRV](m.Answer) {
		found := false
		for _, e := range m.Extra {
			found = found || e.Header().Name == s.Target
		}
		if !found {
			t.Fatalf("SRV target %s has no additional record", s.Target)
		}
	}
	// TCP: everything.
	m = ask(t, h, "big.service.consul.", dns.TypeSRV, "tcp")
	if len(m.Answer) != 100 || len(m.Extra) != 100 || m.Truncated {
		t.Fatalf("TCP SRV: %d answers, %d extra, TC %v", len(m.Answer), len(m.Extra), m.Truncated)
	}
	// EDNS: as many as fit the client's buffer; no count limit.
	m = ask(t, h, "big.service.consul.", dns.TypeSRV, "udp", withEDNS(1232))
	if len(m.Answer) <= 3 || len(m.Answer) >= 100 {
		t.Fatalf("EDNS 1232 SRV: %d answers", len(m.Answer))
	}
	if m.IsEdns0() == nil {
		t.Fatal("no OPT in the answer to an EDNS query")
	}
	m = ask(t, h, "big.service.consul.", dns.TypeA, "udp", withEDNS(4096))
	if len(m.Answer) != 100 || m.Truncated {
		t.Fatalf("EDNS 4096 A: %d answers, TC %v", len(m.Answer), m.Truncated)
	}

	// enable_truncate sets TC when answers were cut.
	h = newTestHandler(t, src, func(c *Config) { c.EnableTruncate = true })
	m = ask(t, h, "big.service.consul.", dns.TypeA, "udp")
	if len(m.Answer) != 3 || !m.Truncated {
		t.Fatalf("enable_truncate: %d answers, TC %v", len(m.Answer), m.Truncated)
	}
	m = ask(t, h, "big.service.consul.", dns.TypeSRV, "udp", withEDNS(1232))
	if !m.Truncated {
		t.Fatalf("enable_truncate EDNS: TC not set with %d answers", len(m.Answer))
	}
	m = ask(t, h, "big.service.consul.", dns.TypeA, "udp", withEDNS(4096))
	if m.Truncated {
		t.Fatal("TC set on an answer that was not cut")
	}

	// a_record_limit applies to TCP too, and not to SRV.
	h = newTestHandler(t, src, func(c *Config) { c.ARecordLimit = 5 })
	if m := ask(t, h, "big.service.consul.", dns.TypeA, "tcp"); len(m.Answer) != 5 {
		t.Fatalf("a_record_limit TCP: %d", len(m.Answer))
	}
	if m := ask(t, h, "big.service.consul.", dns.TypeSRV, "tcp"); len(m.Answer) != 100 {
		t.Fatalf("a_record_limit SRV: %d", len(m.Answer))
	}
	// udp_answer_limit is configurable.
	h = newTestHandler(t, src, func(c *Config) { c.UDPAnswerLimit = 6 })
	if m := ask(t, h, "big.service.consul.", dns.TypeA, "udp"); len(m.Answer) != 6 {
		t.Fatalf("udp_answer_limit 6: %d", len(m.Answer))
	}
}

func TestAnswersAreShuffled(t *testing.T) {
	h := newTestHandler(t, bigCatalog(t, 20), nil)
	firsts := map[string]bool{}
	for i := 0; i < 50; i++ {
		m := ask(t, h, "big.service.consul.", dns.TypeA, "tcp")
		firsts[addrs(m.Answer)[0]] = true
	}
	if len(firsts) < 5 {
		t.Fatalf("50 answers started with only %d distinct addresses", len(firsts))
	}
}

func TestMalformedAndOddQueries(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)

	// A response is not answered.
	m := new(dns.Msg)
	m.SetQuestion("web.service.consul.", dns.TypeA)
	m.Response = true
	if r := h.Answer(m, "udp"); r != nil {
		t.Fatalf("answered a response: %v", r)
	}
	// No question, two questions.
	m = new(dns.Msg)
	m.Id = 7
	if r := h.Answer(m, "udp"); r == nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("no question: %v", r)
	}
	m.SetQuestion("web.service.consul.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if r := h.Answer(m, "udp"); r == nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions: %v", r)
	}
	// Other opcodes.
	m = new(dns.Msg)
	m.SetNotify("consul.")
	if r := h.Answer(m, "udp"); r == nil || r.Rcode != dns.RcodeNotImplemented {
		t.Fatalf("notify: %v", r)
	}
	// Another class.
	m = ask(t, h, "web.service.consul.", dns.TypeA, "udp", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })
	wantRcode(t, m, dns.RcodeRefused)
	// Class ANY is answered.
	m = ask(t, h, "web.service.consul.", dns.TypeA, "udp", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassANY })
	wantRcode(t, m, dns.RcodeSuccess)
	// Zone transfers.
	m = ask(t, h, "consul.", dns.TypeAXFR, "tcp")
	wantRcode(t, m, dns.RcodeNotImplemented)
	// ANY on a service answers its addresses.
	m = ask(t, h, "web.service.consul.", dns.TypeANY, "udp", withEDNS(4096))
	if got := addrs(m.Answer); len(got) != 3 {
		t.Fatalf("ANY = %v", m.Answer)
	}
	// EDNS version 1: BADVERS.
	m = ask(t, h, "web.service.consul.", dns.TypeA, "udp", func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
	})
	wantRcode(t, m, dns.RcodeBadVers)
	// Long names and many labels.
	long := strings.Repeat("a.", 122) + "consul." // 251 characters, 123 labels
	m = ask(t, h, long, dns.TypeA, "udp")
	wantRcode(t, m, dns.RcodeNameError)
	long = strings.Repeat("x", 63) + "." + strings.Repeat("y", 63) + "." + strings.Repeat("z", 63) + "." + strings.Repeat("w", 40) + ".service.consul."
	m = ask(t, h, long, dns.TypeSRV, "udp")
	wantRcode(t, m, dns.RcodeNameError)
	// Outside the domain without recursors: refused.
	m = ask(t, h, "example.com.", dns.TypeA, "udp")
	wantRcode(t, m, dns.RcodeRefused)
	if m.RecursionAvailable {
		t.Fatal("RA set without recursors")
	}
}

func TestEDNSEcho(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	m := ask(t, h, "web.service.consul.", dns.TypeA, "udp", func(m *dns.Msg) {
		m.SetEdns0(1232, true)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
			Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("192.0.2.0").To4()})
	})
	opt := m.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || !opt.Do() || opt.Version() != 0 {
		t.Fatalf("OPT = %v", opt)
	}
	var ecs *dns.EDNS0_SUBNET
	for _, o := range opt.Option {
		if s, ok := o.(*dns.EDNS0_SUBNET); ok {
			ecs = s
		}
	}
	if ecs == nil || ecs.SourceNetmask != 24 || ecs.SourceScope != 0 {
		t.Fatalf("ECS = %v", ecs)
	}
	// No OPT without EDNS in the query.
	if m := ask(t, h, "web.service.consul.", dns.TypeA, "udp"); m.IsEdns0() != nil {
		t.Fatal("OPT in the answer to a plain query")
	}
}

// denyAuthorizer refuses one service and one node.
type denyAuthorizer struct {
	acl.Authorizer
	service, node string
}

func (d denyAuthorizer) ServiceRead(s string) acl.Decision {
	if s == d.service {
		return acl.Deny
	}
	return acl.Allow
}

func (d denyAuthorizer) NodeRead(n string) acl.Decision {
	if n == d.node {
		return acl.Deny
	}
	return acl.Allow
}

func TestACLFiltering(t *testing.T) {
	authz := denyAuthorizer{Authorizer: acl.AllowAll(), service: "ext", node: "n2"}
	h := newTestHandler(t, webCatalog(t), func(c *Config) {
		c.Authorize = func() (acl.Authorizer, error) { return authz, nil }
	})
	wantRcode(t, ask(t, h, "ext.service.consul.", dns.TypeA, "tcp"), dns.RcodeNameError)
	m := ask(t, h, "web.service.consul.", dns.TypeA, "tcp")
	if got := addrs(m.Answer); !sameSet(got, []string{"10.0.0.1", "192.0.2.10"}) {
		t.Fatalf("web without n2: %v", got)
	}
	wantRcode(t, ask(t, h, "n2.node.consul.", dns.TypeA, "tcp"), dns.RcodeNameError)
	wantRcode(t, ask(t, h, "2.0.0.10.in-addr.arpa.", dns.TypePTR, "tcp"), dns.RcodeNameError)

	h = newTestHandler(t, webCatalog(t), func(c *Config) {
		c.Authorize = func() (acl.Authorizer, error) { return nil, acl.ErrNotFound }
	})
	wantRcode(t, ask(t, h, "web.service.consul.", dns.TypeA, "tcp"), dns.RcodeServerFailure)
}

// failingSource fails every read.
type failingSource struct{ err error }

func (f failingSource) ServiceHealth(context.Context, string, string) ([]*catalog.CheckServiceNode, error) {
	return nil, f.err
}
func (f failingSource) Node(context.Context, string, string) (*catalog.Node, error) {
	return nil, f.err
}
func (f failingSource) Nodes(context.Context, string) ([]*catalog.Node, error) { return nil, f.err }

func TestSourceErrors(t *testing.T) {
	h := newTestHandler(t, failingSource{err: errors.New("servers unreachable")}, nil)
	wantRcode(t, ask(t, h, "web.service.consul.", dns.TypeA, "udp"), dns.RcodeServerFailure)
	wantRcode(t, ask(t, h, "n1.node.consul.", dns.TypeA, "udp"), dns.RcodeServerFailure)
	wantRcode(t, ask(t, h, "1.0.0.10.in-addr.arpa.", dns.TypePTR, "udp"), dns.RcodeServerFailure)
	// The addr form needs no catalog.
	wantRcode(t, ask(t, h, "7f000001.addr.consul.", dns.TypeA, "udp"), dns.RcodeSuccess)
}

func TestHooks(t *testing.T) {
	src := webCatalog(t)
	h := newTestHandler(t, src, func(c *Config) {
		c.ConnectLookup = func(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
			return src.ServiceHealth(ctx, dc, service)
		}
		c.PreparedQuery = func(ctx context.Context, dc, query string) ([]*catalog.CheckServiceNode, error) {
			if query != "my-query" {
				return nil, nil
			}
			return src.ServiceHealth(ctx, dc, "web")
		}
	})
	if m := ask(t, h, "web.connect.consul.", dns.TypeA, "tcp"); len(m.Answer) != 3 {
		t.Fatalf("connect hook: %v", m)
	}
	if m := ask(t, h, "my-query.query.consul.", dns.TypeSRV, "tcp"); len(m.Answer) != 3 {
		t.Fatalf("query hook: %v", m)
	}
	wantRcode(t, ask(t, h, "other.query.consul.", dns.TypeA, "tcp"), dns.RcodeNameError)
}

func TestTXTEscaping(t *testing.T) {
	s := newStoreSource()
	long := strings.Repeat("v", 600)
	s.node(t, "m", "10.9.9.9", map[string]string{"quote": `say "hi" \ bye`, "long": long})
	h := newTestHandler(t, s, nil)
	m := ask(t, h, "m.node.consul.", dns.TypeTXT, "tcp")
	got := map[string]bool{}
	for _, r := range ofType[*dns.TXT](m.Answer) {
		for _, part := range r.Txt {
			if len(part) > 255*2 {
				t.Fatalf("character-string of %d bytes", len(part))
			}
		}
		// Unescape the presentation form miekg/dns gives back.
		got[strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(strings.Join(r.Txt, ""))] = true
	}
	if !got[`quote=say "hi" \ bye`] || !got["long="+long] {
		t.Fatalf("TXT = %v", m.Answer)
	}
}
