package xds

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Exposed paths (Proxy.Expose.Paths): a path of the local app served over
// plain HTTP on a listener of its own, outside the mesh's mTLS, for health
// probes and metrics scrapers that hold no certificate. The listener is
// named exposed_path_<the path without its non-alphanumeric characters>,
// its cluster exposed_cluster_<local port>, as Consul names them.

// ExposePath is one exposed path: requests for Path on ListenerPort go to
// the local app's LocalPathPort, over HTTP/2 when Protocol is "http2".
type ExposePath struct {
	Path          string
	LocalPathPort int
	ListenerPort  int
	Protocol      string
}

// Limits on exposed paths.
const (
	MaxExposePaths   = 256
	maxExposePathLen = 1024
)

// nonAlnum matches what an exposed path's listener name leaves out.
var nonAlnum = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// validateExpose checks p's exposed paths: absolute paths, ports in range,
// one path per listener port, none on the public port.
func (p *Proxy) validateExpose() error {
	if len(p.Expose) > MaxExposePaths {
		return fmt.Errorf("xds: %d exposed paths, more than %d", len(p.Expose), MaxExposePaths)
	}
	ports := map[int]bool{p.PublicPort: true}
	for _, e := range p.Expose {
		if len(e.Path) == 0 || e.Path[0] != '/' || len(e.Path) > maxExposePathLen {
			return fmt.Errorf("xds: exposed path %q: not an absolute path of at most %d bytes", e.Path, maxExposePathLen)
		}
		if e.LocalPathPort <= 0 || e.LocalPathPort > 65535 || e.ListenerPort <= 0 || e.ListenerPort > 65535 {
			return fmt.Errorf("xds: exposed path %q: ports %d -> %d out of range", e.Path, e.ListenerPort, e.LocalPathPort)
		}
		if ports[e.ListenerPort] {
			return fmt.Errorf("xds: exposed path %q: listener port %d taken", e.Path, e.ListenerPort)
		}
		ports[e.ListenerPort] = true
		switch e.Protocol {
		case "", "http", "http2":
		default:
			return fmt.Errorf("xds: exposed path %q: protocol %q, want http or http2", e.Path, e.Protocol)
		}
	}
	return nil
}

// addExposed adds the listeners and clusters of p's exposed paths.
func (b *builder) addExposed(p *Proxy) {
	if len(p.Expose) == 0 {
		return
	}
	appAddr := orDefault(p.LocalAppAddress, "127.0.0.1")
	paths := append([]ExposePath(nil), p.Expose...)
	sort.Slice(paths, func(i, j int) bool { return paths[i].ListenerPort < paths[j].ListenerPort })
	names := map[string]bool{}
	for _, e := range paths {
		http2 := e.Protocol == "http2"
		cname := "exposed_cluster_" + strconv.Itoa(e.LocalPathPort)
		b.add(resource.ClusterType, fmt.Sprintf("exposed|%s|%d|%v", appAddr, e.LocalPathPort, http2), func() (types.Resource, error) {
			c := &cluster.Cluster{
				Name:                 cname,
				ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
				ConnectTimeout:       durationpb.New(5 * time.Second),
				LoadAssignment:       loadAssignment(cname, []Endpoint{{Address: appAddr, Port: e.LocalPathPort, Healthy: true}}),
			}
			if http2 {
				if err := setHTTP2(c); err != nil {
					return nil, err
				}
			}
			return c, nil
		})
		// Paths that differ only in what the name leaves out get the
		// listener port too: listener names are unique in a proxy.
		lname := "exposed_path_" + nonAlnum.ReplaceAllString(e.Path, "")
		if names[lname] {
			lname += "_" + strconv.Itoa(e.ListenerPort)
		}
		names[lname] = true
		b.add(resource.ListenerType, fmt.Sprintf("exposed|%s|%s|%d|%s|%s", lname, p.PublicAddress, e.ListenerPort, e.Path, cname), func() (types.Resource, error) {
			return exposedListener(lname, p.PublicAddress, e, cname)
		})
	}
}

// exposedListener serves one exposed path: that exact path to cluster,
// anything else 404 (Envoy's answer to a request no route matches).
func exposedListener(name, addr string, e ExposePath, clusterName string) (*listener.Listener, error) {
	rt, err := httpFilter("envoy.filters.http.router", &router.Router{})
	if err != nil {
		return nil, err
	}
	cfg := &hcm.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
			Name: name,
			VirtualHosts: []*route.VirtualHost{{
				Name:    name,
				Domains: []string{"*"},
				Routes: []*route.Route{{
					Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: e.Path}},
					Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName}}},
				}},
			}},
		}},
		HttpFilters: []*hcm.HttpFilter{rt},
	}
	f, err := hcmFilter(cfg)
	if err != nil {
		return nil, err
	}
	return &listener.Listener{
		Name:         name,
		Address:      socketAddress(addr, e.ListenerPort),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{f}}},
	}, nil
}
