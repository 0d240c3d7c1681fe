package dnsserver

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// storeSource is a Source over a real catalog.Store, read directly (the
// agent reads the same data through its views).
type storeSource struct {
	dc string
	st *catalog.Store

	mu  sync.Mutex
	idx uint64
}

func newStoreSource() *storeSource {
	return &storeSource{dc: "dc1", st: catalog.NewStore(nil)}
}

func (s *storeSource) ServiceHealth(_ context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
	if dc != s.dc {
		return nil, ErrUnknownDatacenter
	}
	_, out, err := s.st.CheckServiceNodes(nil, service, nil)
	return out, err
}

func (s *storeSource) Node(_ context.Context, dc, name string) (*catalog.Node, error) {
	if dc != s.dc {
		return nil, ErrUnknownDatacenter
	}
	_, n, err := s.st.GetNode(nil, name)
	return n, err
}

func (s *storeSource) Nodes(_ context.Context, dc string) ([]*catalog.Node, error) {
	if dc != s.dc {
		return nil, ErrUnknownDatacenter
	}
	_, out, err := s.st.Nodes(nil)
	return out, err
}

func (s *storeSource) register(t testing.TB, req *catalog.RegisterRequest) {
	t.Helper()
	s.mu.Lock()
	s.idx++
	idx := s.idx
	s.mu.Unlock()
	if err := s.st.EnsureRegistration(idx, req); err != nil {
		t.Fatalf("register %+v: %v", req, err)
	}
}

// node registers a node with an address and optional meta.
func (s *storeSource) node(t testing.TB, name, addr string, meta map[string]string) {
	t.Helper()
	s.register(t, &catalog.RegisterRequest{Node: name, Address: addr, NodeMeta: meta})
}

// service registers a service instance on an existing node with one
// service check in status.
func (s *storeSource) service(t testing.TB, node string, svc *catalog.Service, status string) {
	t.Helper()
	req := &catalog.RegisterRequest{Node: node, Service: svc, SkipNodeUpdate: true}
	if status != "" {
		id := svc.ID
		if id == "" {
			id = svc.Service
		}
		req.Check = &catalog.HealthCheck{CheckID: "check:" + id, Name: "check", Status: status, ServiceID: id}
	}
	s.register(t, req)
}

// newTestHandler returns a handler over src with the defaults and the
// changes of mod.
func newTestHandler(t testing.TB, src Source, mod func(*Config)) *Handler {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = "agent1"
	cfg.Clock = clock.NewFake(time.Unix(1_700_000_000, 0))
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg, src)
	if err != nil {
		t.Fatalf("new handler: %v", err)
	}
	return h
}

// ask answers one question through the handler, over network.
func ask(t testing.TB, h *Handler, name string, qtype uint16, network string, mods ...func(*dns.Msg)) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	for _, mod := range mods {
		mod(m)
	}
	resp := h.Answer(m, network)
	if resp == nil {
		t.Fatalf("%s %s: no answer", name, dns.TypeToString[qtype])
	}
	// Every answer must survive the wire.
	buf, err := resp.Pack()
	if err != nil {
		t.Fatalf("%s %s: pack answer: %v\n%v", name, dns.TypeToString[qtype], err, resp)
	}
	if network == "udp" {
		limit := dns.MinMsgSize
		if o := m.IsEdns0(); o != nil && int(o.UDPSize()) > limit {
			limit = int(o.UDPSize())
		}
		if len(buf) > limit {
			t.Fatalf("%s %s: UDP answer of %d bytes over the client's %d", name, dns.TypeToString[qtype], len(buf), limit)
		}
	}
	out := new(dns.Msg)
	if err := out.Unpack(buf); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	return out
}

func withEDNS(size uint16) func(*dns.Msg) {
	return func(m *dns.Msg) { m.SetEdns0(size, false) }
}

func rcode(m *dns.Msg) string { return dns.RcodeToString[m.Rcode] }

// wantRcode fails unless m has rcode rc.
func wantRcode(t testing.TB, m *dns.Msg, rc int) {
	t.Helper()
	if m.Rcode != rc {
		t.Fatalf("rcode = %s, want %s\n%v", rcode(m), dns.RcodeToString[rc], m)
	}
}

// wantSOA fails unless m's authority is exactly the SOA of domain.
func wantSOA(t testing.TB, m *dns.Msg, domain string) {
	t.Helper()
	if len(m.Ns) != 1 {
		t.Fatalf("authority = %v, want one SOA", m.Ns)
	}
	soa, ok := m.Ns[0].(*dns.SOA)
	if !ok || soa.Hdr.Name != domain {
		t.Fatalf("authority = %v, want the SOA of %s", m.Ns[0], domain)
	}
}

// addrs returns the A and AAAA addresses of rrs, sorted as given.
func addrs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	return out
}

func ofType[T dns.RR](rrs []dns.RR) []T {
	var out []T
	for _, rr := range rrs {
		if r, ok := rr.(T); ok {
			out = append(out, r)
		}
	}
	return out
}

func sameSet(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	m := map[string]int{}
	for _, g := range got {
		m[g]++
	}
	for _, w := range want {
		if m[w] == 0 {
			return false
		}
		m[w]--
	}
	return true
}

// upstream is a real DNS server for recursion tests: it answers A
// questions for names in answers, NXDOMAIN otherwise.
type upstream struct {
	addr    string
	queries chan string
}

func startUpstream(t testing.TB, answers map[string]string) *upstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: pc.LocalAddr().String(), queries: make(chan string, 100)}
	mux := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		select {
		case u.queries <- r.Question[0].Name:
		default:
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if ip, ok := answers[strings.ToLower(r.Question[0].Name)]; ok && r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA,
				Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)}}
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return u
}

// silentRecursor returns the address of a UDP socket that reads queries
// and never answers.
func silentRecursor(t testing.TB) string {
	t.Helper()
	addr, _ := countingSilentRecursor(t)
	return addr
}

// countingSilentRecursor is silentRecursor that also returns how many
// queries it has received so far.
func countingSilentRecursor(t testing.TB) (string, func() int64) {
	t.Helper()
	var received atomic.Int64
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String(), received.Load
}
