package xds

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	aggregate "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/aggregate/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/discoverychain"
)

// An upstream with a compiled discovery chain (Upstream.Chain) gets, as
// Consul generates them:
//   - one EDS cluster per resolver target, named by the target's SNI
//     ([subset.]service.default.<dc>.internal.<trust domain>), with TLS to
//     the SPIFFE ID of the target's service in the target's datacenter, the
//     resolver's connect timeout and load-balancing policy;
//   - for a resolver with failover, an aggregate cluster
//     (envoy.clusters.aggregate) named by the primary target's SNI whose
//     clusters are failover-target~<i>~<sni>, the primary first, each an
//     EDS cluster of its own target: Envoy uses the first with healthy
//     endpoints;
//   - tcp: the outbound listener proxies to the start resolver's cluster
//     (stat prefix upstream.<service>.default.default.<dc>, as Consul's);
//     http, http2, grpc: the outbound listener runs an HTTP connection
//     manager over RDS, and the route configuration (l7.go) carries the
//     router's matches and the splitter's weights.
// Endpoints of a target are those the caller read for it (already filtered
// by the subset's filter and health): the remote instances' addresses for
// another datacenter's target (mesh_gateway mode none, Consul's default).

// failoverClusterPrefix starts the names of an aggregate cluster's members.
const failoverClusterPrefix = "failover-target~"

// edsCluster describes one upstream EDS cluster.
type edsCluster struct {
	name string
	sni  string
	// service and dc are the SPIFFE identity the instances must present.
	service, dc string
	timeout     time.Duration
	lb          *catalog.LoadBalancer
	http2       bool
	endpoints   []Endpoint
}

// addEDSCluster adds an upstream cluster over mTLS and its endpoints.
func (b *builder) addEDSCluster(p *Proxy, c edsCluster) {
	if c.timeout <= 0 {
		c.timeout = discoverychain.DefaultConnectTimeout
	}
	// The TLS context names the proxy's secrets rather than holding
	// them: proxies of different services share the cluster.
	key := strings.Join([]string{"up", c.name, c.sni, p.TrustDomain, c.service, c.dc, c.timeout.String(), lbKey(c.lb), strconv.FormatBool(c.http2)}, "|")
	b.add(resource.ClusterType, key, func() (types.Resource, error) {
		ts, err := upstreamTLS(p.TrustDomain, c.sni, c.service, c.dc)
		if err != nil {
			return nil, err
		}
		cl := &cluster.Cluster{
			Name:                 c.name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
			ConnectTimeout:       durationpb.New(c.timeout),
			TransportSocket:      ts,
		}
		setLoadBalancer(cl, c.lb)
		if c.http2 {
			if err := setHTTP2(cl); err != nil {
				return nil, err
			}
		}
		return cl, nil
	})
	b.add(resource.EndpointType, "eds|"+c.name+"|"+endpointsKey(c.endpoints), func() (types.Resource, error) {
		return loadAssignment(c.name, c.endpoints), nil
	})
}

// upstreamTLS is the mTLS of a connection to a mesh service's instances:
// the proxy's certificate, SNI sni, and the SPIFFE ID of service in dc
// required of the peer.
func upstreamTLS(trustDomain, sni, service, dc string) (*core.TransportSocket, error) {
	spiffe := connect.ServiceID(trustDomain, dc, service).String()
	return transportSocket(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: commonTLS(&tlsv3.CertificateValidationContext{
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: spiffe}},
			}},
		}),
	})
}

// lbKey identifies a load-balancer configuration.
func lbKey(lb *catalog.LoadBalancer) string {
	if lb == nil {
		return ""
	}
	raw, _ := json.Marshal(lb) // plain data: cannot fail
	return string(raw)
}

// setLoadBalancer sets a cluster's policy from a resolver's LoadBalancer
// (Consul's policies: round_robin, the default, least_request, ring_hash,
// maglev, random). Hash policies belong to routes (l7.go).
func setLoadBalancer(c *cluster.Cluster, lb *catalog.LoadBalancer) {
	if lb == nil {
		return
	}
	switch lb.Policy {
	case "least_request":
		c.LbPolicy = cluster.Cluster_LEAST_REQUEST
		if lr := lb.LeastRequestConfig; lr != nil && lr.ChoiceCount > 0 {
			c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{
				ChoiceCount: wrapperspb.UInt32(lr.ChoiceCount),
			}}
		}
	case "ring_hash":
		c.LbPolicy = cluster.Cluster_RING_HASH
		if rh := lb.RingHashConfig; rh != nil {
			cfg := &cluster.Cluster_RingHashLbConfig{}
			if rh.MinimumRingSize > 0 {
				cfg.MinimumRingSize = wrapperspb.UInt64(rh.MinimumRingSize)
			}
			if rh.MaximumRingSize > 0 {
				cfg.MaximumRingSize = wrapperspb.UInt64(rh.MaximumRingSize)
			}
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: cfg}
		}
	case "maglev":
		c.LbPolicy = cluster.Cluster_MAGLEV
	case "random":
		c.LbPolicy = cluster.Cluster_RANDOM
	}
}

// setHTTP2 makes a cluster speak HTTP/2 to its endpoints (http2 and grpc
// services).
func setHTTP2(c *cluster.Cluster) error {
	opts, err := typedConfig(&upstreamhttp.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return fmt.Errorf("xds: http protocol options: %w", err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	return nil
}

// isHTTP2 reports whether a protocol needs HTTP/2 upstream.
func isHTTP2(protocol string) bool { return protocol == "http2" || protocol == "grpc" }

// isL7 reports whether a protocol is routed at L7.
func isL7(protocol string) bool { return catalog.IsHTTPProtocol(protocol) }

// chainTarget returns the target of a chain by ID, refusing what Tribune
// cannot serve (peers' services).
func chainTarget(ch *discoverychain.Chain, id string) (*discoverychain.Target, error) {
	t := ch.Targets[id]
	if t == nil {
		return nil, fmt.Errorf("xds: chain %s names unknown target %q", ch.ServiceName, id)
	}
	if t.External || t.Peer != "" {
		return nil, fmt.Errorf("xds: chain %s: target %s is a cluster peer's, which Tribune does not serve", ch.ServiceName, id)
	}
	return t, nil
}

// resolverCluster adds the clusters of a resolver node (with its failover)
// and returns the name of the cluster its requests go to.
func (b *builder) resolverCluster(p *Proxy, u *Upstream, node *discoverychain.Node) (string, error) {
	r := node.Resolver
	if r == nil {
		return "", fmt.Errorf("xds: chain %s: resolver node %s has no resolver", u.Chain.ServiceName, node.Name)
	}
	primary, err := chainTarget(u.Chain, r.Target)
	if err != nil {
		return "", err
	}
	http2 := isHTTP2(u.Chain.Protocol)
	targets := []*discoverychain.Target{primary}
	if r.Failover != nil {
		for _, id := range r.Failover.Targets {
			ft, err := chainTarget(u.Chain, id)
			if err != nil {
				return "", err
			}
			targets = append(targets, ft)
		}
	}
	name := clusterName(u.Chain, primary)
	if len(targets) == 1 {
		b.addEDSCluster(p, targetCluster(name, primary, node, http2, u.TargetEndpoints[primary.ID]))
		return name, nil
	}
	members := make([]string, len(targets))
	for i, ft := range targets {
		members[i] = failoverClusterPrefix + strconv.Itoa(i) + "~" + clusterName(u.Chain, ft)
		b.addEDSCluster(p, targetCluster(members[i], ft, node, http2, u.TargetEndpoints[ft.ID]))
	}
	timeout := primary.ConnectTimeout.Std()
	b.add(resource.ClusterType, "agg|"+name+"|"+timeout.String()+"|"+strings.Join(members, ","), func() (types.Resource, error) {
		cfg, err := typedConfig(&aggregate.ClusterConfig{Clusters: members})
		if err != nil {
			return nil, fmt.Errorf("xds: aggregate cluster: %w", err)
		}
		return &cluster.Cluster{
			Name:           name,
			ConnectTimeout: durationpb.New(timeout),
			LbPolicy:       cluster.Cluster_CLUSTER_PROVIDED,
			ClusterDiscoveryType: &cluster.Cluster_ClusterType{ClusterType: &cluster.Cluster_CustomClusterType{
				Name: "envoy.clusters.aggregate", TypedConfig: cfg,
			}},
		}, nil
	})
	return name, nil
}

// clusterName is the name of a target's cluster: its SNI, prefixed with
// the chain's customization hash when the upstream overrides the chain
// (protocol, connect timeout), as Consul names them, so that two upstreams
// of one service with different overrides get different clusters.
func clusterName(ch *discoverychain.Chain, t *discoverychain.Target) string {
	if ch.CustomizationHash != "" {
		return ch.CustomizationHash + "~" + t.SNI
	}
	return t.SNI
}

// targetCluster describes the EDS cluster of one chain target.
func targetCluster(name string, t *discoverychain.Target, node *discoverychain.Node, http2 bool, eps []Endpoint) edsCluster {
	return edsCluster{
		name: name, sni: t.SNI, service: t.Service, dc: t.Datacenter,
		timeout: t.ConnectTimeout.Std(), lb: node.LoadBalancer, http2: http2, endpoints: eps,
	}
}

// addChainUpstream adds what an upstream with a compiled chain needs:
// its clusters and endpoints, its outbound listener and, for an L7
// protocol, its route configuration.
func (b *builder) addChainUpstream(p *Proxy, u *Upstream) error {
	ch := u.Chain
	if ch.Targets == nil || ch.Nodes[ch.StartNode] == nil {
		return fmt.Errorf("xds: upstream %s: chain without a start node", u.DestinationName)
	}
	// Consul's stat prefix of a chained upstream: its chain's service,
	// namespace, partition and datacenter.
	stat := "upstream." + ch.ServiceName + ".default.default." + ch.Datacenter
	if !isL7(ch.Protocol) {
		start := ch.Nodes[ch.StartNode]
		if start.Type != discoverychain.NodeTypeResolver {
			return fmt.Errorf("xds: upstream %s: %s chain starts at a %s", u.DestinationName, ch.Protocol, start.Type)
		}
		name, err := b.resolverCluster(p, u, start)
		if err != nil {
			return err
		}
		b.upstreamListener(p, u, outChain{stat: stat, cluster: name})
		return nil
	}
	clusters := map[string]string{} // resolver node key -> cluster
	for key, n := range ch.Nodes {
		if n.Type != discoverychain.NodeTypeResolver {
			continue
		}
		name, err := b.resolverCluster(p, u, n)
		if err != nil {
			return err
		}
		clusters[key] = name
	}
	// Consul names the route configuration after the upstream ID; two
	// upstreams of one ID (the same service and datacenter, other
	// overrides: another chain) must not share one, so the second is
	// named after its listener, unique in the proxy.
	routeName := upstreamID(u)
	if slices.Contains(b.routeRefs, routeName) {
		routeName, _ = u.listenAt()
	}
	ck := u.ChainKey
	if ck == "" {
		ck = ChainKey(ch)
	}
	b.add(resource.RouteType, "rds|"+routeName+"|"+ck, func() (types.Resource, error) {
		return chainRouteConfig(routeName, ch, clusters)
	})
	b.routeRefs = append(b.routeRefs, routeName)
	b.upstreamListener(p, u, outChain{stat: stat, route: routeName})
	return nil
}

// upstreamID names an upstream as Consul does: its service (or
// prepared_query:<query>), with ?dc=<dc> when it names a datacenter (even the proxy's own: an upstream
// of db and one of db in dc1 are two upstreams).
func upstreamID(u *Upstream) string {
	id := u.DestinationName
	if u.PreparedQuery {
		id = "prepared_query:" + id
	}
	if u.Datacenter != "" {
		return id + "?dc=" + u.Datacenter
	}
	return id
}

// ChainKey identifies a compiled chain's content, for the memo of built
// resources: callers that share one compiled chain between proxies compute
// it once and pass it in Upstream.ChainKey.
func ChainKey(ch *discoverychain.Chain) string {
	raw, err := json.Marshal(ch)
	if err != nil {
		// Plain data: cannot happen. A key of this chain object only
		// costs rebuilds, never a wrong reuse.
		return fmt.Sprintf("%p", ch)
	}
	return fingerprint(string(raw))
}
