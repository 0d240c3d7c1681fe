// Package xds turns what a sidecar proxy needs (its service's local app, its
// upstreams' healthy endpoints, its leaf certificate, the CA roots and the
// intentions that protect its service) into a consistent Envoy configuration
// and serves it over ADS with go-control-plane.
//
// As in go-control-plane's own split, Build decides (a pure function from a
// Proxy to a snapshot) and Server delivers (streams, ACK/NACK tracking). The
// package does not watch the catalog: its caller does and calls Update.
package xds

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/discoverychain"
)

// Proxy is everything one sidecar's configuration is built from.
type Proxy struct {
	// ID is the proxy's service ID, the Envoy node id.
	ID string
	// Service is the service the sidecar fronts (its destination name).
	Service     string
	Datacenter  string
	TrustDomain string
	// PublicAddress and PublicPort are where the sidecar accepts mTLS.
	PublicAddress string
	PublicPort    int
	// LocalAppAddress and LocalAppPort are the app behind the sidecar.
	LocalAppAddress string
	LocalAppPort    int
	Upstreams       []Upstream
	// Leaf is the proxy's certificate and key (PEM).
	LeafCert, LeafKey string
	// Roots are the CA root certificates (PEM) peers must chain to.
	Roots []string
	// Intentions are those whose destination is Service or *.
	Intentions []*catalog.Intention
	// DefaultAllow is what happens where no intention matches.
	DefaultAllow bool
	// Protocol is the service's protocol (service-defaults, proxy-defaults
	// or the proxy's own config): http, http2 and grpc make the public
	// listener L7, with HTTP RBAC; empty: tcp.
	Protocol string
	// Outbound, when set, makes the proxy transparent: its outbound
	// listener reaches the upstreams marked Transparent (transparent.go).
	Outbound *Outbound
	// Expose are the paths of the local app served without mTLS
	// (expose.go).
	Expose []ExposePath
}

// Upstream is a service the app reaches through a local port.
type Upstream struct {
	DestinationName  string
	Datacenter       string // empty: the proxy's
	LocalBindAddress string // empty: 127.0.0.1
	LocalBindPort    int
	ConnectTimeout   time.Duration // zero: 5s
	// Endpoints are the instances of DestinationName (without a Chain).
	Endpoints []Endpoint
	// Chain is the upstream's compiled discovery chain (chain.go); nil:
	// one cluster for DestinationName with Endpoints, what the chain of a
	// service without config entries compiles to.
	Chain *discoverychain.Chain
	// TargetEndpoints are the instances of each of Chain's targets, by
	// target ID, filtered by the target's subset.
	TargetEndpoints map[string][]Endpoint
	// ChainKey identifies Chain's content (ChainKey); empty: computed.
	ChainKey string
	// PreparedQuery: DestinationName names a prepared query (Consul's
	// destination_type "prepared_query"), whose mesh Endpoints are the
	// instances of QueryService in QueryDatacenter (what the query
	// resolved to, failovers included): their SPIFFE ID is checked. The
	// cluster is named (and its SNI is) QueryClusterName.
	PreparedQuery                 bool
	QueryService, QueryDatacenter string
	// LocalBindSocketPath, when set, is the unix socket the listener
	// binds instead of an address and port, with LocalBindSocketMode's
	// permissions (0 leaves Envoy's default).
	LocalBindSocketPath string
	LocalBindSocketMode uint32
	// Transparent: the app also reaches the upstream through the outbound
	// listener of a transparent proxy, by dialling one of MatchAddresses
	// (the service's virtual IPs). A transparent upstream needs no bind
	// port.
	Transparent    bool
	MatchAddresses []string
	// DialedDirectly: the app of a transparent proxy may also dial the
	// upstream's instances at their own addresses (Consul's
	// TransparentProxy.DialedDirectly): connections to those addresses
	// go there, over mTLS to the instance's sidecar.
	DialedDirectly bool
}

// listenAt returns the name of u's outbound listener and its address:
// <upstream>:<address>:<port>, or <upstream>:<socket path> for a unix
// socket, as Consul names them.
func (u *Upstream) listenAt() (string, *core.Address) {
	if u.LocalBindSocketPath != "" {
		return upstreamID(u) + ":" + u.LocalBindSocketPath,
			&core.Address{Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: u.LocalBindSocketPath, Mode: u.LocalBindSocketMode}}}
	}
	bind := orDefault(u.LocalBindAddress, "127.0.0.1")
	return fmt.Sprintf("%s:%s:%d", upstreamID(u), bind, u.LocalBindPort), socketAddress(bind, u.LocalBindPort)
}

// listenKey identifies u's listener address for the memo.
func (u *Upstream) listenKey() string {
	name, _ := u.listenAt()
	return name + "|" + strconv.FormatUint(uint64(u.LocalBindSocketMode), 8)
}

// Endpoint is one instance of an upstream's sidecar.
type Endpoint struct {
	Address string
	Port    int
	Healthy bool
}

// Limits on one proxy's configuration.
const (
	MaxUpstreams = 1024
	MaxEndpoints = 100000
)

// LocalAppCluster is the name of the cluster of the app behind the sidecar.
const LocalAppCluster = "local_app"

// ClusterName returns the name of an upstream's cluster, which is also the
// SNI its sidecar is reached with: <service>.default.<dc>.internal.<trust
// domain>.
func ClusterName(service, dc, trustDomain string) string {
	return fmt.Sprintf("%s.%s.%s.internal.%s", service, connect.DefaultNamespace, dc, trustDomain)
}

// QueryClusterName returns the name (and SNI) of a prepared query
// upstream's cluster: <query>.default.<dc>.query.<trust domain>.
func QueryClusterName(query, dc, trustDomain string) string {
	return fmt.Sprintf("%s.%s.%s.query.%s", query, connect.DefaultNamespace, dc, trustDomain)
}

func (p *Proxy) validate() error {
	if p.ID == "" || p.Service == "" || p.Datacenter == "" || p.TrustDomain == "" {
		return errors.New("xds: proxy ID, Service, Datacenter and TrustDomain must be set")
	}
	if p.LeafCert == "" || p.LeafKey == "" || len(p.Roots) == 0 {
		return errors.New("xds: proxy has no leaf certificate or no roots yet")
	}
	if len(p.Upstreams) > MaxUpstreams {
		return fmt.Errorf("xds: %d upstreams, more than %d", len(p.Upstreams), MaxUpstreams)
	}
	n := 0
	seen := map[string]bool{}
	for _, u := range p.Upstreams {
		n += len(u.Endpoints)
		for _, eps := range u.TargetEndpoints {
			n += len(eps)
		}
		bind := net.JoinHostPort(orDefault(u.LocalBindAddress, "127.0.0.1"), strconv.Itoa(u.LocalBindPort))
		if u.LocalBindSocketPath != "" {
			bind = "unix:" + u.LocalBindSocketPath
			if u.LocalBindPort != 0 || u.LocalBindSocketMode > 0o777 {
				return fmt.Errorf("xds: upstream %q: a socket path with a port, or a bad socket mode %o", u.DestinationName, u.LocalBindSocketMode)
			}
		} else if u.LocalBindPort == 0 && u.Transparent {
			bind = "" // reached through the outbound listener only
		} else if u.LocalBindPort <= 0 || u.LocalBindPort > 65535 {
			return fmt.Errorf("xds: upstream %q needs a bind port or socket path", u.DestinationName)
		}
		if u.DestinationName == "" {
			return fmt.Errorf("xds: an upstream needs a destination")
		}
		if bind != "" && seen[bind] {
			return fmt.Errorf("xds: two upstreams bind %s", bind)
		}
		seen[bind] = true
	}
	if n > MaxEndpoints {
		return fmt.Errorf("xds: %d endpoints, more than %d", n, MaxEndpoints)
	}
	if err := p.validateExpose(); err != nil {
		return err
	}
	return p.validateTransparent()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Build returns the proxy's snapshot: clusters, endpoints and listeners,
// mutually consistent, versioned by a hash of their content (an unchanged
// proxy gets the same version, so Envoy sees no update).
func Build(p *Proxy) (*Snapshot, error) { return BuildMemo(p, nil) }

// BuildMemo is Build reusing, through m, the resources (and their hashes)
// built before from the same inputs: a proxy whose endpoints changed
// rebuilds only its endpoints, and proxies sharing an upstream share its
// endpoints and outbound listener. A nil m builds everything. The snapshot
// carries its delta version map, so nothing is encoded twice.
func BuildMemo(p *Proxy, m *Memo) (*Snapshot, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b := newBuilder(m)
	b.addSecrets(p)

	appAddr := orDefault(p.LocalAppAddress, "127.0.0.1")
	b.add(resource.ClusterType, fmt.Sprintf("app|%s|%d|%v", appAddr, p.LocalAppPort, isHTTP2(p.Protocol)), func() (types.Resource, error) {
		c := &cluster.Cluster{
			Name:                 LocalAppCluster,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(5 * time.Second),
			LoadAssignment:       loadAssignment(LocalAppCluster, []Endpoint{{Address: appAddr, Port: p.LocalAppPort, Healthy: true}}),
		}
		if isHTTP2(p.Protocol) {
			if err := setHTTP2(c); err != nil {
				return nil, err
			}
		}
		return c, nil
	})

	ups := append([]Upstream(nil), p.Upstreams...)
	sort.Slice(ups, func(i, j int) bool { return ups[i].LocalBindPort < ups[j].LocalBindPort })
	for i := range ups {
		u := &ups[i]
		if u.Chain != nil {
			if err := b.addChainUpstream(p, u); err != nil {
				return nil, err
			}
			continue
		}
		// No chain: the default chain's one cluster, L4; or a prepared
		// query's.
		dc := orDefault(u.Datacenter, p.Datacenter)
		name := ClusterName(u.DestinationName, dc, p.TrustDomain)
		c := edsCluster{name: name, sni: name, service: u.DestinationName, dc: dc, timeout: u.ConnectTimeout, endpoints: u.Endpoints}
		if u.PreparedQuery {
			name = QueryClusterName(u.DestinationName, dc, p.TrustDomain)
			c.name, c.sni = name, name
			c.service, c.dc = orDefault(u.QueryService, u.DestinationName), orDefault(u.QueryDatacenter, dc)
		}
		b.addEDSCluster(p, c)
		b.upstreamListener(p, u, outChain{stat: "upstream." + name, cluster: name})
	}
	if p.Outbound != nil {
		b.addOutbound(p.Outbound)
	}
	b.addExposed(p)

	pubName := fmt.Sprintf("public_listener:%s:%d", p.PublicAddress, p.PublicPort)
	b.add(resource.ListenerType, "pub|"+pubName+"|"+p.Service+"|"+p.TrustDomain+"|"+strconv.FormatBool(p.DefaultAllow)+"|"+strconv.FormatBool(isL7(p.Protocol))+"|"+intentionsKey(p), func() (types.Resource, error) {
		// The TLS context names the secrets: the same for every proxy.
		ts, err := b.shared("down", func() (proto.Message, error) {
			return transportSocket(&tlsv3.DownstreamTlsContext{
				RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext:         commonTLS(nil),
			})
		})
		if err != nil {
			return nil, err
		}
		if isL7(p.Protocol) {
			rules, err := rbacRules(p, true)
			if err != nil {
				return nil, err
			}
			return publicHTTPListener(pubName, p.PublicAddress, p.PublicPort, ts.(*core.TransportSocket), rules)
		}
		authz, err := rbacFilter(p)
		if err != nil {
			return nil, err
		}
		return tcpListener(pubName, socketAddress(p.PublicAddress, p.PublicPort), "public_listener", LocalAppCluster, ts.(*core.TransportSocket), authz)
	})
	snap, err := b.snapshot()
	if err != nil {
		return nil, err
	}
	// go-control-plane's full check decodes every listener again: builds
	// through the memo (the servers') use the equivalent cheap one; tests
	// check both agree (TestBuildMemo).
	check := snap.Consistent
	if m != nil {
		check = func() error { return consistent(snap, b.routeRefs) }
	}
	if err := check(); err != nil {
		return nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
	}
	return snap, nil
}

// endpointsKey identifies an endpoint list (what loadAssignment keeps of
// it).
func endpointsKey(eps []Endpoint) string {
	var sb strings.Builder
	for _, e := range eps {
		if e.Healthy {
			sb.WriteString(e.Address)
			sb.WriteByte(':')
			sb.WriteString(strconv.Itoa(e.Port))
			sb.WriteByte(',')
		}
	}
	return sb.String()
}

// intentionsKey identifies what rbacFilter reads of the proxy's intentions.
func intentionsKey(p *Proxy) string {
	var sb strings.Builder
	for _, ixn := range p.Intentions {
		if ixn != nil {
			fmt.Fprintf(&sb, "%q>%q:%s:%d;", ixn.SourceName, ixn.DestinationName, ixn.Action, len(ixn.Permissions))
			if len(ixn.Permissions) > 0 {
				perms, _ := json.Marshal(ixn.Permissions) // decoded JSON: cannot fail
				sb.Write(perms)
			}
		}
	}
	return fingerprint(sb.String())
}

func inline(s string) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: s}}
}

func transportSocket(m proto.Message) (*core.TransportSocket, error) {
	a, err := typedConfig(m)
	if err != nil {
		return nil, fmt.Errorf("xds: transport socket: %w", err)
	}
	return &core.TransportSocket{Name: "tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func loadAssignment(name string, eps []Endpoint) *endpoint.ClusterLoadAssignment {
	var lb []*endpoint.LbEndpoint
	sorted := append([]Endpoint(nil), eps...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Address != sorted[j].Address {
			return sorted[i].Address < sorted[j].Address
		}
		return sorted[i].Port < sorted[j].Port
	})
	for _, e := range sorted {
		if !e.Healthy {
			continue
		}
		lb = append(lb, &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(e.Address, e.Port)}},
			HealthStatus:   core.HealthStatus_HEALTHY,
		})
	}
	return &endpoint.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpoint.LocalityLbEndpoints{{LbEndpoints: lb}},
	}
}

func socketAddress(addr string, port int) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       addr,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func tcpListener(name string, addr *core.Address, statPrefix, clusterName string, ts *core.TransportSocket, pre *listener.Filter) (*listener.Listener, error) {
	tp, err := tcpProxyFilter(statPrefix, clusterName)
	if err != nil {
		return nil, err
	}
	var filters []*listener.Filter
	if pre != nil {
		filters = append(filters, pre)
	}
	filters = append(filters, tp)
	return &listener.Listener{
		Name:         name,
		Address:      addr,
		FilterChains: []*listener.FilterChain{{Filters: filters, TransportSocket: ts}},
	}, nil
}

// rbacFilter turns the intentions protecting p.Service into an RBAC network
// filter that reaches the same decision as connect.Authorize for every
// source: the policies list the sources whose decision differs from the
// default, each intention's sources minus those of intentions of higher
// precedence (which decide for them).
func rbacFilter(p *Proxy) (*listener.Filter, error) {
	rules, err := rbacRules(p, false)
	if err != nil {
		return nil, err
	}
	cfg, err := typedConfig(&rbac.RBAC{StatPrefix: "connect_authz", Rules: rules})
	if err != nil {
		return nil, fmt.Errorf("xds: rbac: %w", err)
	}
	return &listener.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listener.Filter_TypedConfig{TypedConfig: cfg}}, nil
}

// rbacRules are the RBAC rules of the intentions protecting p.Service. At
// L4 (l7 false) an intention with L7 permissions denies the connection, as
// connect.Authorize decides; at L7 its permissions are enforced per
// request: the first that matches decides, and a request none matches gets
// the default.
func rbacRules(p *Proxy, l7 bool) (*rbacconfig.RBAC, error) {
	var relevant []*catalog.Intention
	for _, ixn := range p.Intentions {
		if ixn != nil && (ixn.DestinationName == p.Service || ixn.DestinationName == catalog.IntentionWildcard) {
			relevant = append(relevant, ixn)
		}
	}
	connect.SortByPrecedence(relevant)
	action := rbacconfig.RBAC_ALLOW // default deny: list who is allowed
	if p.DefaultAllow {
		action = rbacconfig.RBAC_DENY // default allow: list who is denied
	}
	policies := map[string]*rbacconfig.Policy{}
	for i, ixn := range relevant {
		perms := []*rbacconfig.Permission{anyPermission()}
		policy := fmt.Sprintf("consul-intentions-layer4-%d", i)
		if l7 && len(ixn.Permissions) > 0 {
			decoded, err := decodePermissions(ixn.Permissions)
			if err != nil {
				return nil, err
			}
			if perms = l7Permissions(decoded, !p.DefaultAllow); len(perms) == 0 {
				continue // every permission does what the default does
			}
			policy = fmt.Sprintf("consul-intentions-layer7-%d", i)
		} else if allows := ixn.Action == catalog.IntentionAllow && len(ixn.Permissions) == 0; allows != !p.DefaultAllow {
			continue // same as the default: nothing to list
		}
		principal := sourcePrincipal(p.TrustDomain, ixn.SourceName)
		var higher []*rbacconfig.Principal
		for _, h := range relevant[:i] {
			if connect.Precedence(h.SourceName, h.DestinationName) > connect.Precedence(ixn.SourceName, ixn.DestinationName) &&
				(ixn.SourceName == catalog.IntentionWildcard || h.SourceName == catalog.IntentionWildcard || h.SourceName == ixn.SourceName) {
				higher = append(higher, sourcePrincipal(p.TrustDomain, h.SourceName))
			}
		}
		if len(higher) > 0 {
			principal = &rbacconfig.Principal{Identifier: &rbacconfig.Principal_AndIds{AndIds: &rbacconfig.Principal_Set{Ids: []*rbacconfig.Principal{
				principal,
				{Identifier: &rbacconfig.Principal_NotId{NotId: &rbacconfig.Principal{Identifier: &rbacconfig.Principal_OrIds{OrIds: &rbacconfig.Principal_Set{Ids: higher}}}}},
			}}}}
		}
		policies[policy] = &rbacconfig.Policy{
			Permissions: perms,
			Principals:  []*rbacconfig.Principal{principal},
		}
	}
	return &rbacconfig.RBAC{Action: action, Policies: policies}, nil
}

// sourcePrincipal matches the client certificate of a source service (any
// datacenter), or of every service for the wildcard.
func sourcePrincipal(trustDomain, source string) *rbacconfig.Principal {
	var m *matcher.StringMatcher
	if source == catalog.IntentionWildcard {
		m = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "spiffe://" + trustDomain + "/"}}
	} else {
		m = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{
			Regex: "^spiffe://" + regexp.QuoteMeta(trustDomain) + "/ns/" + connect.DefaultNamespace + "/dc/[^/]+/svc/" + regexp.QuoteMeta(source) + "$",
		}}}
	}
	return &rbacconfig.Principal{Identifier: &rbacconfig.Principal_Authenticated_{Authenticated: &rbacconfig.Principal_Authenticated{PrincipalName: m}}}
}

// adsSource is "over the ADS stream", the config source of every resource
// that references another.
func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

// typedConfig wraps m in an Any, encoded deterministically: the maps in
// it (RBAC policies) must encode the same every time, or an unchanged
// proxy would get a new version.
func typedConfig(m proto.Message) (*anypb.Any, error) {
	a := new(anypb.Any)
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}
