package dnsserver

import (
	"context"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// consulService is the service the servers are registered as; its nodes
// are the name servers of the domain.
const consulService = "consul"

// answerLookup fills resp for a name under the domain. For a service
// lookup with a choice to record it returns what the answer was built
// from; connect and prepared query answers come from hooks whose results
// are not tracked, and return none.
func (h *Handler) answerLookup(ctx context.Context, resp *dns.Msg, q dns.Question, l lookup, choice *variantChoice) (*answerBasis, error) {
	dc := l.dc
	if dc == "" {
		dc = h.cfg.Datacenter
	}
	switch l.kind {
	case kindApex:
		return nil, h.answerApex(ctx, resp, q, l.domain)
	case kindService:
		sel, err := h.answerService(ctx, resp, q, l, dc, func(ctx context.Context) ([]*catalog.CheckServiceNode, error) {
			return h.src.ServiceHealth(ctx, dc, l.name)
		}, choice)
		if err != nil || choice == nil {
			return nil, err
		}
		return &answerBasis{l: l, dc: dc, sel: sel}, nil
	case kindConnect:
		if h.cfg.ConnectLookup == nil {
			break
		}
		_, err := h.answerService(ctx, resp, q, l, dc, func(ctx context.Context) ([]*catalog.CheckServiceNode, error) {
			return h.cfg.ConnectLookup(ctx, dc, l.name)
		}, nil)
		return nil, err
	case kindQuery:
		if h.cfg.PreparedQuery == nil {
			break
		}
		_, err := h.answerService(ctx, resp, q, l, dc, func(ctx context.Context) ([]*catalog.CheckServiceNode, error) {
			return h.cfg.PreparedQuery(ctx, dc, l.name)
		}, nil)
		return nil, err
	case kindVirtual:
		if h.cfg.VirtualIP == nil {
			break
		}
		return nil, h.answerVirtual(ctx, resp, q, l, dc)
	case kindNode:
		return nil, h.answerNode(ctx, resp, q, l, dc)
	case kindAddr:
		h.answerAddr(resp, q, l)
		return nil, nil
	}
	h.nxdomain(resp, l.domain)
	return nil, nil
}

// answerVirtual answers <service>.virtual: an A record of the service's
// virtual IP.
func (h *Handler) answerVirtual(ctx context.Context, resp *dns.Msg, q dns.Question, l lookup, dc string) error {
	ip, err := h.cfg.VirtualIP(ctx, dc, l.name)
	if err != nil {
		return err
	}
	v4 := ip.To4()
	switch {
	case v4 == nil:
		h.nxdomain(resp, l.domain)
	case q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY:
		resp.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET,
			Ttl: h.serviceTTL(l.name)}, A: v4}}
	default:
		h.nodata(resp, l.domain)
	}
	return nil
}

// nxdomain makes resp a name error with the SOA of domain in authority.
func (h *Handler) nxdomain(resp *dns.Msg, domain string) {
	resp.Rcode = dns.RcodeNameError
	resp.Answer, resp.Extra = nil, nil
	resp.Ns = []dns.RR{h.soa(domain)}
}

// nodata makes resp an empty NOERROR answer with the SOA of domain in
// authority: the name exists, with no records of the asked type.
func (h *Handler) nodata(resp *dns.Msg, domain string) {
	resp.Rcode = dns.RcodeSuccess
	resp.Answer, resp.Extra = nil, nil
	resp.Ns = []dns.RR{h.soa(domain)}
}

func (h *Handler) soa(domain string) *dns.SOA {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET,
			// The SOA's own TTL bounds negative caching with MinTTL.
			Ttl: h.cfg.SOA.MinTTL},
		Ns:      "ns." + domain,
		Mbox:    "hostmaster." + domain,
		Serial:  uint32(h.cfg.Clock.Now().Unix()),
		Refresh: h.cfg.SOA.Refresh,
		Retry:   h.cfg.SOA.Retry,
		Expire:  h.cfg.SOA.Expire,
		Minttl:  h.cfg.SOA.MinTTL,
	}
}

func ttlSeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(d / time.Second)
}

// serviceTTL returns the TTL of a service's records: its own service_ttl
// entry, else the longest matching prefix entry, else "*", else 0.
func (h *Handler) serviceTTL(service string) uint32 {
	if len(h.cfg.ServiceTTL) == 0 {
		return 0
	}
	if d, ok := h.cfg.ServiceTTL[service]; ok {
		return ttlSeconds(d)
	}
	for _, p := range h.ttlPrefixes {
		if strings.HasPrefix(service, p[:len(p)-1]) {
			return ttlSeconds(h.cfg.ServiceTTL[p])
		}
	}
	return ttlSeconds(h.cfg.ServiceTTL["*"])
}

// answerApex answers for the domain itself: its SOA and NS records.
func (h *Handler) answerApex(ctx context.Context, resp *dns.Msg, q dns.Question, domain string) error {
	switch q.Qtype {
	case dns.TypeSOA:
		ns, glue, err := h.nameservers(ctx, domain)
		if err != nil {
			return err
		}
		resp.Answer = []dns.RR{h.soa(domain)}
		resp.Ns, resp.Extra = ns, glue
	case dns.TypeNS:
		ns, glue, err := h.nameservers(ctx, domain)
		if err != nil {
			return err
		}
		resp.Answer, resp.Extra = ns, glue
	case dns.TypeANY:
		ns, glue, err := h.nameservers(ctx, domain)
		if err != nil {
			return err
		}
		resp.Answer = append([]dns.RR{h.soa(domain)}, ns...)
		resp.Extra = glue
	default:
		h.nodata(resp, domain)
	}
	return nil
}

// nameservers returns the NS records of domain and their addresses: the
// healthy servers (service "consul"), or this agent's node when none is
// registered.
func (h *Handler) nameservers(ctx context.Context, domain string) (ns, glue []dns.RR, err error) {
	dc := h.cfg.Datacenter
	insts, err := h.src.ServiceHealth(ctx, dc, consulService)
	if err != nil {
		return nil, nil, err
	}
	var nodes []*catalog.Node
	seen := map[string]bool{}
	for _, in := range insts {
		if in.Node != nil && catalog.AggregatedStatus(in.Checks) != catalog.HealthCritical && !seen[in.Node.Node] {
			seen[in.Node.Node] = true
			nodes = append(nodes, in.Node)
		}
	}
	if len(nodes) == 0 && h.cfg.NodeName != "" {
		n, err := h.src.Node(ctx, dc, h.cfg.NodeName)
		if err != nil {
			return nil, nil, err
		}
		if n != nil {
			nodes = append(nodes, n)
		}
	}
	ttl := ttlSeconds(h.cfg.NodeTTL)
	for _, n := range nodes {
		if !validLabel(n.Node) {
			continue
		}
		target := n.Node + ".node." + dc + "." + domain
		ns = append(ns, &dns.NS{Hdr: dns.RR_Header{Name: domain, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: ttl}, Ns: target})
		glue = append(glue, addressRecords(target, n.Address, n.TaggedAddresses, nil, dns.TypeANY, ttl)...)
	}
	return ns, glue, nil
}

// instanceFetch reads the instances a service-like lookup answers with.
type instanceFetch func(ctx context.Context) ([]*catalog.CheckServiceNode, error)

// answerService answers a service (or connect, or prepared query) lookup
// with the healthy instances the reader may see, shuffled, and returns the
// selection it answered from; choice, when not nil, records the ordering.
func (h *Handler) answerService(ctx context.Context, resp *dns.Msg, q dns.Question, l lookup, dc string, fetch instanceFetch, choice *variantChoice) (selection, error) {
	authz, err := h.authorizer()
	if err != nil {
		return selection{}, err
	}
	var sel selection
	if l.kind != kindQuery && authz.ServiceRead(l.name) != acl.Allow {
		sel.denied = true
	} else {
		all, err := fetch(ctx)
		if err != nil {
			return selection{}, err
		}
		sel.insts = make([]*catalog.CheckServiceNode, 0, len(all))
		for _, in := range all {
			if h.admit(l, authz, in) {
				sel.insts = append(sel.insts, in)
			}
		}
	}
	h.serviceAnswer(resp, q, l, dc, sel, choice.order(sel.insts))
	return sel, nil
}

// serviceAnswer fills resp with the answer of a service lookup over sel,
// with its instances in the order of insts.
func (h *Handler) serviceAnswer(resp *dns.Msg, q dns.Question, l lookup, dc string, sel selection, insts []*catalog.CheckServiceNode) {
	if sel.denied || len(insts) == 0 {
		h.nxdomain(resp, l.domain)
		return
	}
	ttl := h.serviceTTL(l.name)
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		resp.Answer = h.serviceAddressRecords(q, insts, ttl)
	case dns.TypeSRV:
		resp.Answer, resp.Extra = h.serviceSRVRecords(q, insts, l.domain, dc, ttl)
	}
	if len(resp.Answer) == 0 {
		h.nodata(resp, l.domain)
	}
}

// admit reports whether an instance answers lookup l for a reader with
// authz: it has a node and a service, the tag asked for, no critical
// check (nor a warning one with only_passing), and its node is readable.
func (h *Handler) admit(l lookup, authz acl.Authorizer, in *catalog.CheckServiceNode) bool {
	if in.Node == nil || in.Service == nil {
		return false
	}
	if l.tag != "" && !hasTag(in.Service.Tags, l.tag) {
		return false
	}
	switch catalog.AggregatedStatus(in.Checks) {
	case catalog.HealthCritical:
		return false
	case catalog.HealthWarning:
		if h.cfg.OnlyPassing {
			return false
		}
	}
	if l.kind == kindQuery && authz.ServiceRead(in.Service.Service) != acl.Allow {
		// A prepared query names no service in the question: each
		// instance's service is checked instead.
		return false
	}
	return authz.NodeRead(in.Node.Node) == acl.Allow
}

func hasTag(tags []string, want string) bool {
	for _, t := range tags {
		if strings.EqualFold(t, want) {
			return true
		}
	}
	return false
}

// answerNode answers <node>.node: its addresses and its meta as TXT.
func (h *Handler) answerNode(ctx context.Context, resp *dns.Msg, q dns.Question, l lookup, dc string) error {
	authz, err := h.authorizer()
	if err != nil {
		return err
	}
	n, err := h.src.Node(ctx, dc, l.name)
	if err != nil {
		return err
	}
	if n == nil || authz.NodeRead(n.Node) != acl.Allow {
		h.nxdomain(resp, l.domain)
		return nil
	}
	ttl := ttlSeconds(h.cfg.NodeTTL)
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		resp.Answer = addressRecords(q.Name, n.Address, n.TaggedAddresses, nil, q.Qtype, ttl)
		if len(resp.Answer) > 0 && h.cfg.EnableAdditionalNodeMetaTXT {
			resp.Extra = metaTXT(q.Name, n.Meta, ttl)
		}
	case dns.TypeANY:
		resp.Answer = append(addressRecords(q.Name, n.Address, n.TaggedAddresses, nil, dns.TypeANY, ttl),
			metaTXT(q.Name, n.Meta, ttl)...)
	case dns.TypeTXT:
		resp.Answer = metaTXT(q.Name, n.Meta, ttl)
	}
	if len(resp.Answer) == 0 {
		h.nodata(resp, l.domain)
	}
	return nil
}

// answerAddr answers <hex>.addr: the address encoded in the name.
func (h *Handler) answerAddr(resp *dns.Msg, q dns.Question, l lookup) {
	ttl := ttlSeconds(h.cfg.NodeTTL)
	resp.Answer = addressRecords(q.Name, l.addr.String(), nil, nil, q.Qtype, ttl)
	if len(resp.Answer) == 0 {
		h.nodata(resp, l.domain)
	}
}

// answerReverse fills resp for a reverse name with the nodes at that
// address. It reports whether the name is not ours to answer and should
// be forwarded to the recursors instead.
func (h *Handler) answerReverse(resp *dns.Msg, q dns.Question, ip net.IP) (forward bool) {
	var names []string
	if ip != nil {
		ctx, cancel := context.WithTimeout(h.cfg.Context, h.cfg.QueryTimeout)
		defer cancel()
		var err error
		names, err = h.reverseNames(ctx, ip)
		if err != nil {
			h.logger.Debug("reverse lookup failed", "name", q.Name, "error", err)
			resp.Rcode = dns.RcodeServerFailure
			return false
		}
	}
	if len(names) == 0 {
		if len(h.cfg.Recursors) > 0 {
			return true
		}
		resp.Rcode = dns.RcodeNameError
		return false
	}
	resp.Authoritative = true
	if q.Qtype != dns.TypePTR && q.Qtype != dns.TypeANY {
		return false // NODATA; the reverse zone is not ours, so no SOA
	}
	ttl := ttlSeconds(h.cfg.NodeTTL)
	for _, n := range names {
		resp.Answer = append(resp.Answer, &dns.PTR{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
			Ptr: n,
		})
	}
	return false
}

// reverseNames returns <node>.node.<dc>.<domain> for every node of the
// local datacenter whose address, or one of its tagged addresses, is ip.
func (h *Handler) reverseNames(ctx context.Context, ip net.IP) ([]string, error) {
	authz, err := h.authorizer()
	if err != nil {
		return nil, err
	}
	nodes, err := h.src.Nodes(ctx, h.cfg.Datacenter)
	if err != nil {
		return nil, err
	}
	match := func(a string) bool {
		other := net.ParseIP(a)
		return other != nil && other.Equal(ip)
	}
	var out []string
	for _, n := range nodes {
		if !validLabel(n.Node) || authz.NodeRead(n.Node) != acl.Allow {
			continue
		}
		hit := match(n.Address)
		for _, a := range n.TaggedAddresses {
			hit = hit || match(a)
		}
		if hit {
			out = append(out, n.Node+".node."+h.cfg.Datacenter+"."+h.cfg.Domain)
		}
	}
	sort.Strings(out)
	return out, nil
}
