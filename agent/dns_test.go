package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

// dnsAgent is a running agent with an API client and its DNS address.
type dnsAgent struct {
	a    *agent.Agent
	api  *api.Client
	addr string // host:port of the DNS interface, UDP and TCP
	node string // the agent's node name
}

// startDNSAgent starts an agent with its DNS interface on a free port;
// mod may change the configuration first.
func startDNSAgent(t *testing.T, mod func(*config.Config)) *dnsAgent {
	t.Helper()
	cfg := agenttest.Config(t)
	if mod != nil {
		mod(cfg)
	}
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	return &dnsAgent{a: a, api: c, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Ports.DNS)), node: cfg.NodeName}
}

// register puts a node, and optionally one service with checks, in the
// catalog through the API.
func (d *dnsAgent) register(t *testing.T, reg *api.CatalogRegistration) {
	t.Helper()
	if _, err := d.api.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("register %s: %v", reg.Node, err)
	}
}

func (d *dnsAgent) query(t *testing.T, network, name string, qtype uint16, mods ...func(*dns.Msg)) *dns.Msg {
	t.Helper()
	r, err := d.tryQuery(network, name, qtype, mods...)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

func (d *dnsAgent) tryQuery(network, name string, qtype uint16, mods ...func(*dns.Msg)) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	for _, mod := range mods {
		mod(m)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, d.addr)
	return r, err
}

func dnsAddrs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	sort.Strings(out)
	return out
}

func dnsSRVs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, fmt.Sprintf("%d %s", s.Port, s.Target))
		}
	}
	sort.Strings(out)
	return out
}

func dnsWant(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func dnsWantRcode(t *testing.T, m *dns.Msg, rc int) {
	t.Helper()
	if m.Rcode != rc {
		t.Fatalf("rcode %s, want %s\n%v", dns.RcodeToString[m.Rcode], dns.RcodeToString[rc], m)
	}
}

func dnsWantSOA(t *testing.T, m *dns.Msg, domain string) {
	t.Helper()
	if len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA || m.Ns[0].Header().Name != domain {
		t.Fatalf("authority %v, want the SOA of %s", m.Ns, domain)
	}
}

// webCatalog registers web on two nodes (tags v1 and v2; web2 with its
// own address) and a node with meta.
func (d *dnsAgent) webCatalog(t *testing.T) {
	t.Helper()
	d.register(t, &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1",
		NodeMeta: map[string]string{"rack": "r1", "rfc1035-txt": "plain"},
		Service:  &api.AgentService{ID: "web1", Service: "web", Tags: []string{"v1"}, Port: 8080}})
	d.register(t, &api.CatalogRegistration{Node: "n2", Address: "10.0.0.2",
		Service: &api.AgentService{ID: "web2", Service: "web", Tags: []string{"v2"}, Port: 8081, Address: "192.0.2.10"}})
}

func TestDNSNameForms(t *testing.T) {
	d := startDNSAgent(t, func(c *config.Config) { c.AltDomain = "alt.test." })
	d.webCatalog(t)

	for _, network := range []string{"udp", "tcp"} {
		m := d.query(t, network, "web.service.consul", dns.TypeA)
		dnsWantRcode(t, m, dns.RcodeSuccess)
		dnsWant(t, network+" web A", dnsAddrs(m.Answer), []string{"10.0.0.1", "192.0.2.10"})
		if !m.Authoritative {
			t.Fatal("answer not authoritative")
		}
	}
	m := d.query(t, "udp", "web.service.dc1.consul", dns.TypeSRV)
	dnsWant(t, "web SRV", dnsSRVs(m.Answer), []string{"8080 n1.node.dc1.consul.", "8081 c000020a.addr.dc1.consul."})
	dnsWant(t, "web SRV additional", dnsAddrs(m.Extra), []string{"10.0.0.1", "192.0.2.10"})

	dnsWant(t, "tag v1", dnsAddrs(d.query(t, "udp", "v1.web.service.consul", dns.TypeA).Answer), []string{"10.0.0.1"})
	dnsWant(t, "RFC 2782 tag", dnsSRVs(d.query(t, "udp", "_web._v2.service.consul", dns.TypeSRV).Answer),
		[]string{"8081 c000020a.addr.dc1.consul."})
	dnsWant(t, "RFC 2782 _tcp", dnsSRVs(d.query(t, "udp", "_web._tcp.service.consul", dns.TypeSRV).Answer),
		[]string{"8080 n1.node.dc1.consul.", "8081 c000020a.addr.dc1.consul."})
	dnsWant(t, "alt domain", dnsSRVs(d.query(t, "udp", "web.service.alt.test", dns.TypeSRV).Answer),
		[]string{"8080 n1.node.dc1.alt.test.", "8081 c000020a.addr.dc1.alt.test."})

	m = d.query(t, "udp", "n1.node.consul", dns.TypeA)
	dnsWant(t, "node A", dnsAddrs(m.Answer), []string{"10.0.0.1"})
	var txt []string
	for _, rr := range d.query(t, "udp", "n1.node.dc1.consul", dns.TypeTXT).Answer {
		txt = append(txt, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	sort.Strings(txt)
	dnsWant(t, "node TXT", txt, []string{"plain", "rack=r1"})
	dnsWant(t, "own node", dnsAddrs(d.query(t, "udp", d.node+".node.consul", dns.TypeA).Answer), []string{"127.0.0.1"})

	dnsWant(t, "addr", dnsAddrs(d.query(t, "udp", "c000020a.addr.dc1.consul", dns.TypeA).Answer), []string{"192.0.2.10"})

	m = d.query(t, "udp", "1.0.0.10.in-addr.arpa", dns.TypePTR)
	if len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != "n1.node.dc1.consul." {
		t.Fatalf("PTR = %v", m)
	}

	m = d.query(t, "udp", "consul", dns.TypeSOA)
	if soa, ok := m.Answer[0].(*dns.SOA); !ok || soa.Ns != "ns.consul." || soa.Mbox != "hostmaster.consul." || soa.Refresh != 3600 {
		t.Fatalf("SOA = %v", m)
	}
	m = d.query(t, "udp", "consul", dns.TypeNS)
	if len(m.Answer) != 1 || m.Answer[0].(*dns.NS).Ns != d.node+".node.dc1.consul." {
		t.Fatalf("NS = %v", m)
	}
	dnsWant(t, "NS glue", dnsAddrs(m.Extra), []string{"127.0.0.1"})

	for _, name := range []string{"nosuch.service.consul", "nosuch.node.consul", "web.service.dc9.consul", "bogus.consul", "v9.web.service.consul"} {
		m = d.query(t, "udp", name, dns.TypeA)
		dnsWantRcode(t, m, dns.RcodeNameError)
		dnsWantSOA(t, m, "consul.")
	}
	// NODATA: the name exists, not with this type.
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web.service.consul", dns.TypeAAAA}, {"n1.node.consul", dns.TypeAAAA}, {"web.service.consul", dns.TypeMX}, {"consul", dns.TypeA}} {
		m = d.query(t, "udp", q.name, q.qtype)
		dnsWantRcode(t, m, dns.RcodeSuccess)
		if len(m.Answer) != 0 {
			t.Fatalf("%s %s: %v", q.name, dns.TypeToString[q.qtype], m.Answer)
		}
		dnsWantSOA(t, m, "consul.")
	}
	// Names outside the domain with no recursors are refused.
	dnsWantRcode(t, d.query(t, "udp", "example.com", dns.TypeA), dns.RcodeRefused)
}

func TestDNSFollowsCatalogChanges(t *testing.T) {
	d := startDNSAgent(t, nil)
	d.webCatalog(t)
	dnsWant(t, "web", dnsAddrs(d.query(t, "udp", "web.service.consul", dns.TypeA).Answer), []string{"10.0.0.1", "192.0.2.10"})

	d.register(t, &api.CatalogRegistration{Node: "n3", Address: "10.0.0.3",
		Service: &api.AgentService{ID: "web3", Service: "web", Port: 8082}})
	wait.For(t, 5*time.Second, func() error {
		got := dnsAddrs(d.query(t, "udp", "web.service.consul", dns.TypeA).Answer)
		if len(got) != 3 {
			return fmt.Errorf("web = %v", got)
		}
		return nil
	})
	// A new service, first seen after the service list was cached.
	d.register(t, &api.CatalogRegistration{Node: "n3", Address: "10.0.0.3",
		Service: &api.AgentService{ID: "cache", Service: "cache", Port: 6379}})
	wait.For(t, 5*time.Second, func() error {
		if m := d.query(t, "udp", "cache.service.consul", dns.TypeA); m.Rcode != dns.RcodeSuccess {
			return errors.New("cache: " + dns.RcodeToString[m.Rcode])
		}
		return nil
	})
	// A critical check registered in the catalog takes an instance out.
	d.register(t, &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
		Check: &api.AgentCheck{CheckID: "web1-alive", Name: "alive", Status: api.HealthCritical, ServiceID: "web1"}})
	wait.For(t, 5*time.Second, func() error {
		got := dnsAddrs(d.query(t, "udp", "web.service.consul", dns.TypeA).Answer)
		if strings.Join(got, ",") != "10.0.0.3,192.0.2.10" {
			return fmt.Errorf("web = %v", got)
		}
		return nil
	})
	if _, err := d.api.Catalog().Deregister(&api.CatalogDeregistration{Node: "n3"}, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, func() error {
		if m := d.query(t, "udp", "n3.node.consul", dns.TypeA); m.Rcode != dns.RcodeNameError {
			return errors.New("n3 still answered")
		}
		return nil
	})
}

func TestDNSHealthFromTTLCheck(t *testing.T) {
	d := startDNSAgent(t, func(c *config.Config) { c.DNS.OnlyPassing = true })
	err := d.api.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "api", Name: "api", Port: 9000, Check: &api.AgentServiceCheck{TTL: "30s"}})
	if err != nil {
		t.Fatal(err)
	}
	state := func(want int) func() error {
		return func() error {
			m := d.query(t, "udp", "api.service.consul", dns.TypeA)
			if m.Rcode != want {
				return fmt.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[want])
			}
			return nil
		}
	}
	// A new TTL check starts critical: no instance.
	wait.For(t, 10*time.Second, func() error {
		if _, _, err := d.api.Agent().Service("api", nil); err != nil {
			return err
		}
		return state(dns.RcodeNameError)()
	})
	if err := d.api.Agent().PassTTL("service:api", "ok"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, state(dns.RcodeSuccess))
	dnsWant(t, "api", dnsAddrs(d.query(t, "udp", "api.service.consul", dns.TypeA).Answer), []string{"127.0.0.1"})
	// only_passing: warning is out too.
	if err := d.api.Agent().WarnTTL("service:api", "meh"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, state(dns.RcodeNameError))
	if err := d.api.Agent().PassTTL("service:api", "ok"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, state(dns.RcodeSuccess))
	if err := d.api.Agent().FailTTL("service:api", "down"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, state(dns.RcodeNameError))
}

func TestDNSTruncationAndTCPRetry(t *testing.T) {
	d := startDNSAgent(t, func(c *config.Config) {
		c.DNS.EnableTruncate = true
		c.DNS.ServiceTTL = map[string]time.Duration{"*": 5 * time.Second, "many": 15 * time.Second}
		c.DNS.NodeTTL = 7 * time.Second
	})
	for i := 0; i < 40; i++ {
		d.register(t, &api.CatalogRegistration{Node: fmt.Sprintf("node-%02d", i), Address: fmt.Sprintf("10.1.0.%d", i+1),
			Service: &api.AgentService{ID: "many", Service: "many", Port: 7000 + i}})
	}
	m := d.query(t, "udp", "many.service.consul", dns.TypeSRV)
	if !m.Truncated || len(m.Answer) != 3 {
		t.Fatalf("UDP: TC %v with %d answers, want TC and 3", m.Truncated, len(m.Answer))
	}
	m = d.query(t, "tcp", "many.service.consul", dns.TypeSRV)
	if m.Truncated || len(m.Answer) != 40 || len(m.Extra) != 40 {
		t.Fatalf("TCP: TC %v with %d answers %d extra", m.Truncated, len(m.Answer), len(m.Extra))
	}
	for _, rr := range append(m.Answer, m.Extra...) {
		if rr.Header().Ttl != 15 {
			t.Fatalf("service_ttl: %v", rr)
		}
	}
	// EDNS0: the client's buffer decides.
	m = d.query(t, "udp", "many.service.consul", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(4096, false) })
	if m.Truncated || len(m.Answer) != 40 || m.IsEdns0() == nil {
		t.Fatalf("EDNS 4096 A: TC %v, %d answers, OPT %v", m.Truncated, len(m.Answer), m.IsEdns0())
	}
	m = d.query(t, "udp", "many.service.consul", dns.TypeSRV, func(m *dns.Msg) { m.SetEdns0(1232, false) })
	if !m.Truncated || len(m.Answer) <= 3 || len(m.Answer) >= 40 {
		t.Fatalf("EDNS 1232 SRV: TC %v, %d answers", m.Truncated, len(m.Answer))
	}
	m.Compress = true // as it came over the wire
	if b, _ := m.Pack(); len(b) > 1232 {
		t.Fatalf("EDNS 1232 answer is %d bytes", len(b))
	}
	// miekg's client retries nothing itself: a resolver would, like this.
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion("many.service.consul.", dns.TypeSRV)
	r, _, err := c.Exchange(q, d.addr)
	if err != nil || !r.Truncated {
		t.Fatalf("UDP: %v %v", r, err)
	}
	c.Net = "tcp"
	if r, _, err = c.Exchange(q, d.addr); err != nil || len(r.Answer) != 40 {
		t.Fatalf("TCP retry: %v %v", r, err)
	}
	if m := d.query(t, "udp", "node-01.node.consul", dns.TypeA); m.Answer[0].Header().Ttl != 7 {
		t.Fatalf("node_ttl: %v", m.Answer)
	}
}

// startUpstream serves A records for names in answers over UDP and TCP,
// NXDOMAIN for the rest, and returns its address.
func startUpstream(t *testing.T, answers map[string]string) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if ip, ok := answers[strings.ToLower(r.Question[0].Name)]; ok {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: net.ParseIP(ip)}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	// UDP and TCP on one port: the port a free UDP socket got may be
	// taken for TCP, so try a few.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var servers []*dns.Server
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.ActivateAndServe()
		}()
		<-started
		servers = append(servers, s)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Shutdown()
		}
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// startSilent returns the address of a UDP socket that never answers.
func startSilent(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

func TestDNSRecursors(t *testing.T) {
	up := startUpstream(t, map[string]string{"www.example.com.": "203.0.113.7"})
	silent := startSilent(t)
	d := startDNSAgent(t, func(c *config.Config) {
		c.Recursors = []string{silent, up}
		c.DNS.RecursorTimeout = 300 * time.Millisecond
	})
	d.webCatalog(t)

	start := time.Now()
	for _, network := range []string{"udp", "tcp"} {
		m := d.query(t, network, "www.example.com", dns.TypeA)
		dnsWant(t, network+" forwarded", dnsAddrs(m.Answer), []string{"203.0.113.7"})
		if !m.RecursionAvailable {
			t.Fatal("RA not set")
		}
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("forwarding took %v", el)
	}
	dnsWantRcode(t, d.query(t, "udp", "nosuch.example.com", dns.TypeA), dns.RcodeNameError)

	// While forwarded queries wait on the silent recursor, local names
	// answer at once.
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = d.tryQuery("udp", "www.example.com", dns.TypeA)
		}()
	}
	time.Sleep(30 * time.Millisecond)
	local := time.Now()
	for i := 0; i < 10; i++ {
		if m := d.query(t, "udp", "web.service.consul", dns.TypeA); len(m.Answer) != 2 {
			t.Fatalf("local answer: %v", m)
		}
	}
	if el := time.Since(local); el > 250*time.Millisecond {
		t.Fatalf("10 local queries took %v behind a silent recursor", el)
	}
	wg.Wait()
}

func TestDNSRecursorsAllSilent(t *testing.T) {
	d := startDNSAgent(t, func(c *config.Config) {
		c.Recursors = []string{startSilent(t), startSilent(t)}
		c.DNS.RecursorTimeout = 200 * time.Millisecond
	})
	start := time.Now()
	m := d.query(t, "udp", "www.example.com", dns.TypeA)
	dnsWantRcode(t, m, dns.RcodeServerFailure)
	if el := time.Since(start); el < 350*time.Millisecond || el > 2*time.Second {
		t.Fatalf("SERVFAIL after %v, want about two recursor timeouts", el)
	}
}

func TestDNSDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig is not on PATH")
	}
	d := startDNSAgent(t, nil)
	d.webCatalog(t)
	host, port, _ := net.SplitHostPort(d.addr)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, dig, append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	lines := func(s string) []string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
		sort.Strings(out)
		return out
	}
	dnsWant(t, "dig A", lines(run("web.service.consul", "A", "+short")), []string{"10.0.0.1", "192.0.2.10"})
	dnsWant(t, "dig SRV +tcp", lines(run("web.service.consul", "SRV", "+short", "+tcp")),
		[]string{"1 1 8080 n1.node.dc1.consul.", "1 1 8081 c000020a.addr.dc1.consul."})
	dnsWant(t, "dig TXT", lines(run("n1.node.consul", "TXT", "+short")), []string{`"plain"`, `"rack=r1"`})
	dnsWant(t, "dig -x", lines(run("-x", "10.0.0.1", "+short")), []string{"n1.node.dc1.consul."})

	full := run("nosuch.service.consul", "A")
	if !strings.Contains(full, "status: NXDOMAIN") || !strings.Contains(full, "flags: qr aa rd;") ||
		!strings.Contains(full, "AUTHORITY: 1") || !strings.Contains(full, "hostmaster.consul.") {
		t.Fatalf("dig NXDOMAIN:\n%s", full)
	}
	// SRV targets' addresses and node meta TXT in additional.
	full = run("web.service.consul", "SRV", "+noedns")
	if !strings.Contains(full, "status: NOERROR") || !strings.Contains(full, "ADDITIONAL: 4") {
		t.Fatalf("dig SRV:\n%s", full)
	}
}

// dnsGoroutines counts goroutines of DNS listeners and view loops.
func dnsGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "miekg/dns.(*Server).serve") || strings.Contains(g, "viewcache.(*Cache)") {
			n++
		}
	}
	return n
}

func TestDNSOnClientAgent(t *testing.T) {
	sc := agenttest.ClusterConfig(t, "dns-s1", true, 1, "")
	srv := agenttest.StartNoWait(t, sc)
	cc := agenttest.ClusterConfig(t, "dns-c1", false, 0, agenttest.SerfAddr(sc))
	agenttest.StartNoWait(t, cc)
	sapi, err := api.NewClient(&api.Config{Address: srv.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsAgent{api: sapi, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cc.Ports.DNS)), node: cc.NodeName}
	wait.For(t, 30*time.Second, func() error {
		if _, err := sapi.Catalog().Register(&api.CatalogRegistration{Node: "n1", Address: "10.0.0.1",
			Service: &api.AgentService{ID: "web1", Service: "web", Port: 8080}}, nil); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		return nil
	})
	// The client answers through its views over the server RPC.
	wait.For(t, 30*time.Second, func() error {
		m, err := d.tryQuery("udp", "web.service.consul", dns.TypeA)
		if err != nil {
			return err
		}
		if got := dnsAddrs(m.Answer); len(got) != 1 || got[0] != "10.0.0.1" {
			return fmt.Errorf("web on the client: %s %v", dns.RcodeToString[m.Rcode], got)
		}
		return nil
	})
	d.register(t, &api.CatalogRegistration{Node: "n2", Address: "10.0.0.2",
		Service: &api.AgentService{ID: "web2", Service: "web", Port: 8080}})
	wait.For(t, 10*time.Second, func() error {
		if got := dnsAddrs(d.query(t, "udp", "web.service.consul", dns.TypeA).Answer); len(got) != 2 {
			return fmt.Errorf("web on the client after a change: %v", got)
		}
		return nil
	})
}

func TestDNSDisabledAndShutdown(t *testing.T) {
	cfg := agenttest.Config(t)
	port := cfg.Ports.DNS
	cfg.Ports.DNS = -1
	agenttest.Start(t, cfg)
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		c.Close()
		t.Fatal("DNS listening with ports.dns = -1")
	}

	d := startDNSAgent(t, func(c *config.Config) {
		c.Recursors = []string{startSilent(t)}
		c.DNS.RecursorTimeout = 10 * time.Second
	})
	d.webCatalog(t)
	d.query(t, "udp", "web.service.consul", dns.TypeA)
	// A query stuck on a silent recursor must not hold up shutdown.
	go func() { _, _ = d.tryQuery("udp", "stuck.example.com", dns.TypeA) }()
	time.Sleep(30 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("shutdown took %v", el)
	}
	if c, err := net.Dial("tcp", d.addr); err == nil {
		c.Close()
		t.Fatal("DNS TCP still listening after shutdown")
	}
	if n := dnsGoroutines(); n != 0 {
		t.Fatalf("%d DNS or view goroutines left after shutdown", n)
	}
	q := new(dns.Msg)
	q.SetQuestion("web.service.consul.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if _, _, err := c.Exchange(q, d.addr); err == nil {
		t.Fatal("DNS UDP still answering after shutdown")
	}
}

// TestDNSCacheIsNeverStale hammers a service so that its answers come from
// the DNS response cache, changes it, and checks that the change is
// answered within one blocking-query round of the agent's view (the
// blocking health query below returns in the same round), and that no
// stale answer is served after the first fresh one.
func TestDNSCacheIsNeverStale(t *testing.T) {
	d := startDNSAgent(t, nil)
	d.webCatalog(t)
	both := []string{"10.0.0.1", "192.0.2.10"}
	hammer := func(want []string) {
		t.Helper()
		for i := 0; i < 50; i++ {
			for _, network := range []string{"udp", "tcp"} {
				dnsWant(t, "web", dnsAddrs(d.query(t, network, "web.service.consul", dns.TypeA).Answer), want)
			}
			if n := len(d.query(t, "udp", "web.service.consul", dns.TypeSRV).Answer); n != len(want) {
				t.Fatalf("%d SRV answers, want %d", n, len(want))
			}
		}
	}
	_, meta, err := d.api.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	hammer(both)

	for _, step := range []struct {
		change func()
		want   []string
	}{
		{func() { // web1 fails
			d.register(t, &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
				Check: &api.AgentCheck{CheckID: "web1-alive", Name: "alive", Status: api.HealthCritical, ServiceID: "web1"}})
		}, []string{"192.0.2.10"}},
		{func() { // and recovers
			d.register(t, &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: true,
				Check: &api.AgentCheck{CheckID: "web1-alive", Name: "alive", Status: api.HealthPassing, ServiceID: "web1"}})
		}, both},
		{func() { // a third instance
			d.register(t, &api.CatalogRegistration{Node: "n3", Address: "10.0.0.3",
				Service: &api.AgentService{ID: "web3", Service: "web", Port: 8082}})
		}, []string{"10.0.0.1", "10.0.0.3", "192.0.2.10"}},
	} {
		step.change()
		// One round: the blocking query returns with the change, as the
		// view's does.
		_, meta, err = d.api.Health().Service("web", "", false, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wait.For(t, time.Second, func() error {
			if got := dnsAddrs(d.query(t, "udp", "web.service.consul", dns.TypeA).Answer); strings.Join(got, ",") != strings.Join(step.want, ",") {
				return fmt.Errorf("web = %v, want %v", got, step.want)
			}
			return nil
		})
		hammer(step.want)
	}
}

// <service>.virtual.<domain> answers the virtual IP transparent proxies
// reach the service at: an A record, NODATA for other types, NXDOMAIN for a
// service outside the mesh.
func TestDNSVirtualIP(t *testing.T) {
	t.Parallel()
	d := startDNSAgent(t, nil)
	d.register(t, &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1",
		Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: "db-sidecar-proxy", Service: "db-sidecar-proxy", Port: 21000,
			Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "db"}}})
	d.register(t, &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", Service: &api.AgentService{ID: "plain", Service: "plain", Port: 80}})
	var want string
	wait.For(t, 20*time.Second, func() error {
		var out struct {
			Chain struct{ AutoVirtualIPs []string }
		}
		if _, err := d.api.Raw().Query("/v1/discovery-chain/db", &out, nil); err != nil {
			return err
		}
		if len(out.Chain.AutoVirtualIPs) != 1 {
			return fmt.Errorf("db has no virtual IP yet")
		}
		want = out.Chain.AutoVirtualIPs[0]
		return nil
	})
	wait.For(t, 20*time.Second, func() error {
		m := d.query(t, "udp", "DB.virtual.consul.", dns.TypeA)
		if got := dnsAddrs(m.Answer); len(got) != 1 || got[0] != want {
			return fmt.Errorf("db.virtual A = %v (rcode %d), want %s", got, m.Rcode, want)
		}
		return nil
	})
	m := d.query(t, "udp", "db.virtual.consul.", dns.TypeAAAA)
	dnsWantRcode(t, m, dns.RcodeSuccess)
	if len(m.Answer) != 0 {
		t.Fatalf("db.virtual AAAA = %v, want no data", m.Answer)
	}
	dnsWantRcode(t, d.query(t, "udp", "plain.virtual.consul.", dns.TypeA), dns.RcodeNameError)
	dnsWantRcode(t, d.query(t, "udp", "a.b.virtual.consul.", dns.TypeA), dns.RcodeNameError)
}
