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
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
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
	Name      string
	Endpoints []Endpoint
}

// MaxProxylessServices bounds the services one proxyless client may name.
const MaxProxylessServices = 256

// BuildProxyless returns a proxyless client's snapshot: per service, a
// listener named after the service with an API-listener
// HttpConnectionManager whose routes come over RDS (a route configuration
// of the same name), the cluster it routes to (EDS over ADS, round robin)
// and that cluster's healthy endpoints.
func BuildProxyless(p *Proxyless) (*cachev3.Snapshot, error) {
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
	for _, s := range svcs {
		if s.Name == "" {
			return nil, errors.New("xds: proxyless service without a name")
		}
		name := ClusterName(s.Name, p.Datacenter, p.TrustDomain)
		put(resource.ClusterType, &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
			ConnectTimeout:       durationpb.New(5 * time.Second),
			LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		})
		cla := loadAssignment(name, s.Endpoints)
		// grpc-go ignores localities without a weight.
		for _, l := range cla.Endpoints {
			l.Locality = &core.Locality{}
			l.LoadBalancingWeight = wrapperspb.UInt32(1)
		}
		put(resource.EndpointType, cla)
		// L4 only: one route to the service's cluster. The discovery
		// chain's L7 routes (splits, retries, timeouts) go here.
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

// proxylessConsistent is Snapshot.Consistent for API listeners, whose RDS
// references go-control-plane does not follow: every listener's route
// configuration, every route's cluster and every EDS cluster's endpoints
// are in the snapshot, and nothing else is.
func proxylessConsistent(snap *cachev3.Snapshot) error {
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
				if _, ok := clusters[rt.GetRoute().GetCluster()]; !ok {
					return fmt.Errorf("xds: inconsistent snapshot: route %s names missing cluster %q", name, rt.GetRoute().GetCluster())
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
