package xds

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A transparent proxy (Consul's proxy mode "transparent") has the app's
// outbound connections redirected to one listener (iptables, see "connect
// redirect-traffic"), which learns each connection's original destination
// and picks the upstream whose addresses (its service's virtual IPs)
// match it. Connections to any other address go out unchanged through the
// original-destination cluster, unless the mesh allows mesh destinations
// only.

// DefaultOutboundPort is the port of a transparent proxy's outbound
// listener when its TransparentProxy settings name none.
const DefaultOutboundPort = 15001

// OriginalDestinationCluster is the cluster that sends a transparent
// proxy's connections to addresses outside the mesh where the app sent
// them.
const OriginalDestinationCluster = "original-destination"

// Outbound is a transparent proxy's outbound listener.
type Outbound struct {
	// Port is the listener's port on 127.0.0.1; zero: DefaultOutboundPort.
	Port int
	// Passthrough lets connections to addresses of no upstream out to
	// their original destination (the mesh entry's
	// TransparentProxy.MeshDestinationsOnly unset).
	Passthrough bool
}

// outChain is one upstream's filter chain in the outbound listener:
// connections to addrs go to cluster (L4) or through route (L7). direct:
// addrs are instances' own addresses, which two upstreams may share.
type outChain struct {
	name    string
	addrs   []string
	stat    string
	cluster string
	route   string
	direct  bool
}

func (c outChain) key() string {
	return c.name + "|" + strings.Join(c.addrs, ",") + "|" + c.stat + "|" + c.cluster + "|" + c.route
}

// filter is the chain's network filter.
func (c outChain) filter() (*listener.Filter, error) {
	if c.route != "" {
		return httpUpstreamFilter(c.stat, c.route)
	}
	return tcpProxyFilter(c.stat, c.cluster)
}

// upstreamListener adds what makes u reachable: its own listener when it
// binds a port or socket, and its filter chain in the outbound listener
// when it is transparent. c says where its connections go.
func (b *builder) upstreamListener(p *Proxy, u *Upstream, c outChain) {
	if u.LocalBindPort != 0 || u.LocalBindSocketPath != "" {
		lname, laddr := u.listenAt()
		b.add(resource.ListenerType, "up|"+c.key()+"|"+u.listenKey(), func() (types.Resource, error) {
			f, err := c.filter()
			if err != nil {
				return nil, err
			}
			return &listener.Listener{Name: lname, Address: laddr, FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{f}}}}, nil
		})
	}
	if u.Transparent && len(u.MatchAddresses) > 0 {
		c.name = upstreamID(u)
		c.addrs = u.MatchAddresses
		b.outbound = append(b.outbound, c)
	}
	if u.Transparent && u.DialedDirectly {
		b.addDirect(p, u)
	}
}

// PassthroughClusterPrefix starts the names of the clusters that send a
// transparent proxy's connections to an upstream's instance the app dialled
// directly: passthrough~<the upstream's SNI>.
const PassthroughClusterPrefix = "passthrough~"

// addDirect adds what reaches u's instances at their own addresses: a
// filter chain matching them, to an original-destination cluster over
// mTLS to u's service in the proxy's datacenter. Only the instances of
// that service there are matched (not a failover's or a redirect's, whose
// identity differs).
func (b *builder) addDirect(p *Proxy, u *Upstream) {
	dc := orDefault(u.Datacenter, p.Datacenter)
	var addrs []string
	add := func(eps []Endpoint) {
		for _, e := range eps {
			if ip, err := netip.ParseAddr(e.Address); err == nil && !slices.Contains(addrs, ip.String()) {
				addrs = append(addrs, ip.String())
			}
		}
	}
	if u.Chain == nil {
		if !u.PreparedQuery {
			add(u.Endpoints)
		}
	} else {
		for id, t := range u.Chain.Targets {
			if t.Service == u.DestinationName && t.Datacenter == dc {
				add(u.TargetEndpoints[id])
			}
		}
	}
	if len(addrs) == 0 {
		return
	}
	sort.Strings(addrs)
	sni := ClusterName(u.DestinationName, dc, p.TrustDomain)
	name := PassthroughClusterPrefix + sni
	b.add(resource.ClusterType, "direct|"+name+"|"+p.TrustDomain, func() (types.Resource, error) {
		ts, err := upstreamTLS(p.TrustDomain, sni, u.DestinationName, dc)
		if err != nil {
			return nil, err
		}
		return &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
			LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:       durationpb.New(5 * time.Second),
			TransportSocket:      ts,
		}, nil
	})
	b.outbound = append(b.outbound, outChain{name: name, addrs: addrs, stat: "upstream." + name, cluster: name, direct: true})
}

// addOutbound adds the outbound listener of a transparent proxy and, with
// passthrough, the original-destination cluster.
func (b *builder) addOutbound(o *Outbound) {
	port := o.Port
	if port == 0 {
		port = DefaultOutboundPort
	}
	chains := directOwned(b.outbound)
	sort.Slice(chains, func(i, j int) bool { return chains[i].name < chains[j].name })
	if o.Passthrough {
		b.add(resource.ClusterType, "origdst", func() (types.Resource, error) {
			return &cluster.Cluster{
				Name:                 OriginalDestinationCluster,
				ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
				LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
				ConnectTimeout:       durationpb.New(5 * time.Second),
			}, nil
		})
	}
	var kb strings.Builder
	fmt.Fprintf(&kb, "outbound|%d|%v", port, o.Passthrough)
	for _, c := range chains {
		kb.WriteString("|")
		kb.WriteString(c.key())
	}
	b.add(resource.ListenerType, kb.String(), func() (types.Resource, error) {
		return outboundListener(port, chains, o.Passthrough)
	})
}

// directOwned returns chains with the instance addresses of direct chains
// kept only where no other chain claims them (two services on one host, or
// an instance at an upstream's virtual IP): a connection to such an address
// cannot tell which service it is for, and goes where the listener's
// default sends it. A direct chain left with no address is dropped (a
// chain matching no address would match every one).
func directOwned(chains []outChain) []outChain {
	claims := map[string]int{}
	for _, c := range chains {
		for _, a := range c.addrs {
			claims[a]++
		}
	}
	out := make([]outChain, 0, len(chains))
	for _, c := range chains {
		if c.direct {
			var keep []string
			for _, a := range c.addrs {
				if claims[a] == 1 {
					keep = append(keep, a)
				}
			}
			if len(keep) == 0 {
				continue
			}
			c.addrs = keep
		}
		out = append(out, c)
	}
	return out
}

// outboundListener is the listener the app's redirected connections reach.
func outboundListener(port int, chains []outChain, passthrough bool) (*listener.Listener, error) {
	od, err := typedConfig(&originaldst.OriginalDst{})
	if err != nil {
		return nil, fmt.Errorf("xds: original_dst: %w", err)
	}
	l := &listener.Listener{
		Name:             "outbound_listener:127.0.0.1:" + strconv.Itoa(port),
		Address:          socketAddress("127.0.0.1", port),
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		ListenerFilters: []*listener.ListenerFilter{{Name: "envoy.filters.listener.original_dst",
			ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: od}}},
	}
	for _, c := range chains {
		f, err := c.filter()
		if err != nil {
			return nil, err
		}
		match := &listener.FilterChainMatch{}
		for _, a := range c.addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fmt.Errorf("xds: upstream %s: address %q: %w", c.name, a, err)
			}
			match.PrefixRanges = append(match.PrefixRanges, &core.CidrRange{AddressPrefix: ip.String(), PrefixLen: wrapperspb.UInt32(uint32(ip.BitLen()))})
		}
		l.FilterChains = append(l.FilterChains, &listener.FilterChain{Name: c.name, FilterChainMatch: match, Filters: []*listener.Filter{f}})
	}
	if passthrough {
		f, err := tcpProxyFilter("upstream."+OriginalDestinationCluster, OriginalDestinationCluster)
		if err != nil {
			return nil, err
		}
		l.DefaultFilterChain = &listener.FilterChain{Name: OriginalDestinationCluster, Filters: []*listener.Filter{f}}
	}
	return l, nil
}

// tcpProxyFilter sends a connection to clusterName.
func tcpProxyFilter(statPrefix, clusterName string) (*listener.Filter, error) {
	tp, err := typedConfig(&tcpproxy.TcpProxy{
		StatPrefix:       statPrefix,
		ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: clusterName},
	})
	if err != nil {
		return nil, fmt.Errorf("xds: tcp_proxy: %w", err)
	}
	return &listener.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listener.Filter_TypedConfig{TypedConfig: tp}}, nil
}

// validateTransparent checks the transparent upstreams of p: an outbound
// listener to be part of, valid addresses, none claimed by two upstreams.
func (p *Proxy) validateTransparent() error {
	claimed := map[netip.Addr]string{}
	for _, u := range p.Upstreams {
		if !u.Transparent {
			continue
		}
		if p.Outbound == nil {
			return fmt.Errorf("xds: upstream %q is transparent in a proxy without an outbound listener", u.DestinationName)
		}
		for _, a := range u.MatchAddresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return fmt.Errorf("xds: upstream %q: address %q: %w", u.DestinationName, a, err)
			}
			if other, ok := claimed[ip]; ok {
				return fmt.Errorf("xds: upstreams %q and %q both claim %s", other, u.DestinationName, a)
			}
			claimed[ip] = u.DestinationName
		}
	}
	if o := p.Outbound; o != nil && (o.Port < 0 || o.Port > 65535) {
		return fmt.Errorf("xds: outbound listener port %d", o.Port)
	}
	return nil
}
