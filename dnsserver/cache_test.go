package dnsserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// viewLikeSource answers ServiceHealth as the agent's views do: the same
// instances (the same pointers) until refresh, which takes the store's
// current ones, as a view does when its blocking query returns.
type viewLikeSource struct {
	*storeSource
	mu    sync.Mutex
	views map[string][]*catalog.CheckServiceNode
}

func newViewLikeSource(s *storeSource) *viewLikeSource {
	return &viewLikeSource{storeSource: s, views: map[string][]*catalog.CheckServiceNode{}}
}

func (v *viewLikeSource) ServiceHealth(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := dc + "/" + service
	if insts, ok := v.views[key]; ok {
		return insts, nil
	}
	insts, err := v.storeSource.ServiceHealth(ctx, dc, service)
	if err == nil {
		v.views[key] = insts
	}
	return insts, err
}

func (v *viewLikeSource) refresh() {
	v.mu.Lock()
	v.views = map[string][]*catalog.CheckServiceNode{}
	v.mu.Unlock()
}

// recorder is a dns.ResponseWriter that keeps what is written.
type recorder struct {
	tcp     bool
	written [][]byte
}

func (r *recorder) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr {
	if r.tcp {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	r.written = append(r.written, b)
	return nil
}
func (r *recorder) Write(b []byte) (int, error) {
	r.written = append(r.written, append([]byte(nil), b...))
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

// serveOnce answers the packed query p as a Server does: AnswerPacket
// first (UDP), ServeDNS otherwise. It returns the answer and whether the
// cache answered it.
func serveOnce(t testing.TB, h *Handler, p []byte, network string) ([]byte, bool) {
	t.Helper()
	if network == "udp" {
		if b, ok := h.AnswerPacket(nil, p, network); ok {
			return b, true
		}
	}
	req := new(dns.Msg)
	if err := req.Unpack(p); err != nil {
		t.Fatalf("unpack query: %v", err)
	}
	rec := &recorder{tcp: network == "tcp"}
	h.ServeDNS(rec, req)
	if len(rec.written) != 1 {
		t.Fatalf("%d answers written", len(rec.written))
	}
	return rec.written[0], false
}

func packQuery(t testing.TB, name string, qtype uint16, mods ...func(*dns.Msg)) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 4242
	for _, mod := range mods {
		mod(m)
	}
	p, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func withDO(size uint16) func(*dns.Msg) {
	return func(m *dns.Msg) { m.SetEdns0(size, true) }
}

func unpackAnswer(t testing.TB, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	return m
}

// TestCacheAnswersAsUncached checks that the cache changes nothing but the
// cost: for every query form, the answers served with the cache (hits and
// misses, through AnswerPacket and ServeDNS) are exactly the answers the
// uncached handler gives, every ordering included.
func TestCacheAnswersAsUncached(t *testing.T) {
	src := newViewLikeSource(webCatalog(t))
	addBig(t, src.storeSource, 40)
	for _, truncate := range []bool{false, true} {
		mod := func(c *Config) {
			c.AltDomain = "alt."
			c.EnableTruncate = truncate
			c.ServiceTTL = map[string]time.Duration{"web": 30 * time.Second}
		}
		cached := newTestHandler(t, src, mod)
		uncached := newTestHandler(t, src, func(c *Config) { mod(c); c.CacheEntries = -1 })
		type query struct {
			name  string
			qtype uint16
			mods  []func(*dns.Msg)
		}
		var queries []query
		for _, name := range []string{
			"web.service.consul.", "WeB.SeRvIcE.CoNsUl.", "web.service.alt.", "web.service.dc1.consul.",
			"web.service.dc1.dc.consul.", "web.service.dc2.consul.", "v1.web.service.consul.",
			"_web._v1.service.consul.", "_web._tcp.service.consul.", "nope.v1.web.service.consul.",
			"db.service.consul.", "nope.service.consul.", "ext.service.consul.", "named.service.consul.",
			"n1.node.consul.", "consul.", "example.com.",
		} {
			for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypeSRV, dns.TypeTXT} {
				queries = append(queries, query{name, qtype, nil}, query{name, qtype, []func(*dns.Msg){withEDNS(1232)}},
					query{name, qtype, []func(*dns.Msg){withDO(4096)}})
			}
		}
		for _, q := range queries {
			for _, network := range []string{"udp", "tcp"} {
				p := packQuery(t, q.name, q.qtype, q.mods...)
				want, got := map[string]bool{}, map[string]bool{}
				for i := 0; i < 150; i++ {
					b, _ := serveOnce(t, uncached, p, network)
					want[string(b)] = true
					b, _ = serveOnce(t, cached, p, network)
					got[string(b)] = true
				}
				if len(got) != len(want) {
					t.Fatalf("truncate=%v %s %s %s: %d distinct answers cached, %d uncached", truncate, q.name,
						dns.TypeToString[q.qtype], network, len(got), len(want))
				}
				for b := range got {
					if !want[b] {
						t.Fatalf("truncate=%v %s %s %s: cached answer never given uncached:\n%v", truncate, q.name,
							dns.TypeToString[q.qtype], network, unpackAnswer(t, []byte(b)))
					}
				}
			}
		}
		if cached.cache.len() == 0 {
			t.Fatal("nothing was cached")
		}
	}
}

// TestCacheTruncation checks that answers cut for UDP are cut the same way
// from the cache: for a service of 40 instances (random orderings), every
// cached answer has the size, count and TC bit of the uncached ones.
func TestCacheTruncation(t *testing.T) {
	src := newViewLikeSource(bigCatalog(t, 40))
	for _, truncate := range []bool{false, true} {
		mod := func(c *Config) { c.EnableTruncate = truncate }
		cached := newTestHandler(t, src, mod)
		uncached := newTestHandler(t, src, func(c *Config) { mod(c); c.CacheEntries = -1 })
		for _, tc := range []struct {
			qtype uint16
			mods  []func(*dns.Msg)
			limit int
		}{
			{dns.TypeA, nil, dns.MinMsgSize},
			{dns.TypeSRV, nil, dns.MinMsgSize},
			{dns.TypeSRV, []func(*dns.Msg){withEDNS(1232)}, 1232},
			{dns.TypeA, []func(*dns.Msg){withEDNS(600)}, 600},
			{dns.TypeSRV, []func(*dns.Msg){withEDNS(4096)}, 4096},
		} {
			p := packQuery(t, "big.service.consul.", tc.qtype, tc.mods...)
			shape := func(b []byte) string {
				m := unpackAnswer(t, b)
				if len(b) > tc.limit {
					t.Fatalf("%d-byte UDP answer for a %d-byte client", len(b), tc.limit)
				}
				return fmt.Sprintf("tc=%v answers=%d extra=%d", m.Truncated, len(m.Answer), len(m.Extra))
			}
			want, got := map[string]bool{}, map[string]bool{}
			hits := 0
			for i := 0; i < 300; i++ {
				b, _ := serveOnce(t, uncached, p, "udp")
				want[shape(b)] = true
				b, hit := serveOnce(t, cached, p, "udp")
				got[shape(b)] = true
				if hit {
					hits++
				}
			}
			if hits < 250 {
				t.Fatalf("%s: %d of 300 answered from the cache", dns.TypeToString[tc.qtype], hits)
			}
			if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(sortedKeys(want)) {
				t.Fatalf("truncate=%v %s limit %d: cached shapes %v, uncached %v", truncate,
					dns.TypeToString[tc.qtype], tc.limit, sortedKeys(got), sortedKeys(want))
			}
			if tc.limit == dns.MinMsgSize && truncate && !strings.HasPrefix(sortedKeys(got)[0], "tc=true") {
				t.Fatalf("%s: no TC on a cut answer: %v", dns.TypeToString[tc.qtype], sortedKeys(got))
			}
		}
	}
	// Random orderings are redrawn: 3,000 queries draw about 100
	// orderings, which start with about 37 of the 40 addresses; 8 fixed
	// orderings could start with no more than 8.
	h := newTestHandler(t, src, nil)
	p := packQuery(t, "big.service.consul.", dns.TypeA)
	firsts := map[string]bool{}
	for i := 0; i < 3000; i++ {
		b, _ := serveOnce(t, h, p, "udp")
		firsts[addrs(unpackAnswer(t, b).Answer)[0]] = true
	}
	if len(firsts) < 28 {
		t.Fatalf("3,000 cached answers started with only %d of 40 addresses", len(firsts))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestCacheServesEveryOrdering asks a service of three instances through a
// real server: every ordering of its answers comes back, about equally
// often, from the cache as from shuffling.
func TestCacheServesEveryOrdering(t *testing.T) {
	src := newViewLikeSource(newStoreSource())
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("n%d", i)
		src.node(t, node, fmt.Sprintf("10.0.0.%d", i), nil)
		src.service(t, node, &catalog.Service{ID: "web", Service: "web", Port: 8000 + i}, catalog.HealthPassing)
	}
	h := newTestHandler(t, src, nil)
	addr := serve(t, h)
	for _, qtype := range []uint16{dns.TypeA, dns.TypeSRV} {
		const n = 1200
		counts := map[string]int{}
		for i := 0; i < n; i++ {
			r := query(t, "udp", addr, "web.service.consul.", qtype)
			var order []string
			for _, rr := range r.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					order = append(order, rr.A.String())
				case *dns.SRV:
					order = append(order, rr.Target)
				}
			}
			if len(order) != 3 || len(r.Extra) != len(ofType[*dns.A](r.Extra))+len(ofType[*dns.TXT](r.Extra)) {
				t.Fatalf("answer %v", r)
			}
			counts[strings.Join(order, " ")]++
		}
		if len(counts) != 6 {
			t.Fatalf("%s: %d orderings over %d queries: %v", dns.TypeToString[qtype], len(counts), n, counts)
		}
		// Each is expected n/6 = 200 times (sd about 13).
		for order, c := range counts {
			if c < 120 || c > 280 {
				t.Fatalf("%s: ordering %q %d times of %d: %v", dns.TypeToString[qtype], order, c, n, counts)
			}
		}
	}
	if h.cache.len() != 2 {
		t.Fatalf("%d cache entries, want 2", h.cache.len())
	}
}

// TestCacheHitEchoesQuery checks that answers from the cache carry the
// query's ID, RD and CD bits and its question exactly as asked, case
// included, whichever query filled the cache.
func TestCacheHitEchoesQuery(t *testing.T) {
	src := newViewLikeSource(webCatalog(t))
	h := newTestHandler(t, src, nil)
	for _, name := range []string{"web.service.consul.", "WEB.service.Consul."} {
		for _, network := range []string{"udp", "tcp"} {
			fill := packQuery(t, name, dns.TypeSRV, func(m *dns.Msg) { m.Id = 1 })
			if _, hit := serveOnce(t, h, fill, network); hit {
				t.Fatal("hit before the cache was filled")
			}
			for i, tc := range []struct {
				id     uint16
				rd, cd bool
			}{{7, true, false}, {65535, false, true}, {0, false, false}, {300, true, true}} {
				p := packQuery(t, name, dns.TypeSRV, func(m *dns.Msg) {
					m.Id, m.RecursionDesired, m.CheckingDisabled = tc.id, tc.rd, tc.cd
				})
				b, hit := serveOnce(t, h, p, network)
				if network == "udp" && !hit {
					t.Fatalf("%s query %d: not answered from the cache", name, i)
				}
				r := unpackAnswer(t, b)
				if r.Id != tc.id || r.RecursionDesired != tc.rd || r.CheckingDisabled != tc.cd || !r.Response ||
					!r.Authoritative || r.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s %s query %+v: header %+v", name, network, tc, r.MsgHdr)
				}
				if len(r.Question) != 1 || r.Question[0].Name != name || r.Question[0].Qtype != dns.TypeSRV ||
					r.Question[0].Qclass != dns.ClassINET {
					t.Fatalf("%s %s: question %v", name, network, r.Question)
				}
				for _, rr := range r.Answer {
					if rr.Header().Name != name {
						t.Fatalf("%s %s: answer owner %q", name, network, rr.Header().Name)
					}
				}
			}
		}
	}
	// The case asked is part of the key: two entries per network.
	if h.cache.len() != 4 {
		t.Fatalf("%d cache entries, want 4", h.cache.len())
	}
}

// TestCacheFollowsSourceChanges checks that a cached answer is never
// served once the Source has changed: the first query after a view
// changes (a blocking query round) is answered from the new instances,
// as is the first after the reader loses access.
func TestCacheFollowsSourceChanges(t *testing.T) {
	src := newViewLikeSource(webCatalog(t))
	// authz holds the reader's Authorizer, swapped by the test.
	var authz atomic.Pointer[acl.Authorizer]
	setAuthz := func(a acl.Authorizer) { authz.Store(&a) }
	setAuthz(acl.AllowAll())
	h := newTestHandler(t, src, func(c *Config) {
		c.Authorize = func() (acl.Authorizer, error) { return *authz.Load(), nil }
	})
	addr := serve(t, h)
	web := func(network string, qtype uint16) *dns.Msg {
		return query(t, network, addr, "web.service.consul.", qtype)
	}
	warm := func() {
		for i := 0; i < 20; i++ {
			web("udp", dns.TypeA)
			web("udp", dns.TypeSRV)
			web("tcp", dns.TypeA)
		}
	}
	warm()
	if got := addrs(web("udp", dns.TypeA).Answer); !sameSet(got, []string{"10.0.0.1", "10.0.0.2", "192.0.2.10"}) {
		t.Fatalf("web = %v", got)
	}

	// web2 turns critical: gone from the very next answer.
	src.service(t, "n2", &catalog.Service{ID: "web2", Service: "web", Tags: []string{"v2"}, Port: 8081}, catalog.HealthCritical)
	src.refresh()
	for _, network := range []string{"udp", "tcp"} {
		if got := addrs(web(network, dns.TypeA).Answer); !sameSet(got, []string{"10.0.0.1", "192.0.2.10"}) {
			t.Fatalf("after web2 failed, %s: web = %v", network, got)
		}
	}
	if got := len(web("udp", dns.TypeSRV).Answer); got != 2 {
		t.Fatalf("after web2 failed: %d SRV answers", got)
	}
	warm()

	// A new instance: in the very next answer.
	src.node(t, "n4", "10.0.0.4", nil)
	src.service(t, "n4", &catalog.Service{ID: "web4", Service: "web", Port: 8084}, catalog.HealthPassing)
	src.refresh()
	if got := addrs(web("udp", dns.TypeA).Answer); !sameSet(got, []string{"10.0.0.1", "10.0.0.4", "192.0.2.10"}) {
		t.Fatalf("after web4 came: web = %v", got)
	}
	warm()

	// The reader may no longer see a node, then the service: answered at
	// once, though the instances did not change; and back.
	setAuthz(denyAuthorizer{Authorizer: acl.AllowAll(), node: "n1"})
	if got := addrs(web("udp", dns.TypeA).Answer); !sameSet(got, []string{"10.0.0.4", "192.0.2.10"}) {
		t.Fatalf("without node:read on n1: web = %v", got)
	}
	setAuthz(denyAuthorizer{Authorizer: acl.AllowAll(), service: "web"})
	for _, network := range []string{"udp", "tcp"} {
		wantRcode(t, web(network, dns.TypeA), dns.RcodeNameError)
	}
	setAuthz(acl.AllowAll())
	if got := addrs(web("udp", dns.TypeA).Answer); len(got) != 3 {
		t.Fatalf("with service:read again: web = %v", got)
	}

	// Every instance gone: NXDOMAIN, then NXDOMAIN from the cache.
	for node, id := range map[string]string{"n1": "web1", "n3": "web3", "n4": "web4"} {
		if err := src.st.Deregister(100, &catalog.DeregisterRequest{Node: node, ServiceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	src.refresh()
	for i := 0; i < 3; i++ {
		wantRcode(t, web("udp", dns.TypeA), dns.RcodeNameError)
	}
}

// TestCacheNegativeAnswerSerial checks that a cached NXDOMAIN carries the
// SOA serial of the time it is served, not of the time it was cached.
func TestCacheNegativeAnswerSerial(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	h := newTestHandler(t, newViewLikeSource(webCatalog(t)), func(c *Config) { c.Clock = clk })
	for _, mods := range [][]func(*dns.Msg){nil, {withEDNS(1232)}} {
		for _, name := range []string{"nope.service.consul.", "db.service.consul."} {
			p := packQuery(t, name, dns.TypeA, mods...)
			for i := 0; i < 3; i++ {
				clk.Advance(17 * time.Second)
				b, hit := serveOnce(t, h, p, "udp")
				if i > 0 && !hit {
					t.Fatalf("%s: not answered from the cache", name)
				}
				r := unpackAnswer(t, b)
				wantRcode(t, r, dns.RcodeNameError)
				wantSOA(t, r, "consul.")
				if s := r.Ns[0].(*dns.SOA).Serial; s != uint32(clk.Now().Unix()) {
					t.Fatalf("%s: serial %d, want %d", name, s, clk.Now().Unix())
				}
			}
		}
	}
	// NODATA too: web has no TXT records.
	p := packQuery(t, "web.service.consul.", dns.TypeTXT)
	for i := 0; i < 3; i++ {
		clk.Advance(5 * time.Second)
		b, _ := serveOnce(t, h, p, "udp")
		r := unpackAnswer(t, b)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || r.Ns[0].(*dns.SOA).Serial != uint32(clk.Now().Unix()) {
			t.Fatalf("NODATA: %v", r)
		}
	}
}

// blockingSource cannot answer without waiting: a cached answer cannot be
// checked against it, so queries take the full path.
type blockingSource struct {
	*viewLikeSource
	blocked atomic.Bool
	waited  atomic.Int64
}

func (b *blockingSource) ServiceHealth(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
	if b.blocked.Load() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		default:
		}
		b.waited.Add(1)
	}
	return b.viewLikeSource.ServiceHealth(ctx, dc, service)
}

func TestCacheNeverWaitsOnTheSource(t *testing.T) {
	src := &blockingSource{viewLikeSource: newViewLikeSource(webCatalog(t))}
	h := newTestHandler(t, src, nil)
	p := packQuery(t, "web.service.consul.", dns.TypeA)
	serveOnce(t, h, p, "udp")
	if _, hit := serveOnce(t, h, p, "udp"); !hit {
		t.Fatal("not answered from the cache")
	}
	src.blocked.Store(true)
	b, hit := serveOnce(t, h, p, "udp")
	if hit || src.waited.Load() != 1 {
		t.Fatalf("hit %v, full-path reads %d", hit, src.waited.Load())
	}
	if got := addrs(unpackAnswer(t, b).Answer); len(got) != 3 {
		t.Fatalf("web = %v", got)
	}
}

func TestCacheBounds(t *testing.T) {
	src := newViewLikeSource(newStoreSource())
	for i := 0; i < 200; i++ {
		node := fmt.Sprintf("n%d", i)
		src.node(t, node, fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), nil)
		src.service(t, node, &catalog.Service{ID: "s", Service: fmt.Sprintf("s%d", i), Port: 80}, catalog.HealthPassing)
	}
	h := newTestHandler(t, src, func(c *Config) { c.CacheEntries = 64 })
	for i := 0; i < 200; i++ {
		serveOnce(t, h, packQuery(t, fmt.Sprintf("s%d.service.consul.", i), dns.TypeA), "udp")
	}
	if n := h.cache.len(); n > 64 || n < 16 {
		t.Fatalf("%d entries with a bound of 64", n)
	}
	h = newTestHandler(t, src, func(c *Config) { c.CacheBytes = 1 })
	for i := 0; i < 200; i++ {
		serveOnce(t, h, packQuery(t, fmt.Sprintf("s%d.service.consul.", i), dns.TypeSRV), "udp")
	}
	for i := range h.cache.shards {
		s := &h.cache.shards[i]
		if s.bytes > h.cache.maxBytes && len(s.entries) > 1 {
			t.Fatalf("shard %d: %d bytes in %d entries, bound %d", i, s.bytes, len(s.entries), h.cache.maxBytes)
		}
	}
	h = newTestHandler(t, src, func(c *Config) { c.CacheEntries = -1 })
	p := packQuery(t, "s1.service.consul.", dns.TypeA)
	serveOnce(t, h, p, "udp")
	if _, hit := serveOnce(t, h, p, "udp"); hit || h.cache != nil {
		t.Fatal("answered from a disabled cache")
	}
}

// TestPacketKeyMatchesMessage checks the fast parser against miekg/dns on
// hand-made packets: what it accepts unpacks to a message with the same
// key; what it refuses goes to the full path.
func TestPacketKeyMatchesMessage(t *testing.T) {
	for _, tc := range []struct {
		p    []byte
		want bool
	}{
		{packQuery(t, "web.service.consul.", dns.TypeA), true},
		{packQuery(t, "_web._tcp.service.consul.", dns.TypeSRV, withDO(1232)), true},
		{packQuery(t, ".", dns.TypeNS), true},
		{packQuery(t, "we\\.b.service.consul.", dns.TypeA), false},
		{packQuery(t, "web.service.consul.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}), false},
		{packQuery(t, "web.service.consul.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }), false},
		{packQuery(t, "web.service.consul.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), false},
		{packQuery(t, "web.service.consul.", dns.TypeA, func(m *dns.Msg) { m.Response = true }), false},
		{append(packQuery(t, "web.service.consul.", dns.TypeA), 0), false},
		{[]byte{0, 11, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, false},
	} {
		checkPacketKey(t, tc.p)
		var kb [cacheKeyMax]byte
		if _, _, ok := packetKey(kb[:0], tc.p, "udp"); ok != tc.want {
			t.Fatalf("packetKey(%x) ok = %v, want %v", tc.p, ok, tc.want)
		}
	}
}

// checkPacketKey fails unless a packet packetKey accepts unpacks (and is
// accepted by dns.Server) to a message with the same cache key and header.
func checkPacketKey(t testing.TB, p []byte) {
	t.Helper()
	var kb [cacheKeyMax]byte
	key, qh, ok := packetKey(kb[:0], p, "udp")
	if !ok {
		return
	}
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil {
		t.Fatalf("packetKey accepted %x, which does not unpack: %v", p, err)
	}
	var dh dns.Header
	dh.Bits = binary.BigEndian.Uint16(p[2:])
	dh.Qdcount, dh.Ancount = binary.BigEndian.Uint16(p[4:]), binary.BigEndian.Uint16(p[6:])
	dh.Nscount, dh.Arcount = binary.BigEndian.Uint16(p[8:]), binary.BigEndian.Uint16(p[10:])
	if a := dns.DefaultMsgAcceptFunc(dh); a != dns.MsgAccept {
		t.Fatalf("packetKey accepted %x, which dns.Server does not (%v)", p, a)
	}
	var mb [cacheKeyMax]byte
	mkey, mok := appendCacheKey(mb[:0], m, "udp")
	if !mok || string(mkey) != string(key) {
		t.Fatalf("packet %x: key %q, message key %q (%v)\n%v", p, key, mkey, mok, m)
	}
	if qh != (queryHeader{id: m.Id, rd: m.RecursionDesired, cd: m.CheckingDisabled}) {
		t.Fatalf("packet %x: header %+v, message %+v", p, qh, m.MsgHdr)
	}
}

// FuzzPacketKey feeds raw packets to the fast parser: whatever it accepts
// must be what miekg/dns reads the same way.
func FuzzPacketKey(f *testing.F) {
	for _, name := range []string{"web.service.consul.", "WeB.service.dc1.consul.", "_a._tcp.service.consul.", "."} {
		for _, mods := range [][]func(*dns.Msg){nil, {withEDNS(1232)}, {withDO(4096)}} {
			f.Add(packQuery(f, name, dns.TypeSRV, mods...))
		}
	}
	f.Add([]byte{0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		checkPacketKey(t, p)
	})
}
