package xds

import (
	"errors"
	"fmt"
	"sort"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tribune-mesh/tribune/discoverychain"
)

// Proxyless is a gRPC client that resolves xds:///<service> itself
// (grpc-go's xDS resolver): it asks for listeners by service name and
// balances over the services' healthy instances directly, without a
// sidecar.
type Proxyless struct {
	// ID is the client's node id.
	ID          string
	Datacenter  string
	TrustDomain string
	// Services are the services the client named, with their instances.
	Services []ProxylessService
}

// ProxylessService is one service a proxyless client dials.
type ProxylessService struct {
	Name string
	// Endpoints are the service's instances (without a Chain).
	Endpoints []Endpoint
	// Chain is the service's compiled discovery chain, for a service
	// routed at L7 (http2, grpc): the route configuration carries its
	// router's matches and its splitter's weights, and each resolver's
	// target is a cluster of its own with TargetEndpoints[target ID]
	// (its subset's instances). A resolver with failover targets keeps
	// its cluster and serves in it the instances of the first target, in
	// failover order, with a healthy one. nil: one cluster of Endpoints.
	Chain           *discoverychain.Chain
	TargetEndpoints map[string][]Endpoint
}

// MaxProxylessServices bounds the services one proxyless client may name.
const MaxProxylessServices = 256

// BuildProxyless returns a proxyless client's snapshot: per service, a
// listener named after the service with an API-listener
// HttpConnectionManager whose routes come over RDS (a route configuration
// of the same name), the cluster it routes to (EDS over ADS, round robin)
// and that cluster's healthy endpoints.
func BuildProxyless(p *Proxyless) (*Snapshot, error) {
	if p.ID == "" || p.Datacenter == "" || p.TrustDomain == "" {
		return nil, errors.New("xds: proxyless client ID, Datacenter and TrustDomain must be set")
	}
	if len(p.Services) > MaxProxylessServices {
		return nil, fmt.Errorf("xds: %d services, more than %d", len(p.Services), MaxProxylessServices)
	}
	svcs := append([]ProxylessService(nil), p.Services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	routerCfg, err := anypb.New(&router.Router{})
	if err != nil {
		return nil, fmt.Errorf("xds: router: %w", err)
	}
	b := newBuilder(nil)
	put := func(typ resource.Type, r types.Resource) {
		b.add(typ, "", func() (types.Resource, error) { return r, nil })
	}
	// addCluster adds an EDS cluster (round robin) and its endpoints.
	addCluster := func(name string, eps []Endpoint) {
		put(resource.ClusterType, &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
			ConnectTimeout:       durationpb.New(5 * time.Second),
			LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		})
		cla := loadAssignment(name, eps)
		// grpc-go ignores localities without a weight.
		for _, l := range cla.Endpoints {
			l.Locality = &core.Locality{}
			l.LoadBalancingWeight = wrapperspb.UInt32(1)
		}
		put(resource.EndpointType, cla)
	}
	for _, s := range svcs {
		if s.Name == "" {
			return nil, errors.New("xds: proxyless service without a name")
		}
		name := ClusterName(s.Name, p.Datacenter, p.TrustDomain)
		if s.Chain != nil {
			rc, err := proxylessChain(s, addCluster)
			if err != nil {
				return nil, err
			}
			put(resource.RouteType, rc)
		} else {
			addCluster(name, s.Endpoints)
			// One route to the service's cluster.
			put(resource.RouteType, &route.RouteConfiguration{
				Name: s.Name,
				VirtualHosts: []*route.VirtualHost{{
					Name:    s.Name,
					Domains: []string{"*"},
					Routes: []*route.Route{{
						Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: ""}},
						Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: name}}},
					}},
				}},
			})
		}
		m, err := anypb.New(&hcm.HttpConnectionManager{
			StatPrefix: "upstream." + name,
			RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
				RouteConfigName: s.Name,
				ConfigSource:    adsSource(),
			}},
			HttpFilters: []*hcm.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: routerCfg}}},
		})
		if err != nil {
			return nil, fmt.Errorf("xds: http connection manager: %w", err)
		}
		put(resource.ListenerType, &listener.Listener{Name: s.Name, ApiListener: &listener.ApiListener{ApiListener: m}})
	}
	snap, err := b.snapshot()
	if err != nil {
		return nil, err
	}
	if err := proxylessConsistent(snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// proxylessChain adds, through addCluster, the cluster of each resolver
// target of s's chain, and returns the route configuration its router and
// splitter make, named after the service.
func proxylessChain(s ProxylessService, addCluster func(name string, eps []Endpoint)) (*route.RouteConfiguration, error) {
	ch := s.Chain
	if ch.Targets == nil || ch.Nodes[ch.StartNode] == nil {
		return nil, fmt.Errorf("xds: proxyless service %s: chain without a start node", s.Name)
	}
	clusters := map[string]string{}      // resolver node key -> cluster
	endpoints := map[string][]Endpoint{} // cluster -> its endpoints
	for key, n := range ch.Nodes {
		if n.Type != discoverychain.NodeTypeResolver {
			continue
		}
		if n.Resolver == nil {
			return nil, fmt.Errorf("xds: chain %s: resolver node %s has no resolver", ch.ServiceName, key)
		}
		t, err := chainTarget(ch, n.Resolver.Target)
		if err != nil {
			return nil, err
		}
		name := clusterName(ch, t)
		clusters[key] = name
		endpoints[name], err = failoverEndpoints(s, n.Resolver)
		if err != nil {
			return nil, err
		}
	}
	rc, err := chainRouteConfig(s.Name, ch, clusters)
	if err != nil {
		return nil, err
	}
	// Only the clusters the routes use: a state-of-the-world client asks
	// for exactly those, and the cache answers only a request that names
	// every cluster of the snapshot (a split of weight 0 uses none).
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			for _, c := range routeClusters(rt) {
				addCluster(c, endpoints[c])
			}
		}
	}
	return rc, nil
}

// failoverEndpoints are the endpoints a proxyless client gets for a
// resolver: its target's, or when none of them is healthy, those of the
// first of its failover targets, in order, with a healthy one. The client sees one cluster
// whose endpoints move (as the agent follows every target's health), not
// Envoy's aggregate of one cluster per target: grpc-go learns an
// aggregate's member clusters only after the aggregate, and an ADS cache
// answers a cluster request only when it names every cluster.
func failoverEndpoints(s ProxylessService, r *discoverychain.Resolver) ([]Endpoint, error) {
	eps := s.TargetEndpoints[r.Target]
	if anyHealthy(eps) || r.Failover == nil {
		return eps, nil
	}
	for _, id := range r.Failover.Targets {
		if _, err := chainTarget(s.Chain, id); err != nil {
			return nil, err
		}
		if fe := s.TargetEndpoints[id]; anyHealthy(fe) {
			return fe, nil
		}
	}
	return eps, nil
}

func anyHealthy(eps []Endpoint) bool {
	for _, e := range eps {
		if e.Healthy {
			return true
		}
	}
	return false
}

// routeClusters are the clusters a route sends to.
func routeClusters(rt *route.Route) []string {
	if c := rt.GetRoute().GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, w := range rt.GetRoute().GetWeightedClusters().GetClusters() {
		out = append(out, w.GetName())
	}
	return out
}

// proxylessConsistent is Snapshot.Consistent for API listeners, whose RDS
// references go-control-plane does not follow: every listener's route
// configuration, every route's cluster and every EDS cluster's endpoints
// are in the snapshot, and nothing else is.
func proxylessConsistent(snap *Snapshot) error {
	routes := snap.GetResources(resource.RouteType)
	clusters := snap.GetResources(resource.ClusterType)
	eps := snap.GetResources(resource.EndpointType)
	for name, r := range snap.GetResources(resource.ListenerType) {
		var m hcm.HttpConnectionManager
		if err := r.(*listener.Listener).GetApiListener().GetApiListener().UnmarshalTo(&m); err != nil {
			return fmt.Errorf("xds: inconsistent snapshot: listener %s: %w", name, err)
		}
		if _, ok := routes[m.GetRds().GetRouteConfigName()]; !ok {
			return fmt.Errorf("xds: inconsistent snapshot: listener %s names missing route %q", name, m.GetRds().GetRouteConfigName())
		}
	}
	if len(routes) != len(snap.GetResources(resource.ListenerType)) {
		return fmt.Errorf("xds: inconsistent snapshot: %d routes for %d listeners", len(routes), len(snap.GetResources(resource.ListenerType)))
	}
	for name, r := range routes {
		for _, vh := range r.(*route.RouteConfiguration).GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				cs := routeClusters(rt)
				if len(cs) == 0 {
					return fmt.Errorf("xds: inconsistent snapshot: route %s leads to no cluster", name)
				}
				for _, c := range cs {
					if _, ok := clusters[c]; !ok {
						return fmt.Errorf("xds: inconsistent snapshot: route %s names missing cluster %q", name, c)
					}
				}
			}
		}
	}
	for name := range clusters {
		if _, ok := eps[name]; !ok {
			return fmt.Errorf("xds: inconsistent snapshot: cluster %s has no endpoints", name)
		}
	}
	if len(eps) != len(clusters) {
		return fmt.Errorf("xds: inconsistent snapshot: %d endpoint sets for %d clusters", len(eps), len(clusters))
	}
	return nil
}
