package xds

import (
	"regexp"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
)

// httpRequest is what the HTTP RBAC filter sees of a request.
type httpRequest struct {
	method, path string
	headers      map[string]string
}

func (r httpRequest) header(name string) (string, bool) {
	if name == ":method" {
		return r.method, true
	}
	v, ok := r.headers[name]
	return v, ok
}

func evalString(t *testing.T, m *matcher.StringMatcher, v string) bool {
	switch {
	case m.GetExact() != "":
		return v == m.GetExact()
	case m.GetPrefix() != "":
		return strings.HasPrefix(v, m.GetPrefix())
	case m.GetSuffix() != "":
		return strings.HasSuffix(v, m.GetSuffix())
	case m.GetSafeRegex() != nil:
		return regexp.MustCompile("^(?:" + m.GetSafeRegex().GetRegex() + ")$").MatchString(v)
	}
	t.Fatalf("unsupported string matcher %v", m)
	return false
}

func evalHeader(t *testing.T, h *route.HeaderMatcher, r httpRequest) bool {
	v, ok := r.header(h.GetName())
	var got bool
	switch {
	case h.GetPresentMatch():
		got = ok
	case h.GetStringMatch() != nil:
		got = ok && evalString(t, h.GetStringMatch(), v)
	default:
		t.Fatalf("unsupported header matcher %v", h)
	}
	return got != h.GetInvertMatch()
}

func allOf[T any](xs []T, f func(T) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

func anyOf[T any](xs []T, f func(T) bool) bool {
	for _, x := range xs {
		if f(x) {
			return true
		}
	}
	return false
}

func evalPermission(t *testing.T, p *rbacconfig.Permission, r httpRequest) bool {
	switch rule := p.Rule.(type) {
	case *rbacconfig.Permission_Any:
		return true
	case *rbacconfig.Permission_AndRules:
		return allOf(rule.AndRules.Rules, func(s *rbacconfig.Permission) bool { return evalPermission(t, s, r) })
	case *rbacconfig.Permission_OrRules:
		return anyOf(rule.OrRules.Rules, func(s *rbacconfig.Permission) bool { return evalPermission(t, s, r) })
	case *rbacconfig.Permission_NotRule:
		return !evalPermission(t, rule.NotRule, r)
	case *rbacconfig.Permission_UrlPath:
		return evalString(t, rule.UrlPath.GetPath(), r.path)
	case *rbacconfig.Permission_Header:
		return evalHeader(t, rule.Header, r)
	}
	t.Fatalf("unsupported permission %T", p.Rule)
	return false
}

// httpRBACAllows evaluates the public listener's HTTP RBAC filter.
func httpRBACAllows(t *testing.T, l *listener.Listener, source string, r httpRequest) bool {
	var m hcm.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	var cfg rbachttp.RBAC
	if err := m.HttpFilters[0].GetTypedConfig().UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	uri := connect.ServiceID(td, "dc1", source).String()
	matched := false
	for _, pol := range cfg.Rules.Policies {
		perm := false
		for _, p := range pol.Permissions {
			perm = perm || evalPermission(t, p, r)
		}
		for _, pr := range pol.Principals {
			if perm && evalPrincipal(t, pr, uri) {
				matched = true
			}
		}
	}
	if cfg.Rules.Action == rbacconfig.RBAC_ALLOW {
		return matched
	}
	return !matched
}

// wantL7 is the decision Consul documents: the intention of highest
// precedence matching the source decides; one with permissions decides by
// the first permission matching the request, and by the default when none
// does.
func wantL7(t *testing.T, ixns []*catalog.Intention, source string, r httpRequest, def bool) bool {
	d := connect.Authorize(ixns, source, "frontend", def)
	if d.Match == nil || len(d.Match.Permissions) == 0 {
		return d.Allowed
	}
	perms, err := decodePermissions(d.Match.Permissions)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range perms {
		if h := p.HTTP; h != nil {
			switch {
			case h.PathExact != "" && r.path != h.PathExact,
				h.PathPrefix != "" && !strings.HasPrefix(r.path, h.PathPrefix),
				h.PathRegex != "" && !regexp.MustCompile("^(?:"+h.PathRegex+")$").MatchString(r.path):
				continue
			}
			if len(h.Methods) > 0 && !strings.Contains(","+strings.Join(h.Methods, ",")+",", ","+r.method+",") {
				continue
			}
			ok := true
			for i := range h.Header {
				if !evalHeader(t, headerMatcher(&h.Header[i]), r) {
					ok = false
				}
			}
			if !ok {
				continue
			}
		}
		return p.Action == catalog.IntentionAllow
	}
	return def
}

// TestHTTPRBACAgreesWithPermissions: for every source and request and both
// default policies, the public listener's HTTP RBAC filter reaches the
// decision of the intentions' L7 permissions.
func TestHTTPRBACAgreesWithPermissions(t *testing.T) {
	perm := func(action string, http map[string]any) any { return map[string]any{"Action": action, "HTTP": http} }
	sets := [][]*catalog.Intention{
		{{SourceName: "lb", DestinationName: "frontend", Permissions: []any{
			perm("deny", map[string]any{"PathPrefix": "/admin"}),
			perm("allow", map[string]any{"PathPrefix": "/", "Methods": []any{"GET", "POST"}, "Header": []any{map[string]any{"Name": "x-tenant", "Exact": "a"}}}),
		}}},
		{{SourceName: "*", DestinationName: "frontend", Action: "allow"},
			{SourceName: "lb", DestinationName: "frontend", Permissions: []any{
				perm("allow", map[string]any{"PathRegex": "/api/[a-z]+"}),
				perm("deny", map[string]any{"Header": []any{map[string]any{"Name": "x-tenant", "Present": true, "Invert": true}}}),
			}},
			{SourceName: "bad", DestinationName: "*", Action: "deny"}},
		{{SourceName: "*", DestinationName: "*", Permissions: []any{perm("allow", map[string]any{"PathExact": "/health"})}},
			{SourceName: "ops", DestinationName: "frontend", Action: "allow"}},
	}
	reqs := []httpRequest{
		{method: "GET", path: "/"},
		{method: "GET", path: "/admin/x", headers: map[string]string{"x-tenant": "a"}},
		{method: "GET", path: "/", headers: map[string]string{"x-tenant": "a"}},
		{method: "DELETE", path: "/", headers: map[string]string{"x-tenant": "a"}},
		{method: "POST", path: "/api/users", headers: map[string]string{"x-tenant": "b"}},
		{method: "GET", path: "/api/Users"},
		{method: "GET", path: "/health"},
	}
	for i, ixns := range sets {
		for _, def := range []bool{false, true} {
			p := goldenProxy()
			p.Protocol = "http"
			p.Intentions = ixns
			p.DefaultAllow = def
			snap, err := Build(p)
			if err != nil {
				t.Fatal(err)
			}
			l := snap.GetResources(resource.ListenerType)["public_listener:0.0.0.0:21000"].(*listener.Listener)
			for _, src := range []string{"lb", "ops", "bad", "x"} {
				for _, r := range reqs {
					want := wantL7(t, ixns, src, r, def)
					if got := httpRBACAllows(t, l, src, r); got != want {
						t.Errorf("set %d default-allow=%v %s %s %s %v: RBAC allows=%v, want %v", i, def, src, r.method, r.path, r.headers, got, want)
					}
				}
			}
		}
	}
}
