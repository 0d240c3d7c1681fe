// Package redirect builds and applies the iptables NAT rules of transparent
// proxy mode: every inbound TCP connection goes to the sidecar proxy's
// inbound listener and every outbound one to its outbound listener, except
// the proxy's own traffic and what the operator excludes; DNS can be sent
// to the agent's DNS server. The chains carry Consul's names, so that tools
// written for `consul connect redirect-traffic` find them.
//
// Config.Plan is a pure function from the configuration to the rules; Apply
// runs a Plan through a Runner (IPTables runs the iptables command, in
// another network namespace if asked). The package changes only its own
// chains, plus the jumps to them it adds to PREROUTING and OUTPUT; it never
// removes rules (there is no "undo"), and sets up IPv4 only, as Consul does.
package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// The nat-table chains the rules live in, named as Consul names them.
const (
	// InboundChain receives inbound TCP from PREROUTING and holds the
	// inbound exclusions.
	InboundChain = "CONSUL_PROXY_INBOUND"
	// InboundRedirectChain redirects to the proxy's inbound port.
	InboundRedirectChain = "CONSUL_PROXY_IN_REDIRECT"
	// OutputChain receives outbound TCP from OUTPUT and holds the
	// outbound exclusions.
	OutputChain = "CONSUL_PROXY_OUTPUT"
	// OutputRedirectChain redirects to the proxy's outbound port.
	OutputRedirectChain = "CONSUL_PROXY_REDIRECT"
	// DNSChain receives outbound DNS (port 53) from OUTPUT and sends it to
	// the configured DNS server.
	DNSChain = "CONSUL_DNS_REDIRECT"
)

// Defaults, as Consul's.
const (
	// DefaultOutboundPort is the transparent proxy's outbound listener
	// port when the configuration names none.
	DefaultOutboundPort = 15001
	// DefaultDNSIP is the DNS server address when only a DNS port is given.
	DefaultDNSIP = "127.0.0.1"
	// dnsPort is the port whose traffic the DNS rules catch.
	dnsPort = 53
)

// Config says what to redirect where.
type Config struct {
	// ProxyUID is the numeric user ID the proxy runs as. Its own outbound
	// traffic is never redirected (it would loop back into the proxy).
	ProxyUID string
	// ProxyInboundPort is the proxy's inbound (public) listener port.
	ProxyInboundPort int
	// ProxyOutboundPort is the proxy's outbound listener port;
	// DefaultOutboundPort when 0.
	ProxyOutboundPort int
	// ExcludeInboundPorts are destination ports of inbound traffic that
	// reach their listener directly.
	ExcludeInboundPorts []int
	// ExcludeOutboundPorts are destination ports of outbound traffic that
	// is not redirected.
	ExcludeOutboundPorts []int
	// ExcludeOutboundCIDRs are IPv4 destinations (a CIDR or one address)
	// of outbound traffic that is not redirected.
	ExcludeOutboundCIDRs []string
	// ExcludeUIDs are numeric user IDs, besides ProxyUID, whose outbound
	// traffic is not redirected.
	ExcludeUIDs []string
	// DNSIP, when set, is the IPv4 address of the DNS server (the agent's)
	// that outbound DNS goes to. With DNSPort 0 every query to port 53 is
	// sent to DNSIP:53; with DNSPort set only queries to DNSIP:53 are, to
	// DNSIP:DNSPort.
	DNSIP string
	// DNSPort, when set, is the DNS server's port (DNSIP defaults to
	// DefaultDNSIP then).
	DNSPort int
}

// Rule is one rule of the nat table: its chain, then its match and target
// arguments.
type Rule struct {
	Chain string
	Spec  []string
}

// Args returns the iptables arguments that apply op ("-A" to append, "-C" to
// check, "-D" to delete) to r.
func (r Rule) Args(op string) []string {
	return append([]string{"-t", "nat", op, r.Chain}, r.Spec...)
}

// Plan is the rule set of one Config. Applying it on a host that has it
// already leaves the host as it was.
type Plan struct {
	// Chains are created, or emptied when they exist, before anything else.
	Chains []string
	// Rules are then appended in order to those chains.
	Rules []Rule
	// Jumps go last into the built-in chains PREROUTING and OUTPUT, each
	// appended only when it is not there yet. They do not depend on the
	// Config, so a second run never leaves a stale or duplicate jump.
	Jumps []Rule
}

// Commands returns the iptables argument lists that apply p to a host that
// has none of its chains: create the chains, append the rules, then the
// jumps.
func (p Plan) Commands() [][]string {
	var cmds [][]string
	for _, c := range p.Chains {
		cmds = append(cmds, []string{"-t", "nat", "-N", c})
	}
	for _, r := range p.Rules {
		cmds = append(cmds, r.Args("-A"))
	}
	for _, j := range p.Jumps {
		cmds = append(cmds, j.Args("-A"))
	}
	return cmds
}

// Plan validates c and returns its rules:
//
//   - OUTPUT sends TCP and UDP to port 53 to DNSChain first, which DNATs it
//     to the DNS server when one is configured and is empty otherwise;
//   - OUTPUT sends the rest of TCP to OutputChain, which returns the
//     proxy's own traffic, that of ExcludeUIDs, ExcludeOutboundPorts,
//     ExcludeOutboundCIDRs and 127.0.0.1 untouched and sends the rest to
//     OutputRedirectChain, which redirects it to the outbound port;
//   - PREROUTING sends TCP to InboundChain, which returns
//     ExcludeInboundPorts untouched and sends the rest to
//     InboundRedirectChain, which redirects it to the inbound port.
func (c Config) Plan() (Plan, error) {
	if err := c.Validate(); err != nil {
		return Plan{}, err
	}
	outbound := c.ProxyOutboundPort
	if outbound == 0 {
		outbound = DefaultOutboundPort
	}
	var rules []Rule
	add := func(chain string, spec ...string) { rules = append(rules, Rule{chain, spec}) }
	returnTo := func(chain string, spec ...string) { add(chain, append(spec, "-j", "RETURN")...) }

	if dnsIP, dnsTarget := c.dnsTarget(); dnsTarget != "" {
		for _, proto := range []string{"udp", "tcp"} {
			spec := []string{"-p", proto}
			if c.DNSPort != 0 {
				// Only queries to the server itself, sent to its real port.
				spec = append(spec, "-d", dnsIP)
			}
			add(DNSChain, append(spec, "-j", "DNAT", "--to-destination", dnsTarget)...)
		}
	}

	add(OutputRedirectChain, "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(outbound))
	returnTo(OutputChain, "-m", "owner", "--uid-owner", c.ProxyUID)
	for _, uid := range dedupe(c.ExcludeUIDs) {
		returnTo(OutputChain, "-m", "owner", "--uid-owner", uid)
	}
	for _, p := range dedupe(c.ExcludeOutboundPorts) {
		returnTo(OutputChain, "-p", "tcp", "--dport", strconv.Itoa(p))
	}
	cidrs := make([]string, len(c.ExcludeOutboundCIDRs))
	for i, s := range c.ExcludeOutboundCIDRs {
		cidrs[i], _ = NormalizeCIDR(s) // checked by Validate
	}
	for _, cidr := range dedupe(cidrs) {
		returnTo(OutputChain, "-d", cidr)
	}
	returnTo(OutputChain, "-d", "127.0.0.1/32")
	add(OutputChain, "-j", OutputRedirectChain)

	add(InboundRedirectChain, "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(c.ProxyInboundPort))
	for _, p := range dedupe(c.ExcludeInboundPorts) {
		returnTo(InboundChain, "-p", "tcp", "--dport", strconv.Itoa(p))
	}
	add(InboundChain, "-p", "tcp", "-j", InboundRedirectChain)

	dns := strconv.Itoa(dnsPort)
	return Plan{
		Chains: []string{InboundChain, InboundRedirectChain, OutputChain, OutputRedirectChain, DNSChain},
		Rules:  rules,
		Jumps: []Rule{
			// DNS first: TCP queries must not reach OutputChain.
			{"OUTPUT", []string{"-p", "udp", "--dport", dns, "-j", DNSChain}},
			{"OUTPUT", []string{"-p", "tcp", "--dport", dns, "-j", DNSChain}},
			{"OUTPUT", []string{"-p", "tcp", "-j", OutputChain}},
			{"PREROUTING", []string{"-p", "tcp", "-j", InboundChain}},
		},
	}, nil
}

// dnsTarget returns the DNS server's address and the --to-destination of
// the DNS rules, or "" when DNS is not redirected.
func (c Config) dnsTarget() (ip, target string) {
	switch {
	case c.DNSPort != 0:
		ip = c.DNSIP
		if ip == "" {
			ip = DefaultDNSIP
		}
		return ip, ip + ":" + strconv.Itoa(c.DNSPort)
	case c.DNSIP != "":
		return c.DNSIP, c.DNSIP
	}
	return "", ""
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	if c.ProxyUID == "" {
		return errors.New("the proxy's user ID is required")
	}
	if err := CheckUID(c.ProxyUID); err != nil {
		return fmt.Errorf("proxy user ID: %w", err)
	}
	if c.ProxyInboundPort == 0 {
		return errors.New("the proxy's inbound port is required")
	}
	if err := CheckPort(c.ProxyInboundPort); err != nil {
		return fmt.Errorf("proxy inbound port: %w", err)
	}
	if c.ProxyOutboundPort != 0 {
		if err := CheckPort(c.ProxyOutboundPort); err != nil {
			return fmt.Errorf("proxy outbound port: %w", err)
		}
	}
	for _, p := range c.ExcludeInboundPorts {
		if err := CheckPort(p); err != nil {
			return fmt.Errorf("excluded inbound port: %w", err)
		}
	}
	for _, p := range c.ExcludeOutboundPorts {
		if err := CheckPort(p); err != nil {
			return fmt.Errorf("excluded outbound port: %w", err)
		}
	}
	for _, s := range c.ExcludeOutboundCIDRs {
		if _, err := NormalizeCIDR(s); err != nil {
			return fmt.Errorf("excluded outbound CIDR: %w", err)
		}
	}
	for _, u := range c.ExcludeUIDs {
		if err := CheckUID(u); err != nil {
			return fmt.Errorf("excluded user ID: %w", err)
		}
	}
	if c.DNSIP != "" {
		if err := checkIPv4(c.DNSIP); err != nil {
			return fmt.Errorf("DNS server address: %w", err)
		}
	}
	if c.DNSPort != 0 {
		if err := CheckPort(c.DNSPort); err != nil {
			return fmt.Errorf("DNS server port: %w", err)
		}
	}
	return nil
}

// CheckPort reports whether p is a TCP or UDP port number (1 to 65535).
func CheckPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("port %d is out of range 1-65535", p)
	}
	return nil
}

// CheckUID reports whether s is a numeric user ID.
func CheckUID(s string) error {
	if _, err := strconv.ParseUint(s, 10, 32); err != nil {
		return fmt.Errorf("%q is not a numeric user ID", s)
	}
	return nil
}

// NormalizeCIDR checks that s is an IPv4 CIDR ("10.0.0.0/8") or address
// ("10.1.2.3") and returns it as a CIDR with the host bits cleared.
func NormalizeCIDR(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if !a.Is4() {
			return "", fmt.Errorf("%q is not IPv4 (the rules are iptables', IPv4 only)", s)
		}
		return netip.PrefixFrom(a, 32).String(), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return "", fmt.Errorf("%q is neither an IPv4 CIDR nor an IPv4 address: %w", s, err)
	}
	if !p.Addr().Is4() {
		return "", fmt.Errorf("%q is not IPv4 (the rules are iptables', IPv4 only)", s)
	}
	return p.Masked().String(), nil
}

func checkIPv4(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("%q is not an IP address: %w", s, err)
	}
	if !a.Is4() {
		return fmt.Errorf("%q is not IPv4 (the rules are iptables', IPv4 only)", s)
	}
	return nil
}

// dedupe returns xs without repeats, in first-seen order.
func dedupe[T comparable](xs []T) []T {
	seen := make(map[T]bool, len(xs))
	out := make([]T, 0, len(xs))
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
