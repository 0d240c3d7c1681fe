package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// maxConcurrentRecursions bounds the queries being forwarded at once; past
// it a query is answered SERVFAIL at once, so that a recursor that stopped
// answering cannot pile up sockets and goroutines without limit.
const maxConcurrentRecursions = 256

// consulService is the service the servers are registered as; its nodes
// are the name servers of the domain.
const consulService = "consul"

// Handler answers DNS queries. It implements dns.Handler; Answer is the
// same decision without a connection. ServeDNS and AnswerPacket answer
// repeated service lookups from packed answers kept in a cache and checked
// against the Source at every use (see cache.go); Answer always decides
// afresh. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	src    Source
	logger hclog.Logger

	// ttlPrefixes are the service_ttl keys ending in "*" (other than "*"),
	// longest first.
	ttlPrefixes []string
	// recursing holds a token per forwarded query in flight.
	recursing chan struct{}
	// cache holds packed answers of service lookups; nil when disabled.
	cache *responseCache
	// noWait is a context that is already done: checking a cached answer
	// reads the Source only as far as it can answer without waiting.
	noWait context.Context
	// bufs holds buffers for patched copies of cached answers.
	bufs sync.Pool
}

// New returns a handler answering from src.
func New(cfg Config, src Source) (*Handler, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	if src == nil {
		return nil, errors.New("dns: nil source")
	}
	h := &Handler{
		cfg:       cfg,
		src:       src,
		logger:    cfg.Logger,
		recursing: make(chan struct{}, maxConcurrentRecursions),
	}
	if cfg.CacheEntries > 0 {
		h.cache = newResponseCache(cfg.CacheEntries, cfg.CacheBytes)
	}
	noWait, cancel := context.WithCancel(context.Background())
	cancel()
	h.noWait = noWait
	for k := range cfg.ServiceTTL {
		if k != "*" && strings.HasSuffix(k, "*") {
			h.ttlPrefixes = append(h.ttlPrefixes, k)
		}
	}
	sort.Slice(h.ttlPrefixes, func(i, j int) bool { return len(h.ttlPrefixes[i]) > len(h.ttlPrefixes[j]) })
	return h, nil
}

// ServeDNS implements dns.Handler.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	if h.cache != nil {
		var kb [cacheKeyMax]byte
		if key, ok := appendCacheKey(kb[:0], req, network); ok {
			h.serveCacheable(w, req, key, network)
			return
		}
	}
	resp := h.Answer(req, network)
	if resp == nil {
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		h.logger.Debug("write response", "client", w.RemoteAddr(), "error", err)
	}
}

// serveCacheable answers a query whose answer may be cached under key:
// from the cache when it holds an answer built from what the Source holds
// now, else by deciding afresh and caching the result.
func (h *Handler) serveCacheable(w dns.ResponseWriter, req *dns.Msg, key []byte, network string) {
	if e := h.cache.get(key); e != nil && h.current(e) {
		slot := e.worn()
		if slot < 0 {
			var v *variant
			slot, v = e.pick()
			if v != nil {
				h.writeCached(w, e, v, queryHeader{id: req.Id, rd: req.RecursionDesired, cd: req.CheckingDisabled})
				return
			}
		}
		// A random ordering that has served its share (this query's
		// pick, here or in AnswerPacket): draw another and answer with
		// it.
		b, err := h.variant(req, network, &e.basis, ordered(e.basis.sel.insts, slot)).Pack()
		if err != nil {
			h.logger.Debug("write response", "client", w.RemoteAddr(), "error", err)
			return
		}
		h.cache.redraw(key, e, slot, b)
		h.write(w, b)
		return
	}
	var choice variantChoice
	resp, basis := h.answer(req, network, &choice)
	if resp == nil {
		return
	}
	b, err := resp.Pack()
	if err != nil {
		h.logger.Debug("write response", "client", w.RemoteAddr(), "error", err)
		return
	}
	if basis != nil {
		h.cacheAnswer(key, req, network, basis, resp, b, choice.slot)
	}
	h.write(w, b)
}

// cacheAnswer caches resp, packed into b, built from basis in ordering
// slot, with every other ordering of it.
func (h *Handler) cacheAnswer(key []byte, req *dns.Msg, network string, basis *answerBasis, resp *dns.Msg, b []byte, slot int) {
	serialAt, ok := negativeSerialAt(resp, b)
	if !ok || len(b) > maxCachedResponse {
		return
	}
	n := orderings(len(basis.sel.insts))
	if len(resp.Answer) == 0 && !resp.Truncated {
		// No ordering has answers (none was cut, so none was
		// dropped): the answer is the same in every ordering.
		n, slot = 1, 0
	}
	variants := make([][]byte, n)
	variants[slot] = b
	for k := range variants {
		if k == slot {
			continue
		}
		vm := h.variant(req, network, basis, ordered(basis.sel.insts, k))
		vb, err := vm.Pack()
		if err != nil {
			return
		}
		if at, ok := negativeSerialAt(vm, vb); !ok || at != serialAt {
			return
		}
		variants[k] = vb
	}
	h.cache.put(key, basis, serialAt, variants)
}

// variant builds the answer to req from basis with the instances in the
// order of insts: what answer builds once it has read the selection.
func (h *Handler) variant(req *dns.Msg, network string, basis *answerBasis, insts []*catalog.CheckServiceNode) *dns.Msg {
	resp := h.reply(req)
	resp.Authoritative = true
	h.serviceAnswer(resp, req.Question[0], basis.l, basis.dc, basis.sel, insts)
	return h.finish(req, resp, network)
}

func (h *Handler) write(w dns.ResponseWriter, b []byte) {
	if _, err := w.Write(b); err != nil {
		h.logger.Debug("write response", "client", w.RemoteAddr(), "error", err)
	}
}

// writeCached writes a copy of variant v of e with the query's header.
func (h *Handler) writeCached(w dns.ResponseWriter, e *cacheEntry, v *variant, qh queryHeader) {
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	b := append((*bp)[:0], v.b...)
	e.patch(b, qh, h.serial(e))
	h.write(w, b)
	*bp = b
	h.bufs.Put(bp)
}

// AnswerPacket answers query, a packet as received over network, from
// the cache alone: when it is a plain query (see packetKey) whose cached
// answer is current, it appends the answer to dst[:0] and returns it.
// Otherwise ok is false and the query must go through ServeDNS. It never
// blocks: the Source is read only as far as it answers without waiting.
// A Server calls it on its reading goroutine before handing a query to a
// goroutine of its own.
func (h *Handler) AnswerPacket(dst, query []byte, network string) (answer []byte, ok bool) {
	if h.cache == nil {
		return dst, false
	}
	var kb [cacheKeyMax]byte
	key, qh, ok := packetKey(kb[:0], query, network)
	if !ok {
		return dst, false
	}
	e := h.cache.get(key)
	if e == nil || !h.current(e) {
		return dst, false
	}
	_, v := e.pick()
	if v == nil {
		return dst, false
	}
	dst = append(dst[:0], v.b...)
	e.patch(dst, qh, h.serial(e))
	return dst, true
}

// serial returns the SOA serial of a negative answer of e: the time now,
// as an answer decided now would have.
func (h *Handler) serial(e *cacheEntry) uint32 {
	if e.serialAt < 0 {
		return 0
	}
	return uint32(h.cfg.Now().Unix())
}

// current reports whether e's answer is the one deciding now would give:
// the Source, read without waiting, yields the same selection for the
// reader. When the Source cannot answer without waiting, the answer is
// decided afresh.
func (h *Handler) current(e *cacheEntry) bool {
	b := &e.basis
	if b.l.kind != kindService {
		return false
	}
	authz, err := h.authorizer()
	if err != nil {
		return false
	}
	if authz.ServiceRead(b.l.name) != acl.Allow {
		return b.sel.denied
	}
	if b.sel.denied {
		return false
	}
	all, err := h.src.ServiceHealth(h.noWait, b.dc, b.l.name)
	if err != nil {
		return false
	}
	j := 0
	for _, in := range all {
		if !h.admit(b.l, authz, in) {
			continue
		}
		if j == len(b.sel.insts) || b.sel.insts[j] != in {
			return false
		}
		j++
	}
	return j == len(b.sel.insts)
}

// Answer returns the response to req as received over network ("udp" or
// "tcp"), sized for that transport, or nil when req must get no answer (it
// is itself a response). It may block on the Source (bounded by the query
// timeout) and on recursors (bounded by the recursor timeout each).
func (h *Handler) Answer(req *dns.Msg, network string) *dns.Msg {
	resp, _ := h.answer(req, network, nil)
	return resp
}

// answer is Answer, recording in choice (when not nil) the ordering of
// the instances of a service answer. For a service lookup answered from
// the Source, with a choice, it also returns what the answer was built
// from.
func (h *Handler) answer(req *dns.Msg, network string, choice *variantChoice) (*dns.Msg, *answerBasis) {
	if req == nil || req.Response {
		return nil, nil
	}
	resp := h.reply(req)
	if req.Opcode != dns.OpcodeQuery {
		resp.Rcode = dns.RcodeNotImplemented
		return resp, nil
	}
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp, nil
	}
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		// RFC 6891 6.1.3: answer BADVERS with the version we speak.
		setEDNS(req, resp)
		resp.Rcode = dns.RcodeBadVers
		return resp, nil
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if !strings.HasSuffix(name, ".") {
		resp.Rcode = dns.RcodeFormatError
		return resp, nil
	}
	if ip, ok := parseReverse(name); ok {
		if forward := h.answerReverse(resp, q, ip); forward {
			return h.recurse(req, network), nil
		}
		return h.finish(req, resp, network), nil
	}
	l, ours := parseName(name, h.cfg.Domain, h.cfg.AltDomain)
	if !ours {
		if len(h.cfg.Recursors) == 0 {
			resp.Rcode = dns.RcodeRefused
			return h.finish(req, resp, network), nil
		}
		return h.recurse(req, network), nil
	}
	resp.Authoritative = true
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		resp.Rcode = dns.RcodeRefused
		resp.Authoritative = false
		return h.finish(req, resp, network), nil
	}
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		resp.Rcode = dns.RcodeNotImplemented
		return h.finish(req, resp, network), nil
	}
	ctx, cancel := context.WithTimeout(h.cfg.Context, h.cfg.QueryTimeout)
	defer cancel()
	basis, err := h.answerLookup(ctx, resp, q, l, choice)
	if err != nil {
		basis = nil
		resp.Answer, resp.Ns, resp.Extra = nil, nil, nil
		if errors.Is(err, ErrUnknownDatacenter) {
			h.nxdomain(resp, l.domain)
		} else {
			h.logger.Debug("lookup failed", "name", q.Name, "type", dns.TypeToString[q.Qtype], "error", err)
			resp.Rcode = dns.RcodeServerFailure
		}
	}
	return h.finish(req, resp, network), basis
}

// reply returns the empty reply to req.
func (h *Handler) reply(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Compress = !h.cfg.DisableCompression
	resp.RecursionAvailable = len(h.cfg.Recursors) > 0
	return resp
}

// finish adds EDNS0 to the response when the query had it and cuts the
// response to what the transport can carry.
func (h *Handler) finish(req, resp *dns.Msg, network string) *dns.Msg {
	setEDNS(req, resp)
	if network == "tcp" {
		if cut(resp, dns.MaxMsgSize) {
			resp.Truncated = true
		}
		return resp
	}
	max := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > max {
		max = int(opt.UDPSize())
	}
	trimmed := false
	if max == dns.MinMsgSize && len(resp.Answer) > h.cfg.UDPAnswerLimit {
		resp.Answer = resp.Answer[:h.cfg.UDPAnswerLimit]
		syncExtra(resp)
		trimmed = true
	}
	if cut(resp, max) {
		trimmed = true
	}
	if trimmed && (h.cfg.EnableTruncate || len(resp.Answer) == 0) {
		resp.Truncated = true
	}
	return resp
}

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
	case kindNode:
		return nil, h.answerNode(ctx, resp, q, l, dc)
	case kindAddr:
		h.answerAddr(resp, q, l)
		return nil, nil
	}
	h.nxdomain(resp, l.domain)
	return nil, nil
}

// authorizer resolves the Authorizer answers are filtered with.
func (h *Handler) authorizer() (acl.Authorizer, error) {
	if h.cfg.Authorize == nil {
		return acl.AllowAll(), nil
	}
	a, err := h.cfg.Authorize()
	if err != nil {
		return nil, fmt.Errorf("resolve DNS token: %w", err)
	}
	return a, nil
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
		Serial:  uint32(h.cfg.Now().Unix()),
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

// setEDNS answers a query that carried EDNS0 with our OPT record: the
// client's buffer size (at least 512), its DO bit, and any client subnet
// option with scope 0, since answers do not depend on the client's network.
func setEDNS(req, resp *dns.Msg) {
	opt := req.IsEdns0()
	if opt == nil || resp.IsEdns0() != nil {
		return
	}
	size := max(opt.UDPSize(), dns.MinMsgSize)
	out := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	out.SetUDPSize(size)
	out.SetDo(opt.Do())
	for _, o := range opt.Option {
		if s, ok := o.(*dns.EDNS0_SUBNET); ok {
			out.Option = append(out.Option, &dns.EDNS0_SUBNET{
				Code: dns.EDNS0SUBNET, Family: s.Family, SourceNetmask: s.SourceNetmask,
				SourceScope: 0, Address: s.Address,
			})
		}
	}
	resp.Extra = append(resp.Extra, out)
}
