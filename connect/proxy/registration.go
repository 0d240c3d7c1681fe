package proxy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultLocalServiceAddress is the application's host when a proxy
// registration names none.
const DefaultLocalServiceAddress = "127.0.0.1"

// defaultPublicBind is where the public listener binds when the
// registration names no address: every interface, as other nodes' proxies
// dial the registered address.
const defaultPublicBind = "0.0.0.0"

// FromService fills cfg's service, listeners and timeouts from a
// connect-proxy registration on the agent, as Consul's built-in proxy reads
// it: the public listener on Proxy.Config bind_address/bind_port (default
// the service's address and port), the application at
// Proxy.Config local_service_address ("host:port"; default
// LocalServiceAddress:LocalServicePort), handshake_timeout_ms and
// local_connect_timeout_ms, and each upstream's local_bind_address and
// local_bind_port with its Config connect_timeout_ms.
func FromService(svc *api.AgentService, cfg Config) (Config, error) {
	if svc == nil || svc.Kind != api.ServiceKindConnectProxy || svc.Proxy == nil {
		return cfg, errors.New("not a connect-proxy registration")
	}
	p := svc.Proxy
	if p.DestinationServiceName == "" {
		return cfg, fmt.Errorf("proxy %s has no destination service name", svc.ID)
	}
	cfg.Service = p.DestinationServiceName

	bindAddr, err := stringKey(p.Config, "bind_address")
	if err != nil {
		return cfg, fmt.Errorf("proxy %s: %w", svc.ID, err)
	}
	if bindAddr == "" {
		bindAddr = svc.Address
	}
	if bindAddr == "" {
		bindAddr = defaultPublicBind
	}
	bindPort, err := intKey(p.Config, "bind_port")
	if err != nil {
		return cfg, fmt.Errorf("proxy %s: %w", svc.ID, err)
	}
	if bindPort == 0 {
		bindPort = svc.Port
	}
	if bindPort <= 0 || bindPort > 65535 {
		return cfg, fmt.Errorf("proxy %s has no port to listen on", svc.ID)
	}
	cfg.PublicListener = net.JoinHostPort(bindAddr, strconv.Itoa(bindPort))

	local, err := stringKey(p.Config, "local_service_address")
	if err != nil {
		return cfg, fmt.Errorf("proxy %s: %w", svc.ID, err)
	}
	if local == "" {
		host := p.LocalServiceAddress
		if host == "" {
			host = DefaultLocalServiceAddress
		}
		if p.LocalServicePort <= 0 {
			return cfg, fmt.Errorf("proxy %s has no local service port", svc.ID)
		}
		local = net.JoinHostPort(host, strconv.Itoa(p.LocalServicePort))
	}
	cfg.LocalServiceAddress = local

	for _, k := range []struct {
		key string
		dst *time.Duration
	}{{"handshake_timeout_ms", &cfg.HandshakeTimeout}, {"local_connect_timeout_ms", &cfg.LocalConnectTimeout}} {
		ms, err := intKey(p.Config, k.key)
		if err != nil {
			return cfg, fmt.Errorf("proxy %s: %w", svc.ID, err)
		}
		if ms > 0 {
			*k.dst = time.Duration(ms) * time.Millisecond
		}
	}

	cfg.Upstreams = nil
	for _, u := range p.Upstreams {
		if u.DestinationType != "" && u.DestinationType != api.UpstreamDestTypeService && u.DestinationType != api.UpstreamDestTypePreparedQuery {
			return cfg, fmt.Errorf("proxy %s: upstream %s: destination type %q is not supported by the built-in proxy",
				svc.ID, u.DestinationName, u.DestinationType)
		}
		if u.DestinationPeer != "" || u.LocalBindSocketPath != "" {
			return cfg, fmt.Errorf("proxy %s: upstream %s: peers and unix sockets are not supported by the built-in proxy",
				svc.ID, u.DestinationName)
		}
		up := Upstream{DestinationName: u.DestinationName, Datacenter: u.Datacenter,
			LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort,
			PreparedQuery: u.DestinationType == api.UpstreamDestTypePreparedQuery}
		ms, err := intKey(u.Config, "connect_timeout_ms")
		if err != nil {
			return cfg, fmt.Errorf("proxy %s: upstream %s: %w", svc.ID, u.DestinationName, err)
		}
		if ms > 0 {
			up.ConnectTimeout = time.Duration(ms) * time.Millisecond
		}
		cfg.Upstreams = append(cfg.Upstreams, up)
	}
	return cfg, nil
}

// stringKey reads an optional string from opaque proxy configuration.
func stringKey(m map[string]any, key string) (string, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a string, got %T", key, v)
	}
	return s, nil
}

// intKey reads an optional non-negative integer (a JSON number or a
// decimal string) from opaque proxy configuration.
func intKey(m map[string]any, key string) (int, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return 0, nil
	}
	var n int
	switch x := v.(type) {
	case float64:
		if x != float64(int(x)) {
			return 0, fmt.Errorf("%s: %v is not an integer", key, x)
		}
		n = int(x)
	case int:
		n = x
	case string:
		i, err := strconv.Atoi(x)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not an integer", key, x)
		}
		n = i
	default:
		return 0, fmt.Errorf("%s: want a number, got %T", key, v)
	}
	if n < 0 || n > 1<<31-1 {
		return 0, fmt.Errorf("%s: %d out of range", key, n)
	}
	return n, nil
}
