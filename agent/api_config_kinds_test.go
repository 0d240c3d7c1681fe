package agent_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// roundTrip writes an entry and reads it back with the indexes cleared,
// as the official client's config entry tests do.
func roundTrip(t *testing.T, ce *api.ConfigEntries, e api.ConfigEntry) api.ConfigEntry {
	t.Helper()
	ok, _, err := ce.Set(e, nil)
	if err != nil || !ok {
		t.Fatalf("set %s/%s: %v %v", e.GetKind(), e.GetName(), ok, err)
	}
	got, _, err := ce.Get(e.GetKind(), e.GetName(), nil)
	if err != nil {
		t.Fatalf("get %s/%s: %v", e.GetKind(), e.GetName(), err)
	}
	switch g := got.(type) {
	case *api.ServiceResolverConfigEntry:
		g.CreateIndex, g.ModifyIndex = 0, 0
	case *api.ServiceSplitterConfigEntry:
		g.CreateIndex, g.ModifyIndex = 0, 0
	case *api.ServiceRouterConfigEntry:
		g.CreateIndex, g.ModifyIndex = 0, 0
	case *api.ExportedServicesConfigEntry:
		g.CreateIndex, g.ModifyIndex = 0, 0
	case *api.JWTProviderConfigEntry:
		g.CreateIndex, g.ModifyIndex = 0, 0
	}
	return got
}

// TestAPIConfigEntryDiscoveryChainKinds carries the expectations of the
// client's TestAPI_ConfigEntry_DiscoveryChain and
// TestAPI_ConfigEntry_ServiceResolver_LoadBalancer: resolvers, splitters
// and routers read back exactly as written.
func TestAPIConfigEntryDiscoveryChainKinds(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ce := c.ConfigEntries()
	for _, svc := range []string{"test-failover", "test-redirect", "alternate", "test-split", "test-route", "test-ring-hash"} {
		if _, _, err := ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: svc, Protocol: "http"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	meta := map[string]string{"foo": "bar", "gir": "zim"}
	entries := []api.ConfigEntry{
		&api.ServiceResolverConfigEntry{
			Kind: api.ServiceResolver, Name: "test-failover", DefaultSubset: "v1",
			Subsets: map[string]api.ServiceResolverSubset{
				"v1": {Filter: "Service.Meta.version == v1"},
				"v2": {Filter: "Service.Meta.version == v2"},
				"v3": {Filter: "Service.Meta.version == v3"},
			},
			Failover: map[string]api.ServiceResolverFailover{
				"*":  {Datacenters: []string{"dc2"}},
				"v1": {Service: "alternate"},
				"v3": {Targets: []api.ServiceResolverFailoverTarget{{Peer: "cluster-01"}, {Datacenter: "dc1"}, {Service: "another-service", ServiceSubset: "v1"}}},
			},
			ConnectTimeout: 5 * time.Second,
			Meta:           meta,
		},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "test-redirect",
			Redirect: &api.ServiceResolverRedirect{Service: "test-failover", ServiceSubset: "v2", Datacenter: "d"}},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "test-redirect",
			Redirect: &api.ServiceResolverRedirect{Service: "test-failover", Peer: "cluster-01"}},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "test-split", Meta: meta, Splits: []api.ServiceSplit{
			{Weight: 90, Service: "test-failover", ServiceSubset: "v1",
				RequestHeaders:  &api.HTTPHeaderModifiers{Set: map[string]string{"x-foo": "bar"}},
				ResponseHeaders: &api.HTTPHeaderModifiers{Remove: []string{"x-foo"}}},
			{Weight: 10, Service: "test-redirect"},
		}},
		&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "test-route", Meta: meta, Routes: []api.ServiceRoute{{
			Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{
				PathPrefix: "/prefix",
				Header:     []api.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Exact: "1"}},
				QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "debug", Exact: "1"}},
			}},
			Destination: &api.ServiceRouteDestination{
				Service: "test-failover", ServiceSubset: "v2", PrefixRewrite: "/",
				RequestTimeout: 5 * time.Second, NumRetries: 5, RetryOnConnectFailure: true,
				RetryOnStatusCodes: []uint32{500, 503, 401},
				RetryOn: []string{"gateway-error", "reset", "envoy-ratelimited", "retriable-4xx", "refused-stream",
					"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"},
				RequestHeaders:  &api.HTTPHeaderModifiers{Set: map[string]string{"x-foo": "bar"}},
				ResponseHeaders: &api.HTTPHeaderModifiers{Remove: []string{"x-foo"}},
			},
		}}},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "test-ring-hash", LoadBalancer: &api.LoadBalancer{
			Policy:         "ring_hash",
			RingHashConfig: &api.RingHashConfig{MinimumRingSize: 2048, MaximumRingSize: 4096},
			HashPolicies: []api.HashPolicy{
				{Field: "header", FieldValue: "my-session-header", Terminal: true},
				{Field: "cookie", FieldValue: "oreo", CookieConfig: &api.CookieConfig{Path: "/tray", TTL: 20 * time.Millisecond}},
				{Field: "cookie", FieldValue: "sugar", CookieConfig: &api.CookieConfig{Session: true, Path: "/tin"}},
				{SourceIP: true},
			},
		}},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "test-least-req", LoadBalancer: &api.LoadBalancer{
			Policy: "least_request", LeastRequestConfig: &api.LeastRequestConfig{ChoiceCount: 10}}},
	}
	for _, e := range entries {
		if got := roundTrip(t, ce, e); !reflect.DeepEqual(got, e) {
			t.Errorf("%s/%s read back\n%#v\nwant\n%#v", e.GetKind(), e.GetName(), got, e)
		}
	}
}

// TestAPIConfigEntryGatewayKinds carries the expectations of the client's
// ingress, terminating, exported-services, jwt-provider and
// inline-certificate tests.
func TestAPIConfigEntryGatewayKinds(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ce := c.ConfigEntries()
	if _, _, err := ce.Set(&api.ProxyConfigEntry{Kind: api.ProxyDefaults, Name: api.ProxyConfigGlobal, Config: map[string]any{"protocol": "http"}}, nil); err != nil {
		t.Fatal(err)
	}
	u32 := func(v uint32) *uint32 { return &v }
	bar := &api.IngressGatewayConfigEntry{Kind: api.IngressGateway, Name: "bar",
		TLS: api.GatewayTLSConfig{Enabled: true, TLSMinVersion: "TLSv1_2"},
		Defaults: &api.IngressServiceConfig{MaxConnections: u32(2048), MaxPendingRequests: u32(4096),
			PassiveHealthCheck: &api.PassiveHealthCheck{MaxFailures: 20, Interval: 500 * time.Millisecond}},
		Listeners: []api.IngressListener{{Port: 3333, Protocol: "http", Services: []api.IngressService{{Name: "qwer", Hosts: []string{"test.example.com"}}}}},
	}
	got := roundTrip(t, ce, bar).(*api.IngressGatewayConfigEntry)
	if got.Defaults.MaxConcurrentRequests == nil || *got.Defaults.MaxConcurrentRequests != 0 || *got.Defaults.MaxPendingRequests != 4096 ||
		got.Defaults.PassiveHealthCheck.Interval != 500*time.Millisecond || !reflect.DeepEqual(got.Listeners, bar.Listeners) {
		t.Errorf("ingress read back %#v %+v %+v", got, *got.Defaults, got.Defaults.PassiveHealthCheck)
	}
	// A tcp listener takes the protocol Consul fills in.
	tcp := &api.IngressGatewayConfigEntry{Kind: api.IngressGateway, Name: "tcp-gw",
		Listeners: []api.IngressListener{{Port: 4444, Services: []api.IngressService{{Name: "plain"}}}}}
	if _, _, err := ce.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "plain", Protocol: "tcp"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, ce, tcp).(*api.IngressGatewayConfigEntry); got.Listeners[0].Protocol != "tcp" {
		t.Errorf("listener protocol = %q", got.Listeners[0].Protocol)
	}

	term := &api.TerminatingGatewayConfigEntry{Kind: api.TerminatingGateway, Name: "foo", Services: []api.LinkedService{
		{Name: "web", CAFile: "/etc/web/ca.crt", CertFile: "/etc/web/client.crt", KeyFile: "/etc/web/tls.key", SNI: "mydomain"},
		{Name: "*", CAFile: "/etc/certs/ca.crt"},
	}}
	if got := roundTrip(t, ce, term).(*api.TerminatingGatewayConfigEntry); !reflect.DeepEqual(got.Services, term.Services) {
		t.Errorf("terminating read back %#v", got.Services)
	}

	exp := &api.ExportedServicesConfigEntry{Name: "default", Meta: map[string]string{"gir": "zim"},
		Services: []api.ExportedService{{Name: "db", Consumers: []api.ServiceConsumer{{Peer: "alpha"}}}}}
	if got := roundTrip(t, ce, exp); !reflect.DeepEqual(got, exp) {
		t.Errorf("exported-services read back %#v", got)
	}

	jwt := &api.JWTProviderConfigEntry{Kind: api.JWTProvider, Name: "okta", Issuer: "test-issuer",
		JSONWebKeySet: &api.JSONWebKeySet{Remote: &api.RemoteJWKS{FetchAsynchronously: true, URI: "https://example.com/.well-known/jwks.json",
			JWKSCluster: &api.JWKSCluster{DiscoveryType: "STATIC", ConnectTimeout: 5 * time.Second,
				TLSCertificates: &api.JWKSTLSCertificate{TrustedCA: &api.JWKSTLSCertTrustedCA{Filename: "myfile.cert"}}}}}}
	if got := roundTrip(t, ce, jwt); !reflect.DeepEqual(got, jwt) {
		t.Errorf("jwt-provider read back %#v", got)
	}

	certPEM, keyPEM := selfSignedPEM(t)
	cert := &api.InlineCertificateConfigEntry{Kind: api.InlineCertificate, Name: "cert1", Meta: map[string]string{"foo": "bar"},
		Certificate: certPEM, PrivateKey: keyPEM}
	if got := roundTrip(t, ce, cert).(*api.InlineCertificateConfigEntry); got.Certificate != certPEM || got.Meta["foo"] != "bar" {
		t.Errorf("inline-certificate read back %#v", got)
	}
	gw := &api.APIGatewayConfigEntry{Kind: api.APIGateway, Name: "api-gw", Listeners: []api.APIGatewayListener{{
		Name: "l1", Port: 8443, Protocol: "http", Hostname: "*.example.com",
		TLS: api.APIGatewayTLSConfiguration{Certificates: []api.ResourceReference{{Kind: api.InlineCertificate, Name: "cert1"}}}}}}
	roundTrip(t, ce, gw)
	roundTrip(t, ce, &api.HTTPRouteConfigEntry{Kind: api.HTTPRoute, Name: "route1",
		Parents: []api.ResourceReference{{Kind: api.APIGateway, Name: "api-gw"}},
		Rules: []api.HTTPRouteRule{{Matches: []api.HTTPMatch{{Path: api.HTTPPathMatch{Match: api.HTTPPathMatchPrefix, Value: "/v1"}}},
			Services: []api.HTTPService{{Name: "web", Weight: 1}}}}})
	roundTrip(t, ce, &api.TCPRouteConfigEntry{Kind: api.TCPRoute, Name: "route2",
		Parents: []api.ResourceReference{{Kind: api.APIGateway, Name: "api-gw"}}, Services: []api.TCPService{{Name: "db"}}})
	if list, _, err := ce.List("bound-api-gateway", nil); err != nil || len(list) != 0 {
		t.Errorf("bound-api-gateway list = %v %v", list, err)
	}
}

func selfSignedPEM(t *testing.T) (string, string) {
	t.Helper()
	return selfSignedPEMOf(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"example.com"}})
}

// selfSignedPEMOf signs tmpl with a fresh P-256 key and returns the
// certificate and the key in PEM.
func selfSignedPEMOf(t *testing.T, tmpl *x509.Certificate) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// TestAPIConfigEntryKindValidation: each kind's documented rules answer
// 400 with the reason.
func TestAPIConfigEntryKindValidation(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		// splitter weights must sum to 100
		`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50},{"Weight":40,"Service":"v2"}]}`,
		`{"Kind":"service-splitter","Name":"web","Splits":[]}`,
		`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50},{"Weight":50}]}`,
		// a router or splitter on a tcp service
		`{"Kind":"service-router","Name":"db","Routes":[{"Match":{"HTTP":{"PathPrefix":"/a"}}}]}`,
		`{"Kind":"service-splitter","Name":"db","Splits":[{"Weight":100}]}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/a","PathExact":"/b"}}}]}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathExact":"b"}}}]}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Exact":"1"}]}}}]}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Methods":["GET","GET"]}}}]}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"PrefixRewrite":"/"}}]}`,
		`{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOn":["sometimes"]}}]}`,
		`{"Kind":"service-resolver","Name":"web","DefaultSubset":"v9"}`,
		`{"Kind":"service-resolver","Name":"web","Subsets":{"V1":{}}}`,
		`{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.x =="}}}`,
		`{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{}},"Redirect":{"Service":"x"}}`,
		`{"Kind":"service-resolver","Name":"web","Redirect":{}}`,
		`{"Kind":"service-resolver","Name":"web","Failover":{"v1":{"Service":"x"}}}`,
		`{"Kind":"service-resolver","Name":"web","Failover":{"*":{}}}`,
		`{"Kind":"service-resolver","Name":"web","ConnectTimeout":"-1s"}`,
		`{"Kind":"service-resolver","Name":"web","ConnectTimeout":"soon"}`,
		`{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"fastest"}}`,
		`{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"random","HashPolicies":[{"Field":"header","FieldValue":"x"}]}}`,
		`{"Kind":"ingress-gateway","Name":"ig","Listeners":[{"Port":1,"Protocol":"tcp","Services":[{"Name":"a"},{"Name":"b"}]}]}`,
		`{"Kind":"ingress-gateway","Name":"ig","Listeners":[{"Port":1,"Protocol":"tcp","Services":[{"Name":"*"}]}]}`,
		`{"Kind":"ingress-gateway","Name":"ig","Listeners":[{"Port":1,"Protocol":"http","Services":[{"Name":"db"}]}]}`,
		`{"Kind":"ingress-gateway","Name":"ig","Listeners":[{"Port":1,"Protocol":"udp","Services":[{"Name":"a"}]}]}`,
		`{"Kind":"terminating-gateway","Name":"tg","Services":[{"Name":"a","KeyFile":"k"}]}`,
		`{"Kind":"terminating-gateway","Name":"tg","Services":[{"Name":"a"},{"Name":"a"}]}`,
		`{"Kind":"api-gateway","Name":"g","Listeners":[{"Name":"l","Port":80,"Protocol":"udp"}]}`,
		`{"Kind":"http-route","Name":"r","Parents":[]}`,
		`{"Kind":"tcp-route","Name":"r","Parents":[{"Name":"g"}],"Services":[{"Name":"a"},{"Name":"b"}]}`,
		`{"Kind":"inline-certificate","Name":"c","Certificate":"nope","PrivateKey":"nope"}`,
		`{"Kind":"exported-services","Name":"other"}`,
		`{"Kind":"exported-services","Name":"default","Services":[{"Name":"db"}]}`,
		`{"Kind":"jwt-provider","Name":"j"}`,
		`{"Kind":"jwt-provider","Name":"j","JSONWebKeySet":{"Local":{"JWKS":"x","Filename":"y"}}}`,
		`{"Kind":"bound-api-gateway","Name":"g"}`,
		`{"Kind":"sameness-group","Name":"s"}`,
	} {
		if res := httpString(t, a, http.MethodPut, "/v1/config", body); res.code != http.StatusBadRequest {
			t.Errorf("PUT %s = %d %s, want 400", body, res.code, res.body)
		}
	}
	// Turning web to tcp under a router is refused as well.
	if res := httpString(t, a, http.MethodPut, "/v1/config", `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/a"}}}]}`); res.code != http.StatusOK {
		t.Fatalf("router = %d %s", res.code, res.body)
	}
	if res := httpString(t, a, http.MethodPut, "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocol":"tcp"}`); res.code != http.StatusBadRequest {
		t.Errorf("web to tcp under a router = %d %s", res.code, res.body)
	}
}

// TestAPIConfigEntryCASAndList plays the CAS, list and delete steps of
// the client's ingress, exported-services and inline-certificate tests.
func TestAPIConfigEntryCASAndList(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ce := c.ConfigEntries()
	ig := &api.IngressGatewayConfigEntry{Kind: api.IngressGateway, Name: "foo", Meta: map[string]string{"foo": "bar"}}
	if _, _, err := ce.Set(ig, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := ce.Get(api.IngressGateway, "foo", nil)
	if err != nil {
		t.Fatal(err)
	}
	if written, _, err := ce.CAS(ig, 0, nil); err != nil || written {
		t.Fatalf("CAS 0 on an existing entry = %v %v", written, err)
	}
	if written, _, err := ce.CAS(ig, got.GetModifyIndex(), nil); err != nil || !written {
		t.Fatalf("CAS at the current index = %v %v", written, err)
	}

	exp := &api.ExportedServicesConfigEntry{Name: "default", Meta: map[string]string{"gir": "zim"}}
	if _, _, err := ce.Set(exp, nil); err != nil {
		t.Fatal(err)
	}
	if list, _, err := ce.List(api.ExportedServices, nil); err != nil || len(list) != 1 {
		t.Fatalf("list exported-services = %v %v", list, err)
	}
	if _, err := ce.Delete(api.ExportedServices, "default", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ce.Get(api.ExportedServices, "default", nil); err == nil {
		t.Fatal("exported-services still there after delete")
	}
	if _, _, err := ce.Get(api.MeshConfig, "default", nil); err == nil {
		t.Fatal("a mesh entry named default exists")
	}

	certPEM, keyPEM := selfSignedPEM(t)
	cert := &api.InlineCertificateConfigEntry{Kind: api.InlineCertificate, Name: "cert1", Meta: map[string]string{"foo": "bar"},
		Certificate: certPEM, PrivateKey: keyPEM}
	if _, _, err := ce.Set(cert, nil); err != nil {
		t.Fatal(err)
	}
	read, _, err := ce.Get(api.InlineCertificate, "cert1", nil)
	if err != nil {
		t.Fatal(err)
	}
	cert.Meta["bar"] = "baz"
	if written, _, err := ce.CAS(cert, read.GetModifyIndex(), nil); err != nil || !written {
		t.Fatalf("CAS cert = %v %v", written, err)
	}
	list, _, err := ce.List(api.InlineCertificate, nil)
	if err != nil || len(list) != 1 || list[0].(*api.InlineCertificateConfigEntry).Meta["bar"] != "baz" {
		t.Fatalf("list certs = %v %v", list, err)
	}
}

// TestAPIConfigEntrySnakeCase: an entry written with snake_case keys is
// served in Consul's CamelCase.
func TestAPIConfigEntrySnakeCase(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	body := `{"kind":"service-resolver","name":"web","default_subset":"v1","connect_timeout":"15s",
		"subsets":{"v1":{"filter":"Service.Meta.version == v1","only_passing":true}},"meta":{"owner_team":"a"}}`
	if r := httpString(t, a, http.MethodPut, "/v1/config", body); r.code != http.StatusOK {
		t.Fatalf("PUT = %d %s", r.code, r.body)
	}
	got, _, err := c.ConfigEntries().Get(api.ServiceResolver, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := got.(*api.ServiceResolverConfigEntry)
	if r.DefaultSubset != "v1" || r.ConnectTimeout != 15*time.Second || !r.Subsets["v1"].OnlyPassing || r.Meta["owner_team"] != "a" {
		t.Errorf("read back %+v", r)
	}
}
