// Package dnsserver is Tribune's DNS interface: it answers Consul's DNS names
// (<service>.service.<domain>, <node>.node.<domain>, <hex>.addr.<domain>,
// reverse lookups, SOA and NS of the domain) from a Source the agent
// implements over its in-memory views, and forwards other names to the
// configured recursors.
//
// Decide and serve are split: Handler decides the answer to one query
// (Handler.Answer is a function of the query and the Source), while Server
// only owns the UDP and TCP listeners that deliver queries to a dns.Handler
// (and, for UDP, first to Handler.AnswerPacket, which answers from the
// handler's response cache without blocking).
//
// The package owns no goroutine besides the listeners of a Server, which
// Shutdown stops and waits for. It must not import agent or server: the
// catalog reaches it only through Source.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// Config is the configuration of a Handler. Field comments name the agent
// configuration keys they come from; start from DefaultConfig.
type Config struct {
	// Domain is domain, fully qualified ("consul.").
	Domain string
	// AltDomain is alt_domain; empty for none.
	AltDomain string
	// Datacenter is the agent's datacenter, used when a name has none.
	Datacenter string
	// NodeName is the agent's node name, the name server of last resort in
	// NS answers when no server is registered as service "consul".
	NodeName string

	// NodeTTL is dns_config.node_ttl, the TTL of node answers.
	NodeTTL time.Duration
	// ServiceTTL is dns_config.service_ttl: per-service TTLs, where "*"
	// matches every service and a trailing "*" a prefix.
	ServiceTTL map[string]time.Duration
	// UDPAnswerLimit is dns_config.udp_answer_limit: the most answers in a
	// UDP response to a client without EDNS0.
	UDPAnswerLimit int
	// ARecordLimit is dns_config.a_record_limit: the most A/AAAA answers
	// in any response; zero means no limit.
	ARecordLimit int
	// EnableTruncate is dns_config.enable_truncate: set TC on a UDP
	// response that was cut, so that clients retry over TCP.
	EnableTruncate bool
	// OnlyPassing is dns_config.only_passing: leave out instances with a
	// warning check, not only critical ones.
	OnlyPassing bool
	// DisableCompression is dns_config.disable_compression.
	DisableCompression bool
	// EnableAdditionalNodeMetaTXT is
	// dns_config.enable_additional_node_meta_txt: add node meta as TXT
	// records to the additional section of node and SRV answers.
	EnableAdditionalNodeMetaTXT bool
	// SOA is dns_config.soa.
	SOA SOAConfig

	// Recursors are recursors: "host" or "host:port" of upstream servers
	// for names outside the domain.
	Recursors []string
	// RecursorTimeout is dns_config.recursor_timeout, per recursor tried.
	RecursorTimeout time.Duration
	// RecursorStrategy is dns_config.recursor_strategy: "sequential" or
	// "random" order of recursors.
	RecursorStrategy string

	// QueryTimeout bounds how long one query waits for the Source.
	QueryTimeout time.Duration
	// CacheEntries bounds the service answers kept packed, ready to be
	// sent again while the Source yields the same instances; 0 means
	// DefaultCacheEntries, negative turns the cache off.
	CacheEntries int
	// CacheBytes bounds the memory of those answers; 0 means
	// DefaultCacheBytes.
	CacheBytes int
	// Authorize returns the Authorizer DNS answers are filtered with (the
	// agent's default token); nil means allow all.
	Authorize func() (acl.Authorizer, error)
	// Context is the parent of every query's context: cancelling it aborts
	// lookups and recursion in flight (on shutdown). Nil means Background.
	Context context.Context
	// Clock tells the time of SOA serials; nil means the real clock.
	Clock clock.Clock
	// Logger is the logger; nil discards.
	Logger hclog.Logger

	// ConnectLookup answers <service>.connect.<domain>: the instances
	// that accept mesh connections for service (proxies and native
	// services), answered like a service lookup. Nil answers NXDOMAIN.
	ConnectLookup func(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error)
	// PreparedQuery answers <query>.query.<domain> (and the RFC 2782
	// form _<query>._tcp.query) with the instances the prepared query
	// selects, answered like a service lookup. Nil answers NXDOMAIN.
	PreparedQuery func(ctx context.Context, dc, query string) ([]*catalog.CheckServiceNode, error)
	// VirtualIP answers <service>.virtual.<domain>: the virtual IP that
	// transparent proxies reach service at (nil: it has none). Nil
	// answers NXDOMAIN.
	VirtualIP func(ctx context.Context, dc, service string) (net.IP, error)
}

// SOAConfig is dns_config.soa, in seconds.
type SOAConfig struct {
	Refresh uint32
	Retry   uint32
	Expire  uint32
	MinTTL  uint32
}

// Defaults of the response cache: room for every A and SRV answer of
// thousands of services, a few MiB in practice.
const (
	DefaultCacheEntries = 10000
	DefaultCacheBytes   = 32 << 20
)

// DefaultConfig returns Consul's DNS defaults.
func DefaultConfig() Config {
	return Config{
		Domain:                      "consul.",
		Datacenter:                  "dc1",
		UDPAnswerLimit:              3,
		RecursorTimeout:             2 * time.Second,
		RecursorStrategy:            "sequential",
		QueryTimeout:                2 * time.Second,
		CacheEntries:                DefaultCacheEntries,
		CacheBytes:                  DefaultCacheBytes,
		EnableAdditionalNodeMetaTXT: true,
		SOA:                         SOAConfig{Refresh: 3600, Retry: 600, Expire: 86400, MinTTL: 0},
	}
}

// validate checks c and fills in what it may default, returning the
// normalised copy.
func (c Config) validate() (Config, error) {
	var errs []error
	c.Domain = dns.CanonicalName(c.Domain)
	if _, ok := dns.IsDomainName(c.Domain); !ok || c.Domain == "." {
		errs = append(errs, fmt.Errorf("domain: invalid %q", c.Domain))
	}
	if c.AltDomain != "" {
		c.AltDomain = dns.CanonicalName(c.AltDomain)
		if _, ok := dns.IsDomainName(c.AltDomain); !ok || c.AltDomain == "." {
			errs = append(errs, fmt.Errorf("alt_domain: invalid %q", c.AltDomain))
		}
		if c.AltDomain == c.Domain {
			c.AltDomain = ""
		}
	}
	c.Datacenter = strings.ToLower(c.Datacenter)
	if c.Datacenter == "" {
		errs = append(errs, errors.New("datacenter: empty"))
	}
	if c.UDPAnswerLimit <= 0 {
		c.UDPAnswerLimit = 3
	}
	if c.ARecordLimit < 0 {
		c.ARecordLimit = 0
	}
	if c.RecursorTimeout <= 0 {
		c.RecursorTimeout = 2 * time.Second
	}
	switch c.RecursorStrategy {
	case "", "sequential":
		c.RecursorStrategy = "sequential"
	case "random":
	default:
		errs = append(errs, fmt.Errorf("recursor_strategy: %q is not sequential or random", c.RecursorStrategy))
	}
	recs := make([]string, 0, len(c.Recursors))
	for _, r := range c.Recursors {
		addr, err := recursorAddr(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		recs = append(recs, addr)
	}
	c.Recursors = recs
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 2 * time.Second
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = DefaultCacheEntries
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	ttls := make(map[string]time.Duration, len(c.ServiceTTL))
	for k, v := range c.ServiceTTL {
		ttls[strings.ToLower(k)] = v
	}
	c.ServiceTTL = ttls
	if c.Context == nil {
		c.Context = context.Background()
	}
	if c.Clock == nil {
		c.Clock = clock.New()
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c, errors.Join(errs...)
}

// recursorAddr turns "ip" or "ip:port" into "ip:port", port 53 by default.
func recursorAddr(r string) (string, error) {
	if ip := net.ParseIP(strings.Trim(r, "[]")); ip != nil {
		return net.JoinHostPort(ip.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(r)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("recursors: invalid address %q", r)
	}
	return net.JoinHostPort(host, port), nil
}
