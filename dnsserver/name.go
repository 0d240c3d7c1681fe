package dnsserver

import (
	"encoding/hex"
	"net"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// kind is what a name under the domain asks for.
type kind int

const (
	// kindInvalid is a name under the domain that no lookup matches.
	kindInvalid kind = iota
	// kindApex is the domain itself.
	kindApex
	// kindService is [tag.]<service>.service or _<service>._<tag>.service.
	kindService
	// kindNode is <node>.node.
	kindNode
	// kindAddr is <hex-ip>.addr.
	kindAddr
	// kindConnect is <service>.connect.
	kindConnect
	// kindQuery is <query>.query.
	kindQuery
	// kindVirtual is <service>.virtual: the service's virtual IP.
	kindVirtual
)

// lookup is a parsed name under one of the handler's domains.
type lookup struct {
	kind kind
	// domain is the configured domain the name is under ("consul.").
	domain string
	// dc is the datacenter named in the name; "" for the local one.
	dc string
	// name is the service, node or prepared query name.
	name string
	// tag filters service instances; "" for any.
	tag string
	// addr is the address of an addr lookup.
	addr net.IP
}

// parseName parses name, lower-cased and fully qualified, against the
// domains. ok is false when name is under none of them.
func parseName(name string, domains ...string) (l lookup, ok bool) {
	var rest string
	for _, d := range domains {
		if d == "" {
			continue
		}
		if name == d {
			return lookup{kind: kindApex, domain: d}, true
		}
		if strings.HasSuffix(name, "."+d) && len(d) > len(l.domain) {
			l.domain = d
			rest = name[:len(name)-len(d)]
		}
	}
	if l.domain == "" {
		return lookup{}, false
	}
	labels := dns.SplitDomainName(rest)
	// The lookup type is the last type label, followed by at most a
	// datacenter ("dc1" or "dc1.dc").
	i := len(labels) - 1
	for ; i >= 0 && i >= len(labels)-3; i-- {
		if typeLabel(labels[i]) != kindInvalid {
			break
		}
	}
	if i < 1 || i < len(labels)-3 {
		return l, true // invalid: no type label, or nothing before it
	}
	switch tail := labels[i+1:]; {
	case len(tail) == 0:
	case len(tail) == 1:
		l.dc = tail[0]
	case len(tail) == 2 && tail[1] == "dc":
		l.dc = tail[0]
	default:
		return l, true
	}
	parts := labels[:i]
	n := len(parts)
	switch k := typeLabel(labels[i]); k {
	case kindService:
		if n == 2 && strings.HasPrefix(parts[0], "_") && strings.HasPrefix(parts[1], "_") {
			// RFC 2782: _<service>._<tag>; _tcp means any tag.
			l.name, l.tag = parts[0][1:], parts[1][1:]
			if l.tag == "tcp" {
				l.tag = ""
			}
		} else {
			l.name, l.tag = parts[n-1], strings.Join(parts[:n-1], ".")
		}
		if l.name != "" {
			l.kind = k
		}
	case kindNode:
		l.kind, l.name = k, strings.Join(parts, ".")
	case kindAddr:
		if l.addr = parseAddrLabels(parts); l.addr != nil {
			l.kind = k
		}
	case kindConnect, kindVirtual:
		if n == 1 {
			l.kind, l.name = k, parts[0]
		}
	case kindQuery:
		if n == 2 && strings.HasPrefix(parts[0], "_") && strings.HasPrefix(parts[1], "_") {
			l.kind, l.name = k, parts[0][1:]
		} else {
			l.kind, l.name = k, strings.Join(parts, ".")
		}
	}
	return l, true
}

func typeLabel(s string) kind {
	switch s {
	case "service":
		return kindService
	case "node":
		return kindNode
	case "addr":
		return kindAddr
	case "connect":
		return kindConnect
	case "query":
		return kindQuery
	case "virtual":
		return kindVirtual
	}
	return kindInvalid
}

// parseAddrLabels reads the address of an addr lookup: 8 hex digits for
// IPv4, 32 for IPv6, or a dotted IPv4 address.
func parseAddrLabels(parts []string) net.IP {
	switch len(parts) {
	case 1:
		b, err := hex.DecodeString(parts[0])
		if err != nil {
			return nil
		}
		switch len(b) {
		case net.IPv4len:
			return net.IPv4(b[0], b[1], b[2], b[3]).To4()
		case net.IPv6len:
			return net.IP(b)
		}
	case 4:
		if ip := net.ParseIP(strings.Join(parts, ".")); ip != nil {
			return ip.To4()
		}
	}
	return nil
}

// encodeAddr returns the addr label of ip: its bytes in hex.
func encodeAddr(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return hex.EncodeToString(v4)
	}
	return hex.EncodeToString(ip.To16())
}

// parseReverse reads the address of a reverse name (lower-cased, fully
// qualified): four decimal labels under in-addr.arpa. or 32 nibbles under
// ip6.arpa. ok is false for names that are not reverse names at all; ip is
// nil for reverse names that are not one full address.
func parseReverse(name string) (ip net.IP, ok bool) {
	switch {
	case strings.HasSuffix(name, ".in-addr.arpa."):
		labels := dns.SplitDomainName(strings.TrimSuffix(name, ".in-addr.arpa."))
		if len(labels) != 4 {
			return nil, true
		}
		var b [4]byte
		for i, s := range labels {
			v, err := strconv.ParseUint(s, 10, 8)
			if err != nil || (len(s) > 1 && s[0] == '0') {
				return nil, true
			}
			b[3-i] = byte(v)
		}
		return net.IPv4(b[0], b[1], b[2], b[3]).To4(), true
	case strings.HasSuffix(name, ".ip6.arpa."):
		labels := dns.SplitDomainName(strings.TrimSuffix(name, ".ip6.arpa."))
		if len(labels) != 32 {
			return nil, true
		}
		var digits [32]byte
		for i, s := range labels {
			if len(s) != 1 || !isHex(s[0]) {
				return nil, true
			}
			digits[31-i] = s[0]
		}
		b, err := hex.DecodeString(string(digits[:]))
		if err != nil {
			return nil, true
		}
		return net.IP(b), true
	}
	return nil, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
}

// validLabel reports whether s can be one label of a host name in an
// answer: letters, digits and hyphens, 1 to 63 of them.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') && c != '-' {
			return false
		}
	}
	return true
}
