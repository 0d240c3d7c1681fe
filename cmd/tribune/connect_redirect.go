package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/connect/redirect"
)

const redirectTrafficHelp = `Applies the iptables rules of transparent proxy mode: inbound TCP goes to the
proxy's inbound port, outbound TCP from every user but the proxy's to its
outbound port, except what the -exclude-* flags name and loopback
destinations; with -consul-dns-ip or -consul-dns-port, DNS goes to the
agent's DNS server.

With -proxy-id the ports come from the proxy's registration on the local
agent (or on -node-name in the catalog): its Port (or Proxy.Config bind_port)
is the inbound port, Proxy.TransparentProxy.OutboundListenerPort (default
15001) the outbound one, and the ports of its exposed paths and of
envoy_prometheus_bind_addr and envoy_stats_bind_addr are excluded from
inbound redirection.

Linux only; needs iptables and the NET_ADMIN capability. Running it again
replaces the rules of the previous run.

  $ tribune connect redirect-traffic -proxy-uid 1234 -proxy-inbound-port 20000
  $ tribune connect redirect-traffic -proxy-uid 1234 -proxy-id web-sidecar-proxy`

// portListFlag collects a repeated port flag.
type portListFlag []int

func (p *portListFlag) String() string {
	parts := make([]string, len(*p))
	for i, v := range *p {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, ",")
}

func (p *portListFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q is not a port number", v)
	}
	if err := redirect.CheckPort(n); err != nil {
		return err
	}
	*p = append(*p, n)
	return nil
}

// cidrListFlag collects repeated IPv4 CIDRs or addresses.
type cidrListFlag []string

func (c *cidrListFlag) String() string { return strings.Join(*c, ",") }

func (c *cidrListFlag) Set(v string) error {
	n, err := redirect.NormalizeCIDR(v)
	if err != nil {
		return err
	}
	*c = append(*c, n)
	return nil
}

// uidListFlag collects repeated user IDs or names, as numeric IDs.
type uidListFlag []string

func (u *uidListFlag) String() string { return strings.Join(*u, ",") }

func (u *uidListFlag) Set(v string) error {
	uid, err := resolveUID(v)
	if err != nil {
		return err
	}
	*u = append(*u, uid)
	return nil
}

// resolveUID returns v when it is a numeric user ID, else the ID of the
// user named v.
func resolveUID(v string) (string, error) {
	if redirect.CheckUID(v) == nil {
		return v, nil
	}
	u, err := user.Lookup(v)
	if err != nil {
		return "", fmt.Errorf("%q is neither a numeric user ID nor a known user: %w", v, err)
	}
	return u.Uid, nil
}

// newRedirectRunner returns what runs the iptables commands, in the network
// namespace at netns when it is set.
type newRedirectRunner func(netns string) (redirect.Runner, error)

// newIPTablesRunner runs the iptables program found on PATH.
func newIPTablesRunner(netns string) (redirect.Runner, error) {
	return redirect.NewIPTables(netns)
}

// runConnectRedirectTraffic implements "connect redirect-traffic".
func runConnectRedirectTraffic(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return connectRedirectTraffic(ctx, args, stdout, stderr, newIPTablesRunner)
}

// connectRedirectTraffic parses the flags, completes them from the proxy's
// registration with -proxy-id, and applies the rules through a runner from
// newRunner.
func connectRedirectTraffic(ctx context.Context, args []string, stdout, stderr io.Writer, newRunner newRedirectRunner) int {
	var hf httpFlags
	var exclIn, exclOut portListFlag
	var exclCIDRs cidrListFlag
	var exclUIDs uidListFlag
	fs := newFlagSet("connect redirect-traffic", "connect redirect-traffic [options]", redirectTrafficHelp, stderr, &hf)
	proxyUID := fs.String("proxy-uid", "", "The `user` ID (or name) the proxy runs as; its own traffic is not redirected. Required.")
	proxyID := fs.String("proxy-id", "", "The proxy's service `ID`, registered with the local agent: the ports come from its registration.")
	nodeName := fs.String("node-name", "", "The `node` the -proxy-id service is registered on, read from the catalog instead of the local agent "+
		"(for hosts without a client agent).")
	inbound := fs.Int("proxy-inbound-port", 0, "The `port` of the proxy's inbound listener. Required without -proxy-id.")
	outbound := fs.Int("proxy-outbound-port", redirect.DefaultOutboundPort, "The `port` of the proxy's outbound listener.")
	fs.Var(&exclIn, "exclude-inbound-port", "Inbound `port` not redirected to the proxy. May be repeated.")
	fs.Var(&exclOut, "exclude-outbound-port", "Outbound destination `port` not redirected to the proxy. May be repeated.")
	fs.Var(&exclCIDRs, "exclude-outbound-cidr", "Outbound destination IPv4 `CIDR` or address not redirected to the proxy. May be repeated.")
	fs.Var(&exclUIDs, "exclude-uid", "Another `user` ID (or name) whose outbound traffic is not redirected. May be repeated.")
	dnsIP := fs.String("consul-dns-ip", "", "The IPv4 `address` of the agent's DNS server: DNS queries (port 53) are sent there.")
	dnsPort := fs.Int("consul-dns-port", 0, "The `port` of the agent's DNS server: queries to -consul-dns-ip (default 127.0.0.1) port 53 "+
		"are sent to this port.")
	netns := fs.String("netns", "", "The `path` of the network namespace to apply the rules in, such as /var/run/netns/NAME.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "Error: "+format+"\n", a...)
		return 1
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments %q", fs.Args())
	}
	if *proxyUID == "" {
		return fail("-proxy-uid is required")
	}
	uid, err := resolveUID(*proxyUID)
	if err != nil {
		return fail("-proxy-uid: %v", err)
	}
	portsSet := flagWasSet(fs, "proxy-inbound-port") || flagWasSet(fs, "proxy-outbound-port")
	switch {
	case *proxyID == "" && *inbound == 0:
		return fail("either -proxy-id or -proxy-inbound-port is required")
	case *proxyID != "" && portsSet:
		return fail("-proxy-inbound-port and -proxy-outbound-port cannot be used with -proxy-id: " +
			"the ports come from the proxy's registration")
	case *nodeName != "" && *proxyID == "":
		return fail("-node-name requires -proxy-id")
	case *dnsIP != "" && net.ParseIP(*dnsIP).To4() == nil:
		return fail("-consul-dns-ip: %q is not an IPv4 address", *dnsIP)
	}
	for _, p := range []struct {
		name string
		port int
	}{{"proxy-inbound-port", *inbound}, {"proxy-outbound-port", *outbound}, {"consul-dns-port", *dnsPort}} {
		if flagWasSet(fs, p.name) {
			if err := redirect.CheckPort(p.port); err != nil {
				return fail("-%s: %v", p.name, err)
			}
		}
	}
	cfg := redirect.Config{
		ProxyUID:             uid,
		ProxyInboundPort:     *inbound,
		ProxyOutboundPort:    *outbound,
		ExcludeInboundPorts:  exclIn,
		ExcludeOutboundPorts: exclOut,
		ExcludeOutboundCIDRs: exclCIDRs,
		ExcludeUIDs:          exclUIDs,
		DNSIP:                *dnsIP,
		DNSPort:              *dnsPort,
	}
	if *proxyID != "" {
		svc, err := lookupProxy(ctx, hf, *proxyID, *nodeName)
		if err != nil {
			return fail("%v", err)
		}
		if err := applyProxyRegistration(&cfg, svc); err != nil {
			return fail("%v", err)
		}
		if svc.Proxy.Expose.Checks && *nodeName == "" {
			ports, err := exposedCheckPorts(ctx, hf, svc.Proxy.DestinationServiceID)
			if err != nil {
				return fail("%v", err)
			}
			cfg.ExcludeInboundPorts = append(cfg.ExcludeInboundPorts, ports...)
		}
	}
	plan, err := cfg.Plan()
	if err != nil {
		return fail("%v", err)
	}
	runner, err := newRunner(*netns)
	if err != nil {
		return fail("%v", err)
	}
	if err := redirect.Apply(ctx, runner, plan); err != nil {
		return fail("applying the traffic redirection rules: %v", err)
	}
	fmt.Fprintf(stdout, "Applied traffic redirection rules: inbound TCP to port %d, outbound TCP to port %d\n",
		cfg.ProxyInboundPort, cfg.ProxyOutboundPort)
	return 0
}

// exposedCheckPorts returns the listener ports the local agent gave the
// checks of service id that its sidecar exposes (expose.checks): the
// agent's probes arrive there, and must not be redirected.
func exposedCheckPorts(ctx context.Context, hf httpFlags, id string) ([]int, error) {
	client, err := hf.client()
	if err != nil {
		return nil, err
	}
	checks, err := client.Agent().ChecksWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read the local agent's checks: %w", err)
	}
	var ports []int
	for _, c := range checks {
		if c.ServiceID == id && c.ExposedPort != 0 {
			ports = append(ports, c.ExposedPort)
		}
	}
	sort.Ints(ports)
	return ports, nil
}

// lookupProxy reads the proxy's registration: from the local agent, or from
// the catalog's view of node when it is set.
func lookupProxy(ctx context.Context, hf httpFlags, id, node string) (*api.AgentService, error) {
	client, err := hf.client()
	if err != nil {
		return nil, err
	}
	if node == "" {
		svc, _, err := client.Agent().Service(id, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read proxy service %s from the local agent: %w", id, err)
		}
		return svc, nil
	}
	n, _, err := client.Catalog().Node(node, hf.queryOptions().WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read node %s from the catalog: %w", node, err)
	}
	if n == nil {
		return nil, fmt.Errorf("node %s is not in the catalog", node)
	}
	svc := n.Services[id]
	if svc == nil {
		return nil, fmt.Errorf("no service %s on node %s", id, node)
	}
	return svc, nil
}

// proxyRedirectConfig is what redirect-traffic reads of a proxy's opaque
// Proxy.Config.
type proxyRedirectConfig struct {
	bindPort                      int
	prometheusBindAddr, statsAddr string
}

func readProxyRedirectConfig(m map[string]any) (proxyRedirectConfig, error) {
	var c proxyRedirectConfig
	str := func(key string) (string, error) {
		switch v := m[key].(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		default:
			return "", fmt.Errorf("Proxy.Config %s is %T, not a string", key, v)
		}
	}
	switch v := m["bind_port"].(type) {
	case nil:
	case float64:
		c.bindPort = int(v)
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			return c, fmt.Errorf("Proxy.Config bind_port %q is not a number", v)
		}
		c.bindPort = n
	default:
		return c, fmt.Errorf("Proxy.Config bind_port is %T, not a number", v)
	}
	var err error
	if c.prometheusBindAddr, err = str("envoy_prometheus_bind_addr"); err != nil {
		return c, err
	}
	if c.statsAddr, err = str("envoy_stats_bind_addr"); err != nil {
		return c, err
	}
	return c, nil
}

// applyProxyRegistration takes the ports of cfg from the proxy's
// registration, as Consul does: the inbound port is the service's Port, or
// Proxy.Config bind_port; the outbound port Proxy.TransparentProxy's
// OutboundListenerPort, or the default; the exposed paths' listener ports
// and the ports of envoy_prometheus_bind_addr and envoy_stats_bind_addr are
// added to the excluded inbound ports.
func applyProxyRegistration(cfg *redirect.Config, svc *api.AgentService) error {
	if svc.Kind != api.ServiceKindConnectProxy || svc.Proxy == nil {
		return fmt.Errorf("service %s is not a connect-proxy", svc.ID)
	}
	pc, err := readProxyRedirectConfig(svc.Proxy.Config)
	if err != nil {
		return fmt.Errorf("service %s: %w", svc.ID, err)
	}
	cfg.ProxyInboundPort = svc.Port
	if pc.bindPort != 0 {
		cfg.ProxyInboundPort = pc.bindPort
	}
	if cfg.ProxyInboundPort == 0 {
		return fmt.Errorf("service %s has no port to redirect inbound traffic to", svc.ID)
	}
	cfg.ProxyOutboundPort = redirect.DefaultOutboundPort
	if tp := svc.Proxy.TransparentProxy; tp != nil && tp.OutboundListenerPort != 0 {
		cfg.ProxyOutboundPort = tp.OutboundListenerPort
	}
	for _, p := range svc.Proxy.Expose.Paths {
		if p.ListenerPort != 0 {
			cfg.ExcludeInboundPorts = append(cfg.ExcludeInboundPorts, p.ListenerPort)
		}
	}
	for _, a := range []struct{ key, addr string }{
		{"envoy_prometheus_bind_addr", pc.prometheusBindAddr},
		{"envoy_stats_bind_addr", pc.statsAddr},
	} {
		if a.addr == "" {
			continue
		}
		_, portText, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("service %s: Proxy.Config %s: %w", svc.ID, a.key, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return fmt.Errorf("service %s: Proxy.Config %s %q: port: %w", svc.ID, a.key, a.addr, err)
		}
		cfg.ExcludeInboundPorts = append(cfg.ExcludeInboundPorts, port)
	}
	return nil
}
