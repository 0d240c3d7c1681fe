package dnsserver

import (
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/catalog"
)

// The response cache keeps the packed answers of service lookups so that a
// repeated query costs a map lookup and a copy instead of building and
// packing a message. It is part of the decision, not a layer in front of
// it: an entry remembers the selection of instances it was built from and
// is used only while the Source still yields that same selection to the
// same reader, so an answer is never staler than the Source.
//
// Answers are shuffled, so an entry holds variants, all built when the
// entry is: for up to exactOrderingsMax instances one per ordering of the
// instances, one of which is picked uniformly per query, exactly as
// shuffling would; for more instances randomOrderings random orderings,
// each redrawn after it has answered randomOrderingUses queries.

const (
	// cacheShards splits the cache so that queries on different names
	// rarely share a lock.
	cacheShards = 16
	// exactOrderingsMax is the most instances whose every ordering is
	// kept (3! = 6 variants).
	exactOrderingsMax = 3
	// randomOrderings is the number of orderings kept for more instances.
	randomOrderings = 8
	// randomOrderingUses is how many answers a random ordering serves
	// before it is redrawn.
	randomOrderingUses = 32
	// maxCachedResponse is the largest packed answer kept.
	maxCachedResponse = 16 << 10
	// entryOverhead approximates the memory of an entry besides its key
	// and packed variants.
	entryOverhead = 256
	// keyHeaderLen is the length of the fixed part of a key.
	keyHeaderLen = 8
	// cacheKeyMax is the longest cache key: the fixed part and a name of
	// at most 255 octets in presentation form, where an octet may take
	// four characters (\DDD).
	cacheKeyMax = keyHeaderLen + 4*255
)

// orderings returns how many variants an answer over n instances has.
func orderings(n int) int {
	switch {
	case n <= 1:
		return 1
	case n == 2:
		return 2
	case n == 3:
		return 6
	}
	return randomOrderings
}

// ordered returns insts in the k-th of orderings(len(insts)) orders: the
// k-th permutation for up to exactOrderingsMax instances, a random one
// for more. insts is not modified.
func ordered(insts []*catalog.CheckServiceNode, k int) []*catalog.CheckServiceNode {
	n := len(insts)
	out := make([]*catalog.CheckServiceNode, n)
	switch {
	case n <= 1:
		copy(out, insts)
	case n <= exactOrderingsMax:
		// The first two permutations of three are those of two.
		p := [6][3]uint8{{0, 1, 2}, {1, 0, 2}, {0, 2, 1}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}[k]
		for i := range out {
			out[i] = insts[p[i]]
		}
	default:
		copy(out, insts)
		rand.Shuffle(n, func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	return out
}

// variantChoice records which ordering a service answer was built in.
type variantChoice struct {
	// slot is the ordering picked, of orderings(len(insts)).
	slot int
}

// order returns insts shuffled: in one of their orderings picked
// uniformly at random, recorded in c when c is not nil.
func (c *variantChoice) order(insts []*catalog.CheckServiceNode) []*catalog.CheckServiceNode {
	k := rand.IntN(orderings(len(insts)))
	if c != nil {
		c.slot = k
	}
	return ordered(insts, k)
}

// selection is what a service answer is decided from: whether the reader
// may see the service, and the instances it may see in the Source's
// order. An answer is a function of its selection, the query, the
// ordering and the configuration (and of the clock, for the SOA serial of
// a negative answer).
type selection struct {
	denied bool
	insts  []*catalog.CheckServiceNode
}

// answerBasis is the lookup and selection a service answer was built
// from, which a cached answer is checked against.
type answerBasis struct {
	l   lookup
	dc  string
	sel selection
}

// cacheEntry is the cached answer to one query form. Only the variants of
// random orderings change once it is stored.
type cacheEntry struct {
	basis answerBasis
	// serialAt is the offset of the SOA serial in a negative answer, to be
	// rewritten with the current time; -1 for other answers.
	serialAt int
	// random is set when the variants are random orderings.
	random bool
	// variants are the packed answers, one per ordering (one in all when
	// the ordering cannot change the answer).
	variants []atomic.Pointer[variant]
	// bytes is the memory accounted for the entry (guarded by its
	// shard's lock).
	bytes int
}

// variant is one packed ordering of an answer.
type variant struct {
	b []byte
	// uses counts the answers served from a random ordering.
	uses atomic.Int32
}

// pick chooses a variant uniformly. It returns nil when that variant is a
// random ordering that has served its share and must be redrawn.
func (e *cacheEntry) pick() (slot int, v *variant) {
	if len(e.variants) > 1 {
		slot = rand.IntN(len(e.variants))
	}
	v = e.variants[slot].Load()
	if e.random && v.uses.Add(1) > randomOrderingUses {
		return slot, nil
	}
	return slot, v
}

// worn returns a random ordering that has served its share, -1 when
// there is none.
func (e *cacheEntry) worn() int {
	if !e.random {
		return -1
	}
	for i := range e.variants {
		if e.variants[i].Load().uses.Load() > randomOrderingUses {
			return i
		}
	}
	return -1
}

// responseCache is a bounded map from query forms to cache entries.
type responseCache struct {
	seed       maphash.Seed
	maxEntries int // per shard
	maxBytes   int // per shard
	shards     [cacheShards]cacheShard
}

type cacheShard struct {
	mu      sync.RWMutex
	entries map[string]*cacheEntry
	bytes   int
}

func newResponseCache(entries, bytes int) *responseCache {
	c := &responseCache{
		seed:       maphash.MakeSeed(),
		maxEntries: max(entries/cacheShards, 1),
		maxBytes:   max(bytes/cacheShards, maxCachedResponse),
	}
	for i := range c.shards {
		c.shards[i].entries = map[string]*cacheEntry{}
	}
	return c
}

func (c *responseCache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

// get returns the entry of key, nil when there is none.
func (c *responseCache) get(key []byte) *cacheEntry {
	s := c.shard(key)
	s.mu.RLock()
	e := s.entries[string(key)]
	s.mu.RUnlock()
	return e
}

// put stores the variants of the answer to key built from basis, in place
// of any entry key had, and evicts other entries past the shard's bounds.
func (c *responseCache) put(key []byte, basis *answerBasis, serialAt int, variants [][]byte) {
	e := &cacheEntry{
		basis:    *basis,
		serialAt: serialAt,
		random:   len(variants) > 1 && len(basis.sel.insts) > exactOrderingsMax,
		variants: make([]atomic.Pointer[variant], len(variants)),
		bytes:    entryOverhead + len(key),
	}
	for i, b := range variants {
		if len(b) > maxCachedResponse {
			return
		}
		e.variants[i].Store(&variant{b: b})
		e.bytes += len(b)
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.entries[string(key)]; old != nil {
		s.bytes -= old.bytes
	}
	s.entries[string(key)] = e
	s.bytes += e.bytes
	for k, other := range s.entries {
		if len(s.entries) <= c.maxEntries && s.bytes <= c.maxBytes {
			break
		}
		if other != e {
			delete(s.entries, k)
			s.bytes -= other.bytes
		}
	}
}

// redraw replaces variant slot of e, the entry of key, with b.
func (c *responseCache) redraw(key []byte, e *cacheEntry, slot int, b []byte) {
	if len(b) > maxCachedResponse {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[string(key)] != e {
		return // replaced meanwhile
	}
	delta := len(b) - len(e.variants[slot].Load().b)
	e.variants[slot].Store(&variant{b: b})
	e.bytes += delta
	s.bytes += delta
}

// len returns the number of entries.
func (c *responseCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.entries)
		s.mu.RUnlock()
	}
	return n
}

// Cache keys: the network, the EDNS0 form, the question's type and class,
// and its name exactly as asked. The case of the name is part of the key:
// the name is echoed, and name compression is case-sensitive, so the case
// changes the packed answer (even its length).
const (
	keyUDP byte = 'u'
	keyTCP byte = 't'

	keyNoEDNS byte = 0
	keyEDNS   byte = 1
	keyEDNSDO byte = 2
)

func putKeyHeader(dst []byte, network, edns byte, size, qtype, qclass uint16) {
	dst[0], dst[1] = network, edns
	binary.BigEndian.PutUint16(dst[2:], size)
	binary.BigEndian.PutUint16(dst[4:], qtype)
	binary.BigEndian.PutUint16(dst[6:], qclass)
}

func networkKey(network string) byte {
	if network == "tcp" {
		return keyTCP
	}
	return keyUDP
}

// appendCacheKey appends the cache key of req to dst. ok is false for a
// query whose answer depends on more than the key holds (EDNS0 options,
// records besides the OPT) or that is not a plain query: those are always
// decided afresh.
func appendCacheKey(dst []byte, req *dns.Msg, network string) ([]byte, bool) {
	if req.Response || req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 ||
		len(req.Answer) != 0 || len(req.Ns) != 0 || len(req.Extra) > 1 {
		return dst, false
	}
	edns, size := keyNoEDNS, uint16(0)
	if len(req.Extra) == 1 {
		opt, ok := req.Extra[0].(*dns.OPT)
		if !ok || opt.Hdr.Name != "." || opt.Version() != 0 || len(opt.Option) != 0 {
			return dst, false
		}
		edns, size = keyEDNS, opt.UDPSize()
		if opt.Do() {
			edns = keyEDNSDO
		}
	}
	q := req.Question[0]
	if len(q.Name) > cacheKeyMax-keyHeaderLen {
		return dst, false
	}
	var hdr [keyHeaderLen]byte
	putKeyHeader(hdr[:], networkKey(network), edns, size, q.Qtype, q.Qclass)
	dst = append(dst, hdr[:]...)
	return append(dst, q.Name...), true
}

// Wire format of a message header.
const (
	headerLen = 12
	hdrBits1  = 2    // QR, opcode (4 bits), AA, TC, RD
	hdrBits2  = 3    // RA, Z, AD, CD, rcode (4 bits)
	bitQR     = 0x80 // in hdrBits1
	bitRD     = 0x01 // in hdrBits1
	bitCD     = 0x10 // in hdrBits2
	// optFixedLen is an OPT record with the root name and no options.
	optFixedLen = 11
	ednsDO      = 0x8000
)

// queryHeader is what an answer echoes of the query's header.
type queryHeader struct {
	id     uint16
	rd, cd bool
}

// packetKey reads the cache key of a query packet into dst (which must
// have room for cacheKeyMax bytes to stay unallocated) and the header
// fields its answer echoes. ok is false for anything but the plainest
// query, which is then left to the full path: exactly one question, whose
// name is uncompressed and made of letters, digits, hyphens and
// underscores (so that its presentation form is its labels joined by
// dots), and at most an OPT record (version 0, no options), with nothing
// after it. Such a packet unpacks to a message with the same key.
func packetKey(dst, p []byte, network string) (key []byte, qh queryHeader, ok bool) {
	if len(p) < headerLen || p[hdrBits1]&bitQR != 0 || p[hdrBits1]>>3&0xF != dns.OpcodeQuery {
		return dst, qh, false
	}
	qd, an := binary.BigEndian.Uint16(p[4:]), binary.BigEndian.Uint16(p[6:])
	ns, ar := binary.BigEndian.Uint16(p[8:]), binary.BigEndian.Uint16(p[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return dst, qh, false
	}
	start := len(dst)
	dst = append(dst, make([]byte, keyHeaderLen)...)
	off := headerLen
	labels := 0
	for {
		if off >= len(p) {
			return dst, qh, false
		}
		n := int(p[off])
		off++
		if n == 0 {
			break
		}
		if n > 63 || off+n > len(p) {
			return dst, qh, false // a pointer, another label type, or short
		}
		for _, c := range p[off : off+n] {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return dst, qh, false
			}
		}
		dst = append(dst, p[off:off+n]...)
		dst = append(dst, '.')
		off += n
		labels++
	}
	if labels == 0 {
		dst = append(dst, '.')
	}
	if off+4 > len(p) {
		return dst, qh, false
	}
	qtype, qclass := binary.BigEndian.Uint16(p[off:]), binary.BigEndian.Uint16(p[off+2:])
	off += 4
	edns, size := keyNoEDNS, uint16(0)
	if ar == 1 {
		// Root name, type, class (the UDP size), TTL (extended rcode,
		// version, flags), RDATA length.
		o := p[off:]
		if len(o) < optFixedLen || o[0] != 0 || binary.BigEndian.Uint16(o[1:]) != dns.TypeOPT ||
			o[6] != 0 || binary.BigEndian.Uint16(o[9:]) != 0 {
			return dst, qh, false
		}
		edns, size = keyEDNS, binary.BigEndian.Uint16(o[3:])
		if binary.BigEndian.Uint16(o[7:])&ednsDO != 0 {
			edns = keyEDNSDO
		}
		off += optFixedLen
	}
	if off != len(p) {
		return dst, qh, false
	}
	putKeyHeader(dst[start:], networkKey(network), edns, size, qtype, qclass)
	qh = queryHeader{id: binary.BigEndian.Uint16(p), rd: p[hdrBits1]&bitRD != 0, cd: p[hdrBits2]&bitCD != 0}
	return dst, qh, true
}

// patch writes the query's header fields (and the current SOA serial of a
// negative answer) into b, a copy of a cached answer.
func (e *cacheEntry) patch(b []byte, q queryHeader, serial uint32) {
	binary.BigEndian.PutUint16(b, q.id)
	b[hdrBits1] &^= bitRD
	if q.rd {
		b[hdrBits1] |= bitRD
	}
	b[hdrBits2] &^= bitCD
	if q.cd {
		b[hdrBits2] |= bitCD
	}
	if e.serialAt >= 0 {
		binary.BigEndian.PutUint32(b[e.serialAt:], serial)
	}
}

// negativeSerialAt returns where the SOA serial is in b, resp packed, when
// resp is a negative answer (no answers, the SOA alone in authority,
// nothing in additional but an OPT without options), -1 when resp has no
// authority records. ok is false when resp has authority records but is
// not such an answer: it must not be cached.
func negativeSerialAt(resp *dns.Msg, b []byte) (at int, ok bool) {
	if len(resp.Ns) == 0 {
		return -1, true
	}
	soa, isSOA := resp.Ns[0].(*dns.SOA)
	if len(resp.Answer) != 0 || len(resp.Ns) != 1 || !isSOA || len(resp.Extra) > 1 {
		return -1, false
	}
	tail := 0
	if len(resp.Extra) == 1 {
		opt, isOPT := resp.Extra[0].(*dns.OPT)
		if !isOPT || opt.Hdr.Name != "." || len(opt.Option) != 0 {
			return -1, false
		}
		tail = optFixedLen
	}
	// The SOA's RDATA ends with serial, refresh, retry, expire, minimum.
	at = len(b) - tail - 20
	if at < headerLen || binary.BigEndian.Uint32(b[at:]) != soa.Serial ||
		binary.BigEndian.Uint32(b[at+16:]) != soa.Minttl {
		return -1, false
	}
	return at, true
}
