package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
)

// maxConcurrentRecursions bounds the queries being forwarded at once; past
// it a query is answered SERVFAIL at once, so that a recursor that stopped
// answering cannot pile up sockets and goroutines without limit.
const maxConcurrentRecursions = 256

// Handler answers DNS queries. It implements dns.Handler; Answer is the
// same decision without a connection. ServeDNS and AnswerPacket answer
// repeated service lookups from packed answers kept in a cache and checked
// against the Source at every use (see cache.go); Answer always decides
// afresh. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	src    Source
	logger hclog.Logger

	// cachedAnswers counts the queries AnswerPacket answered
	// (TakeCachedAnswers).
	cachedAnswers atomic.Uint64

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

// domainQueryMetric times every query ServeDNS answers (dns.domain_query, as
// Consul names it); go-metrics keeps it in memory, so it never blocks an
// answer. Answers straight from the packet cache are counted instead (see
// TakeCachedAnswers).
var domainQueryMetric = []string{"dns", "domain_query"}

// ServeDNS implements dns.Handler.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	defer metrics.MeasureSince(domainQueryMetric, time.Now())
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
