package dnsserver

import (
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/catalog"
)

// instanceAddress returns the address an instance is reached at and the
// tagged addresses that go with it: the service's own when it has one,
// else its node's.
func instanceAddress(in *catalog.CheckServiceNode) (addr string, nodeTagged map[string]string, svcTagged map[string]catalog.ServiceAddress) {
	if in.Service.Address != "" {
		return in.Service.Address, nil, in.Service.TaggedAddresses
	}
	return in.Node.Address, in.Node.TaggedAddresses, nil
}

// serviceAddressRecords returns the A/AAAA answers of instances, without
// repeating an address, at most a_record_limit of them. Instances known
// only by a host name are answered with one CNAME when no instance has an
// address of the asked family.
func (h *Handler) serviceAddressRecords(q dns.Question, insts []*catalog.CheckServiceNode, ttl uint32) []dns.RR {
	out := make([]dns.RR, 0, len(insts))
	var cname dns.RR
	seen := make(map[netip.Addr]bool, len(insts))
	for _, in := range insts {
		addr, nt, st := instanceAddress(in)
		// The instance's records go after the answers so far, and are
		// kept there unless they are a CNAME or repeat an address.
		start := len(out)
		out = appendAddressRecords(out, q.Name, addr, nt, st, q.Qtype, ttl)
		kept := start
		for _, rr := range out[start:] {
			if c, ok := rr.(*dns.CNAME); ok {
				if cname == nil {
					cname = c
				}
				continue
			}
			key := rrAddr(rr)
			if seen[key] {
				continue
			}
			seen[key] = true
			out[kept] = rr
			kept++
		}
		clear(out[kept:])
		out = out[:kept]
		if h.cfg.ARecordLimit > 0 && len(out) >= h.cfg.ARecordLimit {
			out = out[:h.cfg.ARecordLimit]
			break
		}
	}
	if len(out) == 0 && cname != nil {
		out = []dns.RR{cname}
	}
	return out
}

// rrAddr returns the address of an A or AAAA record (the zero Addr for
// other records, which are never compared).
func rrAddr(rr dns.RR) netip.Addr {
	var ip net.IP
	switch r := rr.(type) {
	case *dns.A:
		ip = r.A
	case *dns.AAAA:
		ip = r.AAAA
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

// serviceSRVRecords returns the SRV answers of instances and the records of
// their targets for the additional section. An instance with its own IP
// address is targeted at <hex>.addr.<dc>.<domain>; one with its own host
// name at that name; otherwise at its node, <node>.node.<dc>.<domain>.
func (h *Handler) serviceSRVRecords(q dns.Question, insts []*catalog.CheckServiceNode, domain, dc string, ttl uint32) (answer, extra []dns.RR) {
	seenSRV := make(map[srvKey]bool, len(insts))
	seenTarget := make(map[string]bool, len(insts))
	for _, in := range insts {
		weight := in.Service.Weights.Passing
		if catalog.AggregatedStatus(in.Checks) == catalog.HealthWarning {
			weight = in.Service.Weights.Warning
		}
		var target string
		var targetRRs []dns.RR
		svcAddr := in.Service.Address
		switch ip := net.ParseIP(svcAddr); {
		case svcAddr != "" && ip != nil:
			target = encodeAddr(ip) + ".addr." + dc + "." + domain
			targetRRs = addressRecords(target, svcAddr, nil, in.Service.TaggedAddresses, dns.TypeANY, ttl)
		case svcAddr != "":
			target = dns.Fqdn(svcAddr)
		case validLabel(in.Node.Node):
			target = in.Node.Node + ".node." + dc + "." + domain
			targetRRs = addressRecords(target, in.Node.Address, in.Node.TaggedAddresses, nil, dns.TypeANY, ttl)
			if h.cfg.EnableAdditionalNodeMetaTXT {
				targetRRs = append(targetRRs, metaTXT(target, in.Node.Meta, ttl)...)
			}
		default:
			ip := net.ParseIP(in.Node.Address)
			if ip == nil {
				continue // neither a DNS name nor an address to point at
			}
			target = encodeAddr(ip) + ".addr." + dc + "." + domain
			targetRRs = addressRecords(target, in.Node.Address, in.Node.TaggedAddresses, nil, dns.TypeANY, ttl)
		}
		port := uint16(0)
		if in.Service.Port > 0 && in.Service.Port <= 65535 {
			port = uint16(in.Service.Port)
		}
		key := srvKey{target, port}
		if seenSRV[key] {
			continue
		}
		seenSRV[key] = true
		answer = append(answer, &dns.SRV{
			Hdr:      dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
			Priority: 1,
			Weight:   uint16(min(max(weight, 0), 65535)),
			Port:     port,
			Target:   target,
		})
		if !seenTarget[target] {
			seenTarget[target] = true
			extra = append(extra, targetRRs...)
		}
	}
	return answer, extra
}

// srvKey is what makes two SRV answers the same.
type srvKey struct {
	target string
	port   uint16
}

// addressRecords returns the records that answer qtype (A, AAAA or ANY
// for both) for name reached at addr: an A for an IPv4 address, an AAAA
// for an IPv6 one, the other family from the lan_ipv4/lan_ipv6 tagged
// addresses, and a CNAME when addr is a host name.
func addressRecords(name, addr string, nodeTagged map[string]string, svcTagged map[string]catalog.ServiceAddress, qtype uint16, ttl uint32) []dns.RR {
	return appendAddressRecords(nil, name, addr, nodeTagged, svcTagged, qtype, ttl)
}

// appendAddressRecords is addressRecords appending to out.
func appendAddressRecords(out []dns.RR, name, addr string, nodeTagged map[string]string, svcTagged map[string]catalog.ServiceAddress, qtype uint16, ttl uint32) []dns.RR {
	var v4, v6 net.IP
	var host string
	if ip := net.ParseIP(addr); ip != nil {
		if ip4 := ip.To4(); ip4 != nil {
			v4 = ip4
		} else {
			v6 = ip
		}
	} else if addr != "" {
		host = addr
	}
	tagged := func(key string) net.IP {
		if a, ok := nodeTagged[key]; ok {
			return net.ParseIP(a)
		}
		if a, ok := svcTagged[key]; ok {
			return net.ParseIP(a.Address)
		}
		return nil
	}
	if v4 == nil {
		if ip := tagged("lan_ipv4"); ip != nil && ip.To4() != nil {
			v4 = ip.To4()
		}
	}
	if v6 == nil {
		if ip := tagged("lan_ipv6"); ip != nil && ip.To4() == nil {
			v6 = ip
		}
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	start := len(out)
	if v4 != nil && (qtype == dns.TypeA || qtype == dns.TypeANY) {
		out = append(out, &dns.A{Hdr: hdr(dns.TypeA), A: v4})
	}
	if v6 != nil && (qtype == dns.TypeAAAA || qtype == dns.TypeANY) {
		out = append(out, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: v6})
	}
	if len(out) == start && v4 == nil && v6 == nil && host != "" {
		if _, ok := dns.IsDomainName(host); ok {
			out = append(out, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(host)})
		}
	}
	return out
}

// metaTXT returns one TXT record per node meta entry, in key order:
// "key=value" as RFC 1464 writes attributes, or the bare value for keys
// starting with "rfc1035-".
func metaTXT(name string, meta map[string]string, ttl uint32) []dns.RR {
	if len(meta) == 0 {
		return nil
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]dns.RR, 0, len(keys))
	for _, k := range keys {
		text := meta[k]
		if !strings.HasPrefix(k, "rfc1035-") {
			text = rfc1464(k, meta[k])
		}
		out = append(out, &dns.TXT{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
			Txt: txtStrings(text),
		})
	}
	return out
}

// rfc1464 encodes an attribute as RFC 1464 does: in the name, "`" and "="
// and leading and trailing spaces are quoted with a backquote.
func rfc1464(key, value string) string {
	var b strings.Builder
	b.Grow(len(key) + len(value) + 1)
	trimmed := strings.TrimLeft(key, " ")
	lead := len(key) - len(trimmed)
	core := strings.TrimRight(trimmed, " ")
	trail := len(trimmed) - len(core)
	for i := 0; i < lead; i++ {
		b.WriteString("` ")
	}
	for _, r := range core {
		if r == '`' || r == '=' {
			b.WriteByte('`')
		}
		b.WriteRune(r)
	}
	for i := 0; i < trail; i++ {
		b.WriteString("` ")
	}
	b.WriteByte('=')
	b.WriteString(strings.ReplaceAll(value, "`", "``"))
	return b.String()
}

// txtStrings splits text into character-strings of at most 255 bytes, in
// the escaped form miekg/dns packs (a backslash is written "\\").
func txtStrings(text string) []string {
	var out []string
	for len(text) > 255 {
		out = append(out, escapeTXT(text[:255]))
		text = text[255:]
	}
	return append(out, escapeTXT(text))
}

func escapeTXT(s string) string {
	if !strings.ContainsAny(s, `\"`) {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}
