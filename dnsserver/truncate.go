package dnsserver

import (
	"strings"

	"github.com/miekg/dns"
)

// cut shrinks resp to at most size bytes on the wire, dropping the
// authority section first, then answers (with the additional records that
// served only them), keeping the OPT record. It reports whether answers
// were dropped. When not even one answer fits, the answer is emptied: the
// caller then sets TC so the client retries over TCP.
func cut(resp *dns.Msg, size int) bool {
	if fitsIn(resp, size) {
		return false
	}
	if len(resp.Answer) == 0 {
		// Nothing to cut but the optional sections.
		resp.Extra = keepOPT(resp.Extra)
		if resp.Len() > size {
			resp.Ns = nil
		}
		return false
	}
	resp.Ns = nil
	if resp.Len() <= size {
		return false
	}
	all := resp.Answer
	extra := resp.Extra
	fits := func(n int) bool {
		resp.Answer = all[:n]
		resp.Extra = extra
		syncExtra(resp)
		return resp.Len() <= size
	}
	// Binary search for the most answers that fit: fits(lo) holds,
	// fits(hi) does not.
	lo, hi := 0, len(all)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		resp.Answer = nil
		resp.Extra = keepOPT(extra)
		return true
	}
	fits(lo)
	return true
}

// fitsIn reports whether resp packs into size bytes. The uncompressed
// length is cheap to compute and bounds the compressed one, so most
// answers never build a compression map here.
func fitsIn(resp *dns.Msg, size int) bool {
	if resp.Compress {
		resp.Compress = false
		n := resp.Len()
		resp.Compress = true
		if n <= size {
			return true
		}
	}
	return resp.Len() <= size
}

// syncExtra drops the additional records that no longer serve an answer:
// those whose owner is neither an answer's owner nor the target of an
// SRV, CNAME or NS answer. The OPT record stays.
func syncExtra(resp *dns.Msg) {
	if len(resp.Extra) == 0 {
		return
	}
	wanted := make(map[string]bool, len(resp.Answer)*2)
	for _, rr := range resp.Answer {
		wanted[strings.ToLower(rr.Header().Name)] = true
		switch r := rr.(type) {
		case *dns.SRV:
			wanted[strings.ToLower(r.Target)] = true
		case *dns.CNAME:
			wanted[strings.ToLower(r.Target)] = true
		case *dns.NS:
			wanted[strings.ToLower(r.Ns)] = true
		}
	}
	out := make([]dns.RR, 0, len(resp.Extra))
	for _, rr := range resp.Extra {
		if rr.Header().Rrtype == dns.TypeOPT || wanted[strings.ToLower(rr.Header().Name)] {
			out = append(out, rr)
		}
	}
	resp.Extra = out
}

func keepOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}
