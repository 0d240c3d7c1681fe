package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/test/wait"
)

// serve starts h on a free loopback port and returns the address.
func serve(t testing.TB, h dns.Handler) string {
	t.Helper()
	s, err := Listen(h, []string{"127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s.Addrs()[0].String()
}

func query(t testing.TB, network, addr, name string, qtype uint16, mods ...func(*dns.Msg)) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	for _, mod := range mods {
		mod(m)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

func TestServerUDPAndTCP(t *testing.T) {
	h := newTestHandler(t, bigCatalog(t, 50), func(c *Config) { c.EnableTruncate = true })
	addr := serve(t, h)

	r := query(t, "udp", addr, "big.service.consul.", dns.TypeSRV)
	if !r.Truncated || len(r.Answer) != 3 {
		t.Fatalf("UDP: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
	// The client retries over TCP, as resolvers do on TC.
	r = query(t, "tcp", addr, "big.service.consul.", dns.TypeSRV)
	if r.Truncated || len(r.Answer) != 50 {
		t.Fatalf("TCP: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
	r = query(t, "udp", addr, "big.service.consul.", dns.TypeA, withEDNS(4096))
	if r.Truncated || len(r.Answer) != 50 {
		t.Fatalf("UDP EDNS: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
}

func TestServerMalformedPackets(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), nil)
	addr := serve(t, h)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(pkt []byte) *dns.Msg {
		t.Helper()
		if _, err := conn.Write(pkt); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			return nil // silence
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("unpack server reply: %v", err)
		}
		return m
	}
	// Garbage shorter than a header: silence.
	if m := send([]byte{1, 2, 3}); m != nil {
		t.Fatalf("answered 3 bytes: %v", m)
	}
	// A header promising a question that is not there: FORMERR.
	if m := send([]byte{0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}); m == nil || m.Rcode != dns.RcodeFormatError {
		t.Fatalf("truncated question: %v", m)
	}
	// A name over 255 octets (five 63-byte labels): FORMERR.
	var pkt []byte
	pkt = append(pkt, 0, 10, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0)
	for i := 0; i < 5; i++ {
		pkt = append(pkt, 63)
		for j := 0; j < 63; j++ {
			pkt = append(pkt, 'a')
		}
	}
	pkt = append(pkt, 0, 0, 1, 0, 1)
	if m := send(pkt); m == nil || m.Rcode != dns.RcodeFormatError {
		t.Fatalf("long name: %v", m)
	}
	// A compression loop in the question name: FORMERR.
	loop := []byte{0, 11, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}
	if m := send(loop); m == nil || m.Rcode != dns.RcodeFormatError {
		t.Fatalf("pointer loop: %v", m)
	}
	// A response packet: silence.
	resp := new(dns.Msg)
	resp.SetQuestion("web.service.consul.", dns.TypeA)
	resp.Response = true
	b, _ := resp.Pack()
	if m := send(b); m != nil {
		t.Fatalf("answered a response: %v", m)
	}
	// The server still answers.
	r := query(t, "udp", addr, "web.service.consul.", dns.TypeA)
	if len(r.Answer) != 3 {
		t.Fatalf("after garbage: %v", r)
	}
}

func TestRecursion(t *testing.T) {
	up := startUpstream(t, map[string]string{"example.com.": "93.184.216.34"})
	silent := silentRecursor(t)
	h := newTestHandler(t, webCatalog(t), func(c *Config) {
		c.Recursors = []string{silent, up.addr}
		c.RecursorTimeout = 300 * time.Millisecond
	})
	addr := serve(t, h)

	start := time.Now()
	r := query(t, "udp", addr, "example.com.", dns.TypeA)
	if got := addrs(r.Answer); len(got) != 1 || got[0] != "93.184.216.34" || !r.RecursionAvailable {
		t.Fatalf("forwarded answer: %v", r)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
		t.Fatalf("answer after %v, want one recursor timeout (300ms)", el)
	}
	// NXDOMAIN from the upstream is passed on, not retried.
	r = query(t, "udp", addr, "nosuch.example.com.", dns.TypeA)
	wantRcode(t, r, dns.RcodeNameError)

	// Unknown reverse names are forwarded too.
	r = query(t, "udp", addr, "4.3.2.1.in-addr.arpa.", dns.TypePTR)
	wantRcode(t, r, dns.RcodeNameError)
	select {
	case q := <-up.queries:
		_ = q
	default:
		t.Fatal("upstream saw no query")
	}

	// Our domain still answers authoritatively with RA set.
	r = query(t, "udp", addr, "web.service.consul.", dns.TypeA)
	if len(r.Answer) != 3 || !r.RecursionAvailable || !r.Authoritative {
		t.Fatalf("local answer with recursors: %v", r)
	}
}

func TestRecursionAllFail(t *testing.T) {
	h := newTestHandler(t, webCatalog(t), func(c *Config) {
		c.Recursors = []string{silentRecursor(t), silentRecursor(t)}
		c.RecursorTimeout = 200 * time.Millisecond
	})
	addr := serve(t, h)
	r := query(t, "udp", addr, "example.com.", dns.TypeA, withEDNS(1232))
	wantRcode(t, r, dns.RcodeServerFailure)
	if r.IsEdns0() == nil {
		t.Fatal("SERVFAIL to an EDNS query has no OPT")
	}
}

func TestSilentRecursorDoesNotBlockOtherQueries(t *testing.T) {
	recursor, forwarded := countingSilentRecursor(t)
	h := newTestHandler(t, webCatalog(t), func(c *Config) {
		c.Recursors = []string{recursor}
		c.RecursorTimeout = 2 * time.Second
	})
	addr := serve(t, h)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion("stuck.example.com.", dns.TypeA)
			_, _, _ = c.Exchange(m, addr)
		}()
	}
	// The forwarded queries are waiting.
	wait.For(t, 5*time.Second, func() error {
		if n := forwarded(); n < 20 {
			return fmt.Errorf("%d of 20 queries forwarded", n)
		}
		return nil
	})
	start := time.Now()
	for i := 0; i < 20; i++ {
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, network, addr, "web.service.consul.", dns.TypeA)
			if len(r.Answer) != 3 {
				t.Fatalf("local answer while recursion is stuck: %v", r)
			}
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("40 local queries took %v while recursion was stuck", el)
	}
	wg.Wait()
}

func TestShutdownAbortsRecursionInFlight(t *testing.T) {
	recursor, forwarded := countingSilentRecursor(t)
	ctx, cancel := context.WithCancel(context.Background())
	h := newTestHandler(t, webCatalog(t), func(c *Config) {
		c.Recursors = []string{recursor}
		c.RecursorTimeout = 10 * time.Second
		c.Context = ctx
	})
	s, err := Listen(h, []string{"127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := &dns.Client{Net: "udp", Timeout: 15 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("stuck.example.com.", dns.TypeA)
		_, _, _ = c.Exchange(m, s.Addrs()[0].String())
	}()
	wait.For(t, 5*time.Second, func() error {
		if forwarded() == 0 {
			return errors.New("query not forwarded yet")
		}
		return nil
	})
	start := time.Now()
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("shutdown took %v with a query stuck in recursion", el)
	}
	<-done
}

// TestServerAnswersFromTheAddressAsked serves a wildcard address and asks
// another loopback address than the first: answers, from the cache
// (the reading goroutine) as from ServeDNS (a goroutine per query), come
// from the address asked, or the client's connected socket would drop
// them.
func TestServerAnswersFromTheAddressAsked(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.2 on the loopback interface and IP_PKTINFO")
	}
	h := newTestHandler(t, newViewLikeSource(webCatalog(t)), nil)
	s, err := Listen(h, []string{"0.0.0.0:0"}, nil)
	if err != nil {
		t.Skipf("no wildcard listener here: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	if n := len(s.servers); n != 1+udpSockets() {
		t.Fatalf("%d servers, want TCP and %d UDP", n, udpSockets())
	}
	port := s.Addrs()[0].(*net.UDPAddr).Port
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		// The first query fills the cache, the others are answered from
		// it; the node lookup is never cached. Several clients (source
		// ports) reach the several sockets.
		for i := 0; i < 8; i++ {
			if r := query(t, "udp", addr, "web.service.consul.", dns.TypeA); len(r.Answer) != 3 {
				t.Fatalf("%s: %v", addr, r)
			}
			if r := query(t, "udp", addr, "n1.node.consul.", dns.TypeA); len(r.Answer) != 1 {
				t.Fatalf("%s: %v", addr, r)
			}
		}
	}
}
