package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Config entry kinds, as Consul names them. service-defaults,
// proxy-defaults, service-intentions and mesh are checked by the HTTP API
// (intentions need the connect package); the others by
// NormalizeConfigEntry, each kind in its own config_<kind>.go file.
const (
	KindServiceDefaults    = "service-defaults"
	KindProxyDefaults      = "proxy-defaults"
	KindServiceIntentions  = "service-intentions"
	KindMesh               = "mesh"
	KindServiceResolver    = "service-resolver"
	KindServiceSplitter    = "service-splitter"
	KindServiceRouter      = "service-router"
	KindIngressGateway     = "ingress-gateway"
	KindTerminatingGateway = "terminating-gateway"
	KindAPIGateway         = "api-gateway"
	KindBoundAPIGateway    = "bound-api-gateway"
	KindHTTPRoute          = "http-route"
	KindTCPRoute           = "tcp-route"
	KindInlineCertificate  = "inline-certificate"
	KindExportedServices   = "exported-services"
	KindJWTProvider        = "jwt-provider"
	KindSamenessGroup      = "sameness-group"
)

// ErrReadOnlyKind is returned for a write of a kind only Tribune writes.
var ErrReadOnlyKind = errors.New("entries of this kind are written by Tribune itself and cannot be written through the API")

// KnownConfigKind reports whether kind is a config entry kind Tribune
// stores.
func KnownConfigKind(kind string) bool {
	switch kind {
	case KindServiceDefaults, KindProxyDefaults, KindServiceIntentions, KindMesh,
		KindServiceResolver, KindServiceSplitter, KindServiceRouter,
		KindIngressGateway, KindTerminatingGateway, KindAPIGateway, KindBoundAPIGateway,
		KindHTTPRoute, KindTCPRoute, KindInlineCertificate, KindExportedServices,
		KindJWTProvider, KindSamenessGroup:
		return true
	}
	return false
}

// Bounds on the lists of one entry; the whole body is bounded by
// MaxConfigEntryBody.
const (
	maxEntryItems = 1024
	maxMetaPairs  = 64
	maxMetaKey    = 128
	maxMetaValue  = 512
)

// NormalizeConfigEntry checks the body of an entry of one of the kinds
// handled in this package (resolver, splitter, router, gateways, routes,
// certificates, exports, JWT providers) against the rules Consul documents
// and returns the body to store: the body as written, with the defaults
// Consul fills in where clients rely on them. It only looks at the entry
// itself; rules across entries (protocols, subsets of other services) are
// the discovery chain's.
func NormalizeConfigEntry(kind, name string, body []byte) ([]byte, error) {
	var (
		v   interface{ validate(name string) error }
		err error
	)
	switch kind {
	case KindServiceResolver:
		v = new(ServiceResolverEntry)
	case KindServiceSplitter:
		v = new(ServiceSplitterEntry)
	case KindServiceRouter:
		v = new(ServiceRouterEntry)
	case KindIngressGateway:
		v = new(ingressGatewayEntry)
	case KindTerminatingGateway:
		v = new(terminatingGatewayEntry)
	case KindAPIGateway:
		v = new(apiGatewayEntry)
	case KindHTTPRoute:
		v = new(httpRouteEntry)
	case KindTCPRoute:
		v = new(tcpRouteEntry)
	case KindInlineCertificate:
		v = new(inlineCertificateEntry)
	case KindExportedServices:
		v = new(exportedServicesEntry)
	case KindJWTProvider:
		v = new(jwtProviderEntry)
	case KindBoundAPIGateway:
		return nil, ErrReadOnlyKind
	case KindSamenessGroup:
		return nil, errors.New("sameness groups are a Consul Enterprise feature")
	default:
		return nil, fmt.Errorf("invalid config entry kind: %s", kind)
	}
	if err = decodeEntry(body, v); err != nil {
		return nil, err
	}
	if err := v.validate(name); err != nil {
		return nil, err
	}
	if kind == KindIngressGateway {
		return normalizeIngress(body)
	}
	return body, nil
}

// decodeEntry decodes an entry body into its typed form: field names match
// without regard to case, as Consul's decoder does.
func decodeEntry(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// DecodeConfigEntry decodes a stored entry's body into v, one of the typed
// entries of this package (ServiceResolverEntry, ServiceSplitterEntry,
// ServiceRouterEntry).
func DecodeConfigEntry(e *ConfigEntry, v any) error {
	if err := decodeEntry(e.Body, v); err != nil {
		return fmt.Errorf("config entry %s/%s: %w", e.Kind, e.Name, err)
	}
	return nil
}

// Duration is a duration as Consul's JSON carries it: a Go duration string
// ("5s") or a number of nanoseconds.
type Duration time.Duration

// UnmarshalJSON accepts a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	if string(b) == "null" {
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string like \"5s\" or nanoseconds", b)
	}
	*d = Duration(n)
	return nil
}

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string, as Consul does.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// HTTPHeaderModifiers adds, sets and removes HTTP headers.
type HTTPHeaderModifiers struct {
	Add    map[string]string `json:",omitempty"`
	Set    map[string]string `json:",omitempty"`
	Remove []string          `json:",omitempty"`
}

func (m *HTTPHeaderModifiers) validate(where string) error {
	if m == nil {
		return nil
	}
	if len(m.Add)+len(m.Set)+len(m.Remove) > maxEntryItems {
		return fmt.Errorf("%s: more than %d header changes", where, maxEntryItems)
	}
	for _, set := range []map[string]string{m.Add, m.Set} {
		for k := range set {
			if k == "" {
				return fmt.Errorf("%s: header name cannot be empty", where)
			}
		}
	}
	for _, k := range m.Remove {
		if k == "" {
			return fmt.Errorf("%s: header name cannot be empty", where)
		}
	}
	return nil
}

func validateMeta(meta map[string]string) error {
	if len(meta) > maxMetaPairs {
		return fmt.Errorf("Meta: %d pairs, max %d", len(meta), maxMetaPairs)
	}
	for k, v := range meta {
		if k == "" {
			return errors.New("Meta: key cannot be blank")
		}
		if len(k) > maxMetaKey {
			return fmt.Errorf("Meta: key %q longer than %d bytes", k, maxMetaKey)
		}
		if len(v) > maxMetaValue {
			return fmt.Errorf("Meta: value of %q longer than %d bytes", k, maxMetaValue)
		}
	}
	return nil
}

// checkCount bounds a list of an entry.
func checkCount(what string, n int) error {
	if n > maxEntryItems {
		return fmt.Errorf("%s: %d items, max %d", what, n, maxEntryItems)
	}
	return nil
}

// validHostname matches a DNS name, optionally starting with one "*."
// label.
var validHostname = regexp.MustCompile(`^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

func validateHostname(h string, wildcardOK bool) error {
	if h == "*" && wildcardOK {
		return nil
	}
	if len(h) > 253 || !validHostname.MatchString(h) {
		return fmt.Errorf("host %q must be a valid DNS hostname", h)
	}
	if strings.HasPrefix(h, "*.") && !wildcardOK {
		return fmt.Errorf("host %q: wildcard hostnames are not supported here", h)
	}
	return nil
}

// validTLSVersion reports whether v is a TLS version name Consul accepts.
func validTLSVersion(v string) bool {
	switch v {
	case "", "TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3":
		return true
	}
	return false
}

func validateTLSVersions(where, minV, maxV string) error {
	if !validTLSVersion(minV) {
		return fmt.Errorf("%s: TLSMinVersion: TLS version %q is not supported", where, minV)
	}
	if !validTLSVersion(maxV) {
		return fmt.Errorf("%s: TLSMaxVersion: TLS version %q is not supported", where, maxV)
	}
	if minV != "" && maxV != "" && minV != "TLS_AUTO" && maxV != "TLS_AUTO" && minV > maxV {
		return fmt.Errorf("%s: TLSMinVersion %s is higher than TLSMaxVersion %s", where, minV, maxV)
	}
	return nil
}

// IsHTTPProtocol reports whether a service protocol is one of the L7
// protocols that permit routing and splitting.
func IsHTTPProtocol(p string) bool {
	switch p {
	case "http", "http2", "grpc":
		return true
	}
	return false
}
