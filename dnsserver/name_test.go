package dnsserver

import (
	"net"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	domains := []string{"consul.", "alt.example."}
	tests := []struct {
		name string
		ours bool
		want lookup
	}{
		{"consul.", true, lookup{kind: kindApex, domain: "consul."}},
		{"alt.example.", true, lookup{kind: kindApex, domain: "alt.example."}},
		{"example.com.", false, lookup{}},
		{"notconsul.", false, lookup{}},
		{"web.service.consul.", true, lookup{kind: kindService, domain: "consul.", name: "web"}},
		{"web.service.dc2.consul.", true, lookup{kind: kindService, domain: "consul.", dc: "dc2", name: "web"}},
		{"web.service.dc2.dc.consul.", true, lookup{kind: kindService, domain: "consul.", dc: "dc2", name: "web"}},
		{"v1.web.service.consul.", true, lookup{kind: kindService, domain: "consul.", name: "web", tag: "v1"}},
		{"a.b.web.service.consul.", true, lookup{kind: kindService, domain: "consul.", name: "web", tag: "a.b"}},
		{"_web._tcp.service.consul.", true, lookup{kind: kindService, domain: "consul.", name: "web"}},
		{"_web._v1.service.dc1.consul.", true, lookup{kind: kindService, domain: "consul.", dc: "dc1", name: "web", tag: "v1"}},
		{"_web.service.consul.", true, lookup{kind: kindService, domain: "consul.", name: "_web"}},
		{"web.service.alt.example.", true, lookup{kind: kindService, domain: "alt.example.", name: "web"}},
		{"node.service.consul.", true, lookup{kind: kindService, domain: "consul.", name: "node"}},
		{"foo.node.consul.", true, lookup{kind: kindNode, domain: "consul.", name: "foo"}},
		{"foo.bar.node.dc1.consul.", true, lookup{kind: kindNode, domain: "consul.", dc: "dc1", name: "foo.bar"}},
		{"foo.service.node.consul.", true, lookup{kind: kindNode, domain: "consul.", name: "foo.service"}},
		{"7f000001.addr.dc1.consul.", true, lookup{kind: kindAddr, domain: "consul.", dc: "dc1", addr: net.IPv4(127, 0, 0, 1).To4()}},
		{"web.connect.consul.", true, lookup{kind: kindConnect, domain: "consul.", name: "web"}},
		{"q1.query.consul.", true, lookup{kind: kindQuery, domain: "consul.", name: "q1"}},
		{"_q1._tcp.query.consul.", true, lookup{kind: kindQuery, domain: "consul.", name: "q1"}},
		// Invalid forms under the domain.
		{"service.consul.", true, lookup{domain: "consul."}},
		{"foo.consul.", true, lookup{domain: "consul."}},
		{"web.service.a.b.c.consul.", true, lookup{domain: "consul."}},
		{"web.service.dc1.x.consul.", true, lookup{domain: "consul."}},
		{"zz.addr.consul.", true, lookup{domain: "consul."}},
		{"7f0000.addr.consul.", true, lookup{domain: "consul."}},
		{"a.b.connect.consul.", true, lookup{domain: "consul."}},
	}
	for _, tt := range tests {
		got, ours := parseName(tt.name, domains...)
		if ours != tt.ours {
			t.Errorf("%s: ours = %v, want %v", tt.name, ours, tt.ours)
			continue
		}
		if got.kind != tt.want.kind || got.domain != tt.want.domain || got.dc != tt.want.dc ||
			got.name != tt.want.name || got.tag != tt.want.tag || !got.addr.Equal(tt.want.addr) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestParseAddr(t *testing.T) {
	tests := map[string]string{
		"c000020a.addr.dc1.consul.":                         "192.0.2.10",
		"20010db800010002cafe000000001337.addr.dc1.consul.": "2001:db8:1:2:cafe::1337",
		"192.0.2.10.addr.dc1.consul.":                       "192.0.2.10",
		"10.0.0.1.addr.consul.":                             "10.0.0.1",
	}
	for name, want := range tests {
		l, _ := parseName(name, "consul.")
		if l.kind != kindAddr || l.addr.String() != want {
			t.Errorf("%s: %+v, want addr %s", name, l, want)
		}
		if first := strings.SplitN(name, ".", 2)[0]; len(first) >= 8 && encodeAddr(net.ParseIP(want)) != first {
			t.Errorf("encodeAddr(%s) = %s, want %s", want, encodeAddr(net.ParseIP(want)), first)
		}
	}
}

func TestParseReverse(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
		ip   string
	}{
		{"1.0.0.127.in-addr.arpa.", true, "127.0.0.1"},
		{"10.2.0.192.in-addr.arpa.", true, "192.0.2.10"},
		{"0.0.127.in-addr.arpa.", true, ""},
		{"01.0.0.127.in-addr.arpa.", true, ""},
		{"256.0.0.127.in-addr.arpa.", true, ""},
		{"7.3.3.1.0.0.0.0.0.0.0.0.e.f.a.c.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", true, "2001:db8:1:2:cafe::1337"},
		{"x.3.3.1.0.0.0.0.0.0.0.0.e.f.a.c.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", true, ""},
		{"example.com.", false, ""},
	}
	for _, tt := range tests {
		ip, ok := parseReverse(tt.name)
		if ok != tt.ok || (tt.ip == "" && ip != nil) || (tt.ip != "" && ip.String() != tt.ip) {
			t.Errorf("%s: ip %v ok %v, want %q %v", tt.name, ip, ok, tt.ip, tt.ok)
		}
	}
}

func TestRFC1464(t *testing.T) {
	tests := map[[2]string]string{
		{"rack", "r1"}:      "rack=r1",
		{"a=b", "c"}:        "a`=b=c",
		{"tick`", "v`v"}:    "tick``=v``v",
		{" lead", "x"}:      "` lead=x",
		{"trail  ", "x"}:    "trail` ` =x",
		{"k", "v=with=eq"}:  "k=v=with=eq",
		{"", "empty-name"}:  "=empty-name",
		{"unicodé", "välu"}: "unicodé=välu",
	}
	for in, want := range tests {
		if got := rfc1464(in[0], in[1]); got != want {
			t.Errorf("rfc1464(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
}
