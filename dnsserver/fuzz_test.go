package dnsserver

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// FuzzDNSQuery feeds raw packets through the server's path: unpack as the
// listener does, answer over UDP and TCP, pack the answer. Nothing may
// panic, every answer must pack, and a UDP answer must fit the client's
// buffer.
func FuzzDNSQuery(f *testing.F) {
	seed := func(name string, qtype uint16, mods ...func(*dns.Msg)) {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		for _, mod := range mods {
			mod(m)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.service.consul.", dns.TypeA},
		{"web.service.consul.", dns.TypeSRV},
		{"v1.web.service.dc1.consul.", dns.TypeAAAA},
		{"_web._tcp.service.consul.", dns.TypeSRV},
		{"n1.node.consul.", dns.TypeTXT},
		{"n1.node.dc1.dc.consul.", dns.TypeANY},
		{"c000020a.addr.dc1.consul.", dns.TypeA},
		{"1.0.0.10.in-addr.arpa.", dns.TypePTR},
		{"consul.", dns.TypeSOA},
		{"consul.", dns.TypeNS},
		{"big.service.consul.", dns.TypeSRV},
		{"example.com.", dns.TypeA},
		{"web.connect.consul.", dns.TypeA},
	} {
		seed(q.name, q.qtype)
		seed(q.name, q.qtype, withEDNS(1232))
	}
	seed("web.service.consul.", dns.TypeA, func(m *dns.Msg) {
		m.SetEdns0(4096, true)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 0, Address: net.IPv4zero.To4()})
	})
	f.Add([]byte{0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})

	src := webCatalog(f)
	addBig(f, src, 40)
	mod := func(c *Config) {
		c.AltDomain = "alt."
		c.EnableTruncate = true
	}
	h := newTestHandler(f, src, mod)
	// cached answers from stable instances, as the agent's views give.
	cached := newTestHandler(f, newViewLikeSource(src), mod)

	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return // the listener answers FORMERR or nothing
		}
		for _, network := range []string{"udp", "tcp"} {
			resp := h.Answer(req, network)
			if resp == nil {
				continue
			}
			buf, err := resp.Pack()
			if err != nil {
				t.Fatalf("answer to %v does not pack: %v\n%v", req, err, resp)
			}
			if network == "udp" && !req.Response {
				limit := dns.MinMsgSize
				if o := req.IsEdns0(); o != nil && int(o.UDPSize()) > limit {
					limit = int(o.UDPSize())
				}
				if len(buf) > limit {
					t.Fatalf("UDP answer of %d bytes for a %d-byte client", len(buf), limit)
				}
			}
		}
		// The cached path, twice (a miss, then maybe a hit), as a Server
		// takes it: AnswerPacket on UDP, else ServeDNS.
		for _, network := range []string{"udp", "tcp"} {
			for i := 0; i < 2; i++ {
				var buf []byte
				if b, ok := cached.AnswerPacket(nil, data, network); ok && network == "udp" {
					buf = b
				} else {
					rec := &recorder{tcp: network == "tcp"}
					cached.ServeDNS(rec, req)
					if len(rec.written) == 0 {
						continue
					}
					buf = rec.written[0]
				}
				resp := new(dns.Msg)
				if err := resp.Unpack(buf); err != nil {
					t.Fatalf("cached answer to %v does not unpack: %v", req, err)
				}
				if resp.Id != req.Id || len(resp.Question) > 0 && resp.Question[0] != req.Question[0] {
					t.Fatalf("cached answer to %v is for another query:\n%v", req, resp)
				}
				if network == "udp" {
					limit := dns.MinMsgSize
					if o := req.IsEdns0(); o != nil && int(o.UDPSize()) > limit {
						limit = int(o.UDPSize())
					}
					if len(buf) > limit {
						t.Fatalf("cached UDP answer of %d bytes for a %d-byte client", len(buf), limit)
					}
				}
			}
		}
	})
}
