package xds

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/discoverychain"
)

// L7 (protocol http, http2 or grpc): outbound listeners run an HTTP
// connection manager whose routes come over RDS, built here from the
// discovery chain (the router's matches and destinations, the splitter's
// weights, the resolver's request timeout and hash policies); the public
// listener runs one with an inline route to the local app and the HTTP
// RBAC filter, which also enforces the intentions' L7 permissions.

// hcmFilter wraps an HTTP connection manager as a network filter.
func hcmFilter(m *hcm.HttpConnectionManager) (*listener.Filter, error) {
	cfg, err := typedConfig(m)
	if err != nil {
		return nil, fmt.Errorf("xds: http connection manager: %w", err)
	}
	return &listener.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: cfg}}, nil
}

// httpFilter wraps a message as an HTTP filter.
func httpFilter(name string, m proto.Message) (*hcm.HttpFilter, error) {
	cfg, err := typedConfig(m)
	if err != nil {
		return nil, fmt.Errorf("xds: http filter %s: %w", name, err)
	}
	return &hcm.HttpFilter{Name: name, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}

// httpUpstreamFilter is the network filter of an upstream at L7: its
// routes are the route configuration routeName, over ADS.
func httpUpstreamFilter(statPrefix, routeName string) (*listener.Filter, error) {
	rt, err := httpFilter("envoy.filters.http.router", &router.Router{})
	if err != nil {
		return nil, err
	}
	return hcmFilter(&hcm.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			RouteConfigName: routeName,
			ConfigSource:    adsSource(),
		}},
		HttpFilters: []*hcm.HttpFilter{rt},
	})
}

// publicHTTPListener is the public listener of an L7 service: mTLS, the
// HTTP RBAC filter of the intentions, and every request to the local app.
func publicHTTPListener(name, addr string, port int, ts *core.TransportSocket, rules *rbacconfig.RBAC) (*listener.Listener, error) {
	authz, err := httpFilter("envoy.filters.http.rbac", &rbachttp.RBAC{Rules: rules})
	if err != nil {
		return nil, err
	}
	rt, err := httpFilter("envoy.filters.http.router", &router.Router{})
	if err != nil {
		return nil, err
	}
	f, err := hcmFilter(&hcm.HttpConnectionManager{
		StatPrefix: "public_listener",
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
			Name: "public_listener",
			VirtualHosts: []*route.VirtualHost{{
				Name:    "public_listener",
				Domains: []string{"*"},
				Routes: []*route.Route{{
					Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
					Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: LocalAppCluster}}},
				}},
			}},
		}},
		HttpFilters: []*hcm.HttpFilter{authz, rt},
	})
	if err != nil {
		return nil, err
	}
	return &listener.Listener{
		Name:         name,
		Address:      socketAddress(addr, port),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{f}, TransportSocket: ts}},
	}, nil
}

// chainRouteConfig is the route configuration of an L7 upstream: the
// router's routes in order (the compiler appends the catch-all to the
// service itself), or one catch-all route to the splitter or resolver the
// chain starts at. clusters maps each resolver node to its cluster.
func chainRouteConfig(name string, ch *discoverychain.Chain, clusters map[string]string) (*route.RouteConfiguration, error) {
	start := ch.Nodes[ch.StartNode]
	var routes []*route.Route
	if start.Type == discoverychain.NodeTypeRouter {
		for _, r := range start.Routes {
			def := r.Definition
			var hm *catalog.ServiceRouteHTTPMatch
			if def != nil && def.Match != nil {
				hm = def.Match.HTTP
			}
			action, err := nodeAction(ch, r.NextNode, clusters)
			if err != nil {
				return nil, err
			}
			if def != nil && def.Destination != nil {
				applyDestination(action, def.Destination)
			}
			rt := &route.Route{Match: routeMatch(hm), Action: &route.Route_Route{Route: action}}
			if def != nil && def.Destination != nil {
				rt.RequestHeadersToAdd, rt.RequestHeadersToRemove = headerChanges(def.Destination.RequestHeaders)
				rt.ResponseHeadersToAdd, rt.ResponseHeadersToRemove = headerChanges(def.Destination.ResponseHeaders)
			}
			routes = append(routes, rt)
		}
	} else {
		action, err := nodeAction(ch, ch.StartNode, clusters)
		if err != nil {
			return nil, err
		}
		routes = append(routes, &route.Route{Match: routeMatch(nil), Action: &route.Route_Route{Route: action}})
	}
	return &route.RouteConfiguration{
		Name: name,
		VirtualHosts: []*route.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}, nil
}

// nodeAction is the route action towards a splitter or resolver node.
func nodeAction(ch *discoverychain.Chain, key string, clusters map[string]string) (*route.RouteAction, error) {
	n := ch.Nodes[key]
	if n == nil {
		return nil, fmt.Errorf("xds: chain %s names unknown node %q", ch.ServiceName, key)
	}
	switch n.Type {
	case discoverychain.NodeTypeResolver:
		a := &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusters[key]}}
		if rt := n.Resolver.RequestTimeout.Std(); rt > 0 {
			a.Timeout = durationpb.New(rt)
		}
		a.HashPolicy = hashPolicies(n.LoadBalancer)
		return a, nil
	case discoverychain.NodeTypeSplitter:
		wc := &route.WeightedCluster{}
		for _, s := range n.Splits {
			w := catalog.ScaledWeight(s.Weight)
			if w <= 0 {
				continue
			}
			next := ch.Nodes[s.NextNode]
			if next == nil || next.Type != discoverychain.NodeTypeResolver {
				return nil, fmt.Errorf("xds: chain %s: split to %q, not a resolver", ch.ServiceName, s.NextNode)
			}
			cw := &route.WeightedCluster_ClusterWeight{Name: clusters[s.NextNode], Weight: wrapperspb.UInt32(uint32(w))}
			if d := s.Definition; d != nil {
				cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = headerChanges(d.RequestHeaders)
				cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = headerChanges(d.ResponseHeaders)
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		if len(wc.Clusters) == 0 {
			return nil, fmt.Errorf("xds: chain %s: splitter without a positive weight", ch.ServiceName)
		}
		return &route.RouteAction{ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: wc}}, nil
	}
	return nil, fmt.Errorf("xds: chain %s: a route cannot lead to a %s", ch.ServiceName, n.Type)
}

// hashPolicies are a resolver's hash policies (ring_hash and maglev).
func hashPolicies(lb *catalog.LoadBalancer) []*route.RouteAction_HashPolicy {
	if lb == nil || (lb.Policy != "ring_hash" && lb.Policy != "maglev") {
		return nil
	}
	var out []*route.RouteAction_HashPolicy
	for _, h := range lb.HashPolicies {
		hp := &route.RouteAction_HashPolicy{Terminal: h.Terminal}
		switch {
		case h.SourceIP:
			hp.PolicySpecifier = &route.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
		case h.Field == "header":
			hp.PolicySpecifier = &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: h.FieldValue}}
		case h.Field == "query_parameter":
			hp.PolicySpecifier = &route.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &route.RouteAction_HashPolicy_QueryParameter{Name: h.FieldValue}}
		case h.Field == "cookie":
			c := &route.RouteAction_HashPolicy_Cookie{Name: h.FieldValue}
			if cc := h.CookieConfig; cc != nil {
				c.Path = cc.Path
				if !cc.Session && cc.TTL > 0 {
					c.Ttl = durationpb.New(cc.TTL.Std())
				} else if cc.Session {
					c.Ttl = durationpb.New(0)
				}
			}
			hp.PolicySpecifier = &route.RouteAction_HashPolicy_Cookie_{Cookie: c}
		default:
			continue
		}
		out = append(out, hp)
	}
	return out
}

// routeMatch is the Envoy match of a router's HTTP match (nil: every
// request).
func routeMatch(m *catalog.ServiceRouteHTTPMatch) *route.RouteMatch {
	rm := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm
	}
	switch {
	case m.PathExact != "":
		rm.PathSpecifier = &route.RouteMatch_Path{Path: m.PathExact}
	case m.PathPrefix != "":
		rm.PathSpecifier = &route.RouteMatch_Prefix{Prefix: m.PathPrefix}
	case m.PathRegex != "":
		rm.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: m.PathRegex}}
	}
	for i := range m.Header {
		rm.Headers = append(rm.Headers, headerMatcher(&m.Header[i]))
	}
	if len(m.Methods) > 0 {
		rm.Headers = append(rm.Headers, methodMatcher(m.Methods))
	}
	for _, q := range m.QueryParam {
		qm := &route.QueryParameterMatcher{Name: q.Name}
		if sm := stringMatch(q.Exact, "", "", q.Regex); sm != nil {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_StringMatch{StringMatch: sm}
		} else {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm
}

// headerMatcher is the Envoy matcher of one header match (of a route or
// of an intention's permission: the same shape in Consul).
func headerMatcher(h *catalog.ServiceRouteHTTPMatchHeader) *route.HeaderMatcher {
	hm := &route.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
	if sm := stringMatch(h.Exact, h.Prefix, h.Suffix, h.Regex); sm != nil {
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: sm}
	} else {
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
	}
	return hm
}

// stringMatch matches exactly, by prefix, by suffix or by regex, the first
// of them set (nil: none is).
func stringMatch(exact, prefix, suffix, regex string) *matcher.StringMatcher {
	switch {
	case exact != "":
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: exact}}
	case prefix != "":
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: prefix}}
	case suffix != "":
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: suffix}}
	case regex != "":
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: regex}}}
	}
	return nil
}

// methodMatcher matches requests whose method is one of methods.
func methodMatcher(methods []string) *route.HeaderMatcher {
	ms := append([]string(nil), methods...)
	for i := range ms {
		ms[i] = strings.ToUpper(ms[i])
	}
	sort.Strings(ms)
	return &route.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
		MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: strings.Join(ms, "|")}},
	}}}
}

// applyDestination applies a route destination's rewrite, timeouts and
// retries to its action.
func applyDestination(a *route.RouteAction, d *catalog.ServiceRouteDestination) {
	if d.PrefixRewrite != "" {
		a.PrefixRewrite = d.PrefixRewrite
	}
	if t := d.RequestTimeout.Std(); t > 0 {
		a.Timeout = durationpb.New(t)
	}
	if t := d.IdleTimeout.Std(); t > 0 {
		a.IdleTimeout = durationpb.New(t)
	}
	var on []string
	if d.RetryOnConnectFailure {
		on = append(on, "connect-failure")
	}
	if len(d.RetryOnStatusCodes) > 0 {
		on = append(on, "retriable-status-codes")
	}
	for _, c := range d.RetryOn {
		if c != "connect-failure" || !d.RetryOnConnectFailure {
			on = append(on, c)
		}
	}
	if d.NumRetries == 0 && len(on) == 0 {
		return
	}
	rp := &route.RetryPolicy{RetryOn: strings.Join(on, ","), RetriableStatusCodes: d.RetryOnStatusCodes}
	if d.NumRetries > 0 {
		rp.NumRetries = wrapperspb.UInt32(d.NumRetries)
	}
	a.RetryPolicy = rp
}

// headerChanges are a route's or split's header modifiers for Envoy: Add
// appends a value, Set replaces the header's values, Remove drops it.
func headerChanges(m *catalog.HTTPHeaderModifiers) ([]*core.HeaderValueOption, []string) {
	if m == nil {
		return nil, nil
	}
	var add []*core.HeaderValueOption
	for _, h := range []struct {
		values map[string]string
		action core.HeaderValueOption_HeaderAppendAction
	}{
		{m.Add, core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD},
		{m.Set, core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
	} {
		names := make([]string, 0, len(h.values))
		for k := range h.values {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			add = append(add, &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: h.values[k]}, AppendAction: h.action})
		}
	}
	return add, append([]string(nil), m.Remove...)
}

// ---- intentions' L7 permissions ----

// l7Permission is one permission of an intention, as Consul writes it.
type l7Permission struct {
	Action string
	HTTP   *struct {
		PathExact, PathPrefix, PathRegex string
		Header                           []catalog.ServiceRouteHTTPMatchHeader
		Methods                          []string
	}
}

// decodePermissions reads an intention's permissions (stored as decoded
// JSON).
func decodePermissions(raw []any) ([]l7Permission, error) {
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("xds: intention permissions: %w", err)
	}
	var out []l7Permission
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("xds: intention permissions: %w", err)
	}
	return out, nil
}

// permissionMatch is the RBAC permission that matches the requests one
// intention permission names.
func permissionMatch(p l7Permission) *rbacconfig.Permission {
	var rules []*rbacconfig.Permission
	if h := p.HTTP; h != nil {
		if path := stringMatch(h.PathExact, h.PathPrefix, "", h.PathRegex); path != nil {
			rules = append(rules, &rbacconfig.Permission{Rule: &rbacconfig.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: path}}}})
		}
		for i := range h.Header {
			rules = append(rules, &rbacconfig.Permission{Rule: &rbacconfig.Permission_Header{Header: headerMatcher(&h.Header[i])}})
		}
		if len(h.Methods) > 0 {
			rules = append(rules, &rbacconfig.Permission{Rule: &rbacconfig.Permission_Header{Header: methodMatcher(h.Methods)}})
		}
	}
	switch len(rules) {
	case 0:
		return anyPermission()
	case 1:
		return rules[0]
	}
	return &rbacconfig.Permission{Rule: &rbacconfig.Permission_AndRules{AndRules: &rbacconfig.Permission_Set{Rules: rules}}}
}

func anyPermission() *rbacconfig.Permission {
	return &rbacconfig.Permission{Rule: &rbacconfig.Permission_Any{Any: true}}
}

// l7Permissions are the RBAC permissions of an intention's permissions
// whose effect differs from the default: with listAllowed (default deny),
// the requests its permissions allow, else those they deny. The first
// permission that matches a request decides it, so each listed one
// excludes the earlier ones of the other action.
func l7Permissions(perms []l7Permission, listAllowed bool) []*rbacconfig.Permission {
	var out, earlier []*rbacconfig.Permission
	for _, p := range perms {
		m := permissionMatch(p)
		if (p.Action == catalog.IntentionAllow) != listAllowed {
			earlier = append(earlier, m)
			continue
		}
		if len(earlier) > 0 {
			m = &rbacconfig.Permission{Rule: &rbacconfig.Permission_AndRules{AndRules: &rbacconfig.Permission_Set{Rules: []*rbacconfig.Permission{
				m,
				{Rule: &rbacconfig.Permission_NotRule{NotRule: &rbacconfig.Permission{Rule: &rbacconfig.Permission_OrRules{OrRules: &rbacconfig.Permission_Set{
					Rules: append([]*rbacconfig.Permission(nil), earlier...),
				}}}}},
			}}}}
		}
		out = append(out, m)
	}
	return out
}
