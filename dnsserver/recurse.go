package dnsserver

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/miekg/dns"
)

// recurse forwards req to the recursors, in order or shuffled by the
// recursor strategy, each bounded by the recursor timeout. The first
// answer that is NOERROR or NXDOMAIN is returned as the recursor sent it;
// when every recursor fails or times out the answer is SERVFAIL.
func (h *Handler) recurse(req *dns.Msg, network string) *dns.Msg {
	select {
	case h.recursing <- struct{}{}:
		defer func() { <-h.recursing }()
	default:
		h.logger.Debug("too many queries being forwarded, answering SERVFAIL", "limit", maxConcurrentRecursions)
		return h.servfail(req)
	}
	order := h.cfg.Recursors
	if h.cfg.RecursorStrategy == "random" && len(order) > 1 {
		order = append([]string(nil), order...)
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	}
	c := &dns.Client{Net: network, Timeout: h.cfg.RecursorTimeout}
	for _, addr := range order {
		r, err := exchange(h.cfg.Context, c, req, addr, h.cfg.RecursorTimeout)
		if err != nil {
			if h.cfg.Context.Err() != nil {
				break
			}
			h.logger.Debug("recursor failed", "recursor", addr, "name", req.Question[0].Name, "error", err)
			continue
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			h.logger.Debug("recursor answered an error", "recursor", addr, "name", req.Question[0].Name,
				"rcode", dns.RcodeToString[r.Rcode])
			continue
		}
		r.Compress = !h.cfg.DisableCompression
		return r
	}
	h.logger.Debug("all recursors failed", "name", req.Question[0].Name)
	return h.servfail(req)
}

// exchange sends req to addr and reads the answer within timeout. Unlike
// dns.Client.ExchangeContext, which only takes ctx's deadline, it returns
// as soon as ctx is cancelled.
func exchange(ctx context.Context, c *dns.Client, req *dns.Msg, addr string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, req, conn)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (h *Handler) servfail(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	m.Compress = !h.cfg.DisableCompression
	setEDNS(req, m)
	return m
}
