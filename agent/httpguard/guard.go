// Package httpguard holds the HTTP API's protections that apply before any
// handler runs: per-client connection limits, write access by source network
// (http_config.allow_write_http_from), refusal of cross-site writes from
// browsers, requests for unknown datacenters, bounds on ?filter=, and
// configured response headers; and the listener that takes back the
// connections of parked blocking queries (Reinjectable).
//
// It knows nothing of the API's endpoints; it wraps an http.Handler and a
// net.Listener.
package httpguard

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Limits on ?filter= expressions, checked before they are parsed: a large
// or deeply nested expression costs the parser far more memory than its size.
const (
	MaxFilterBytes = 4 << 10
	MaxFilterDepth = 32
)

// Config is what a Guard enforces.
type Config struct {
	// Datacenter is the local datacenter. A request whose ?dc= names
	// another gets 500 "No path to datacenter" until federation exists.
	Datacenter string
	// KnownDatacenter, when set, reports whether a datacenter other than the
	// local one can be reached; nil means none can.
	KnownDatacenter func(dc string) bool
	// AllowWriteFrom are the networks write requests may come from
	// (http_config.allow_write_http_from); empty means any.
	AllowWriteFrom []netip.Prefix
	// AllowedOrigins are extra browser origins (scheme://host[:port]) whose
	// writes are accepted besides the agent's own address.
	AllowedOrigins []string
	// ResponseHeaders are added to every response
	// (http_config.response_headers).
	ResponseHeaders map[string]string
}

// Guard wraps the API's handler with the checks of its Config.
type Guard struct {
	cfg Config
}

// New returns a Guard for cfg.
func New(cfg Config) *Guard { return &Guard{cfg: cfg} }

// ParsePrefixes parses allow_write_http_from entries: CIDRs or single
// addresses.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("allow_write_http_from: %q is neither a CIDR nor an address", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// Wrap returns h behind the guard.
func (g *Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range g.cfg.ResponseHeaders {
			w.Header().Set(k, v)
		}
		if status, msg := g.check(r); status != 0 {
			http.Error(w, msg, status)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// check returns the status and message refusing r, or 0.
func (g *Guard) check(r *http.Request) (int, string) {
	var q url.Values
	if mayName(r.URL.RawQuery, "filter", "dc") {
		q = r.URL.Query()
	}
	if f := q.Get("filter"); f != "" {
		if err := CheckFilter(f); err != nil {
			return http.StatusBadRequest, err.Error()
		}
	}
	if isWrite(r.Method) {
		if len(g.cfg.AllowWriteFrom) > 0 && !g.writeAllowedFrom(r.RemoteAddr) {
			return http.StatusForbidden, "Access is restricted"
		}
		if origin := r.Header.Get("Origin"); origin != "" && !g.originAllowed(origin, r.Host) {
			return http.StatusForbidden, fmt.Sprintf("Cross-origin write refused: origin %q is not this agent", origin)
		}
	}
	if dc := q.Get("dc"); dc != "" && dc != g.cfg.Datacenter {
		if g.cfg.KnownDatacenter == nil || !g.cfg.KnownDatacenter(dc) {
			return http.StatusInternalServerError, "No path to datacenter"
		}
	}
	return 0, ""
}

// mayName reports whether the raw query string may hold one of the keys
// (a key can be percent-encoded: any escape counts as a possible one), so
// that most requests are not parsed here: the API parses them once more.
func mayName(raw string, keys ...string) bool {
	if raw == "" {
		return false
	}
	if strings.IndexByte(raw, '%') >= 0 {
		return true
	}
	for _, k := range keys {
		if strings.Contains(raw, k) {
			return true
		}
	}
	return false
}

func (g *Guard) writeAllowedFrom(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		// A unix socket peer has no address: local, allowed.
		return remote == "" || remote == "@"
	}
	a = a.Unmap()
	for _, p := range g.cfg.AllowWriteFrom {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// originAllowed reports whether a browser write from origin may proceed: the
// origin is the agent's own address as the request named it (and that
// address is an IP literal or localhost, so that a rebound DNS name cannot
// pose as the agent), or one of the configured origins.
func (g *Guard) originAllowed(origin, host string) bool {
	if slices.Contains(g.cfg.AllowedOrigins, strings.TrimSuffix(origin, "/")) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if !strings.EqualFold(u.Host, host) {
		return false
	}
	name := u.Hostname()
	if strings.EqualFold(name, "localhost") {
		return true
	}
	_, err = netip.ParseAddr(name)
	return err == nil
}

// CheckFilter bounds a ?filter= expression's size and nesting before it is
// parsed.
func CheckFilter(f string) error {
	if len(f) > MaxFilterBytes {
		return fmt.Errorf("Failed to create boolean expression evaluator: filter is %d bytes, more than the limit of %d", len(f), MaxFilterBytes)
	}
	depth, inQuote := 0, byte(0)
	for i := 0; i < len(f); i++ {
		c := f[i]
		switch {
		case inQuote != 0:
			if c == '\\' {
				i++
			} else if c == inQuote {
				inQuote = 0
			}
		case c == '"' || c == '`':
			inQuote = c
		case c == '(':
			depth++
			if depth > MaxFilterDepth {
				return fmt.Errorf("Failed to create boolean expression evaluator: filter nests deeper than %d", MaxFilterDepth)
			}
		case c == ')':
			depth--
		}
	}
	return nil
}
