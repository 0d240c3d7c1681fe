package dnsserver

import (
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

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
	h.cachedAnswers.Add(1)
	return dst, true
}

// serial returns the SOA serial of a negative answer of e: the time now,
// as an answer decided now would have.
func (h *Handler) serial(e *cacheEntry) uint32 {
	if e.serialAt < 0 {
		return 0
	}
	return uint32(h.cfg.Clock.Now().Unix())
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

// TakeCachedAnswers returns how many queries AnswerPacket answered since the
// last call, and starts counting again. Those answers are not timed as
// dns.domain_query: go-metrics allocates and locks per sample, which would
// halve the throughput of this allocation-free path; the agent adds the
// count to the dns.cached_answers counter now and then instead.
func (h *Handler) TakeCachedAnswers() uint64 { return h.cachedAnswers.Swap(0) }
