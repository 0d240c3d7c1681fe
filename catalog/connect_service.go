package catalog

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Service kinds, as Consul names them.
const (
	// ServiceKindTypical is an ordinary service (the empty kind).
	ServiceKindTypical = ""
	// ServiceKindConnectProxy is a sidecar proxy fronting one service.
	ServiceKindConnectProxy = "connect-proxy"
)

// ConnectProxyConfig is the Proxy block of a connect-proxy service. Its JSON
// form is Consul's AgentServiceConnectProxyConfig: what a client registers
// is returned unchanged.
type ConnectProxyConfig struct {
	EnvoyExtensions        []map[string]any        `json:",omitempty" bexpr:"-"`
	DestinationServiceName string                  `json:",omitempty"`
	DestinationServiceID   string                  `json:",omitempty"`
	LocalServiceAddress    string                  `json:",omitempty"`
	LocalServicePort       int                     `json:",omitempty"`
	LocalServiceSocketPath string                  `json:",omitempty"`
	Mode                   string                  `json:",omitempty"`
	TransparentProxy       *TransparentProxyConfig `json:",omitempty"`
	// Config is opaque to the catalog (Envoy settings such as protocol or
	// bind addresses); its keys are kept as written.
	Config      map[string]any    `json:",omitempty" bexpr:"-"`
	Upstreams   []Upstream        `json:",omitempty"`
	MeshGateway MeshGatewayConfig `json:",omitempty"`
	Expose      ExposeConfig      `json:",omitempty"`
	AccessLogs  map[string]any    `json:",omitempty" bexpr:"-"`
}

// Upstream is a service a proxy's app reaches through a local listener.
type Upstream struct {
	DestinationType      string `json:",omitempty"`
	DestinationPartition string `json:",omitempty"`
	DestinationNamespace string `json:",omitempty"`
	DestinationPeer      string `json:",omitempty"`
	DestinationName      string
	Datacenter           string            `json:",omitempty"`
	LocalBindAddress     string            `json:",omitempty"`
	LocalBindPort        int               `json:",omitempty"`
	LocalBindSocketPath  string            `json:",omitempty"`
	LocalBindSocketMode  string            `json:",omitempty"`
	Config               map[string]any    `json:",omitempty" bexpr:"-"`
	MeshGateway          MeshGatewayConfig `json:",omitempty"`
	CentrallyConfigured  bool              `json:",omitempty" bexpr:"-"`
}

// Upstream destination types.
const (
	UpstreamDestTypeService       = "service"
	UpstreamDestTypePreparedQuery = "prepared_query"
)

// MeshGatewayConfig says how a proxy reaches other datacenters.
type MeshGatewayConfig struct {
	Mode string `json:",omitempty"`
}

// TransparentProxyConfig configures transparent proxy mode.
type TransparentProxyConfig struct {
	OutboundListenerPort int  `json:",omitempty"`
	DialedDirectly       bool `json:",omitempty"`
}

// ExposeConfig lists paths a proxy exposes without mTLS.
type ExposeConfig struct {
	Checks bool         `json:",omitempty"`
	Paths  []ExposePath `json:",omitempty"`
}

// ExposePath is one exposed path.
type ExposePath struct {
	ListenerPort    int    `json:",omitempty"`
	Path            string `json:",omitempty"`
	LocalPathPort   int    `json:",omitempty"`
	Protocol        string `json:",omitempty"`
	ParsedFromCheck bool   `json:",omitempty"`
}

// ServiceConnect is the Connect block of a service as the catalog keeps it:
// a sidecar_service is expanded by the agent and never stored.
type ServiceConnect struct {
	Native bool `json:",omitempty"`
}

// Limits on a proxy's configuration.
const (
	MaxProxyUpstreams   = 1024
	MaxProxyExposePaths = 256
)

// ConnectTarget returns the service whose mesh traffic this instance
// accepts: the destination of a connect-proxy, the service itself when it
// is Connect-native, and "" otherwise.
func (s *Service) ConnectTarget() string {
	switch {
	case s == nil:
		return ""
	case s.Kind == ServiceKindConnectProxy && s.Proxy != nil:
		return s.Proxy.DestinationServiceName
	case s.Connect != nil && s.Connect.Native:
		return s.Service
	}
	return ""
}

// ValidateConnect checks the mesh fields of a service (kind, proxy,
// upstreams), as the catalog does before a registration reaches Raft and an
// agent does before it takes a registration.
func (s *Service) ValidateConnect() error {
	if s.Kind == ServiceKindConnectProxy {
		if s.Proxy == nil || s.Proxy.DestinationServiceName == "" {
			return fmt.Errorf("%w: Proxy.DestinationServiceName must be set for a connect-proxy", ErrInvalidRequest)
		}
		if s.Port == 0 && s.SocketPath == "" {
			return fmt.Errorf("%w: Port must be set for a connect-proxy", ErrInvalidRequest)
		}
		if s.Connect != nil && s.Connect.Native {
			return fmt.Errorf("%w: A connect-proxy cannot also be Connect Native", ErrInvalidRequest)
		}
	}
	if s.Proxy == nil {
		return nil
	}
	if n := len(s.Proxy.Upstreams); n > MaxProxyUpstreams {
		return fmt.Errorf("%w: %d upstreams, more than %d", ErrInvalidRequest, n, MaxProxyUpstreams)
	}
	if n := len(s.Proxy.Expose.Paths); n > MaxProxyExposePaths {
		return fmt.Errorf("%w: %d exposed paths, more than %d", ErrInvalidRequest, n, MaxProxyExposePaths)
	}
	binds := map[string]bool{}
	for i, u := range s.Proxy.Upstreams {
		if u.DestinationName == "" {
			return fmt.Errorf("%w: upstream %d: DestinationName must be set", ErrInvalidRequest, i)
		}
		switch u.DestinationType {
		case "", UpstreamDestTypeService, UpstreamDestTypePreparedQuery:
		default:
			return fmt.Errorf("%w: upstream %q: unknown DestinationType %q", ErrInvalidRequest, u.DestinationName, u.DestinationType)
		}
		if u.LocalBindPort < 0 || u.LocalBindPort > 65535 {
			return fmt.Errorf("%w: upstream %q: LocalBindPort %d out of range", ErrInvalidRequest, u.DestinationName, u.LocalBindPort)
		}
		if u.LocalBindSocketPath != "" {
			if u.LocalBindPort != 0 || u.LocalBindAddress != "" {
				return fmt.Errorf("%w: upstream %q: LocalBindSocketPath cannot go with LocalBindPort or LocalBindAddress", ErrInvalidRequest, u.DestinationName)
			}
			if _, err := SocketMode(u.LocalBindSocketMode); err != nil {
				return fmt.Errorf("%w: upstream %q: %v", ErrInvalidRequest, u.DestinationName, err)
			}
			b := "unix:" + u.LocalBindSocketPath
			if binds[b] {
				return fmt.Errorf("%w: upstreams bind %s twice", ErrInvalidRequest, b)
			}
			binds[b] = true
		}
		if u.LocalBindPort > 0 {
			b := fmt.Sprintf("%s:%d", u.LocalBindAddress, u.LocalBindPort)
			if binds[b] {
				return fmt.Errorf("%w: upstreams bind %s twice", ErrInvalidRequest, b)
			}
			binds[b] = true
		}
	}
	if err := ValidateProxyMode(s.Proxy.Mode, s.Proxy.TransparentProxy); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if err := s.Proxy.Expose.validate(s.Port); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return nil
}

// validate checks exposed paths: absolute, ports in range, HTTP, one per
// listener port, none on the proxy's own port.
func (e ExposeConfig) validate(proxyPort int) error {
	ports := map[int]bool{}
	for _, p := range e.Paths {
		if p.Path == "" || p.Path[0] != '/' || len(p.Path) > 1024 {
			return fmt.Errorf("exposed path %q must be an absolute path of at most 1024 bytes", p.Path)
		}
		if p.LocalPathPort <= 0 || p.LocalPathPort > 65535 || p.ListenerPort <= 0 || p.ListenerPort > 65535 {
			return fmt.Errorf("exposed path %q: ListenerPort %d and LocalPathPort %d must be valid ports", p.Path, p.ListenerPort, p.LocalPathPort)
		}
		if ports[p.ListenerPort] || (proxyPort != 0 && p.ListenerPort == proxyPort) {
			return fmt.Errorf("exposed path %q: ListenerPort %d is used twice", p.Path, p.ListenerPort)
		}
		ports[p.ListenerPort] = true
		switch strings.ToLower(p.Protocol) {
		case "", "http", "http2":
		default:
			return fmt.Errorf("exposed path %q: protocol %q must be http or http2", p.Path, p.Protocol)
		}
	}
	return nil
}

// Proxy modes.
const (
	ProxyModeDirect      = "direct"
	ProxyModeTransparent = "transparent"
)

// ValidateProxyMode checks a proxy mode and its transparent proxy settings,
// of a registration or of a proxy-defaults or service-defaults entry.
func ValidateProxyMode(mode string, tp *TransparentProxyConfig) error {
	switch mode {
	case "", ProxyModeDirect, ProxyModeTransparent:
	default:
		return fmt.Errorf("unknown proxy Mode %q", mode)
	}
	if tp != nil && (tp.OutboundListenerPort < 0 || tp.OutboundListenerPort > 65535) {
		return fmt.Errorf("TransparentProxy.OutboundListenerPort %d out of range", tp.OutboundListenerPort)
	}
	return nil
}

// SocketMode parses an upstream's LocalBindSocketMode, an octal permission
// mode such as "0600" ("" is 0: the proxy's default).
func SocketMode(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("LocalBindSocketMode %q is not an octal mode of at most 0777", s)
	}
	return uint32(m), nil
}

// DecodeProxyConfig turns a proxy block as a configuration file or an
// agent registration writes it (snake_case or CamelCase keys) into a
// ConnectProxyConfig. The opaque Config maps keep their keys as written.
func DecodeProxyConfig(raw map[string]any) (*ConnectProxyConfig, error) {
	if raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(canonicalKeys(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: proxy: %v", ErrInvalidRequest, err)
	}
	var out ConnectProxyConfig
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%w: proxy: %v", ErrInvalidRequest, err)
	}
	return &out, nil
}

// DecodeServiceConnect turns a connect block (without its sidecar_service,
// which the agent takes out) into a ServiceConnect; nil when it says
// nothing the catalog keeps.
func DecodeServiceConnect(raw map[string]any) (*ServiceConnect, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(canonicalKeys(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: connect: %v", ErrInvalidRequest, err)
	}
	var out ServiceConnect
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%w: connect: %v", ErrInvalidRequest, err)
	}
	if !out.Native {
		return nil, nil
	}
	return &out, nil
}

// canonicalKeys drops the underscores of every key (encoding/json then
// matches "destination_service_id" to DestinationServiceID, as it matches
// names case-insensitively), except inside the opaque Config, Meta and
// AccessLogs maps.
func canonicalKeys(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			ck := strings.ReplaceAll(k, "_", "")
			switch strings.ToLower(ck) {
			case "config", "meta", "accesslogs", "envoyextensions":
				out[ck] = val
			default:
				out[ck] = canonicalKeys(val)
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = canonicalKeys(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = canonicalKeys(e)
		}
		return out
	}
	return v
}

// connectIndexKey is the index-table key tracking changes to the set of
// mesh-capable instances (proxies and native instances) of a service.
func connectIndexKey(name string) string { return "connect." + strings.ToLower(name) }
