package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ingressGatewayEntry is the body of an ingress-gateway entry, as far as
// validation needs it.
type ingressGatewayEntry struct {
	TLS       gatewayTLSConfig
	Listeners []ingressListener
	Defaults  *ingressServiceConfig
	Meta      map[string]string
}

type gatewayTLSConfig struct {
	Enabled       bool
	TLSMinVersion string
	TLSMaxVersion string
	CipherSuites  []string
}

type ingressListener struct {
	Port     int
	Protocol string
	Services []ingressService
	TLS      *gatewayTLSConfig
}

type ingressService struct {
	Name            string
	Hosts           []string
	Namespace       string
	Partition       string
	RequestHeaders  *HTTPHeaderModifiers
	ResponseHeaders *HTTPHeaderModifiers
}

type ingressServiceConfig struct {
	MaxConnections        *uint32
	MaxPendingRequests    *uint32
	MaxConcurrentRequests *uint32
}

// IngressListenerServices returns the services an ingress-gateway body
// routes to with the protocol of each listener, for the checks across
// entries.
func IngressListenerServices(body []byte) (map[string]string, error) {
	var e ingressGatewayEntry
	if err := decodeEntry(body, &e); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range e.Listeners {
		for _, s := range l.Services {
			if s.Name != "*" {
				out[s.Name] = listenerProtocol(l.Protocol)
			}
		}
	}
	return out, nil
}

func listenerProtocol(p string) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(p)
}

func (e *ingressGatewayEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := validateTLSVersions("TLS", e.TLS.TLSMinVersion, e.TLS.TLSMaxVersion); err != nil {
		return err
	}
	if err := checkCount("Listeners", len(e.Listeners)); err != nil {
		return err
	}
	ports := map[int]bool{}
	for _, l := range e.Listeners {
		if l.Port < 1 || l.Port > 65535 {
			return fmt.Errorf("listener port %d is not a valid port", l.Port)
		}
		if ports[l.Port] {
			return fmt.Errorf("port %d declared on two listeners", l.Port)
		}
		ports[l.Port] = true
		proto := listenerProtocol(l.Protocol)
		if proto != "tcp" && !IsHTTPProtocol(proto) {
			return fmt.Errorf("protocol must be 'tcp', 'http', 'http2', or 'grpc'. '%s' is an unsupported protocol", l.Protocol)
		}
		if l.TLS != nil {
			if err := validateTLSVersions(fmt.Sprintf("listener on port %d: TLS", l.Port), l.TLS.TLSMinVersion, l.TLS.TLSMaxVersion); err != nil {
				return err
			}
		}
		if len(l.Services) == 0 {
			return fmt.Errorf("No service declared for listener with port %d", l.Port)
		}
		if err := checkCount(fmt.Sprintf("listener on port %d: Services", l.Port), len(l.Services)); err != nil {
			return err
		}
		if proto == "tcp" && len(l.Services) > 1 {
			return fmt.Errorf("Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' and 'http2' (listener on port %d)", l.Port)
		}
		services := map[string]bool{}
		hosts := map[string]bool{}
		for _, s := range l.Services {
			if s.Name == "" {
				return fmt.Errorf("Service name cannot be blank (listener on port %d)", l.Port)
			}
			if s.Name == "*" && !IsHTTPProtocol(proto) {
				return fmt.Errorf("Wildcard service name is only valid for L7 protocols, 'http', 'grpc' and 'http2' (listener on port %d)", l.Port)
			}
			if s.Partition != "" && s.Partition != "default" {
				return fmt.Errorf("Services[%s]: partitions are a Consul Enterprise feature", s.Name)
			}
			if services[s.Name] {
				return fmt.Errorf("Service %s cannot be added multiple times (listener on port %d)", s.Name, l.Port)
			}
			services[s.Name] = true
			if len(s.Hosts) > 0 {
				if !IsHTTPProtocol(proto) {
					return fmt.Errorf("Associating hosts to a service is not supported for the %s protocol (listener on port %d)", proto, l.Port)
				}
				if s.Name == "*" {
					return fmt.Errorf("Associating hosts to a wildcard service is not supported (listener on port %d)", l.Port)
				}
			}
			for _, h := range s.Hosts {
				if hosts[h] {
					return fmt.Errorf("Hosts must be unique within a specific listener (listener on port %d)", l.Port)
				}
				hosts[h] = true
				if err := validateHostname(h, true); err != nil {
					return fmt.Errorf("listener on port %d: %w", l.Port, err)
				}
			}
			if err := s.RequestHeaders.validate("RequestHeaders"); err != nil {
				return err
			}
			if err := s.ResponseHeaders.validate("ResponseHeaders"); err != nil {
				return err
			}
		}
	}
	return nil
}

// normalizeIngress fills in what Consul fills in on write: each listener's
// protocol (tcp) and the connection limits of Defaults (0), which clients
// read without a nil check.
func normalizeIngress(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	for k, v := range m {
		switch strings.ToLower(k) {
		case "defaults":
			d, ok := v.(map[string]any)
			if !ok {
				continue
			}
			for _, f := range []string{"MaxConnections", "MaxPendingRequests", "MaxConcurrentRequests"} {
				if getFold(d, f) == nil {
					deleteFold(d, f)
					d[f] = 0
				}
			}
		case "listeners":
			ls, _ := v.([]any)
			for _, l := range ls {
				lm, ok := l.(map[string]any)
				if !ok {
					continue
				}
				if p, _ := getFold(lm, "Protocol").(string); p == "" {
					deleteFold(lm, "Protocol")
					lm["Protocol"] = "tcp"
				}
			}
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return out, nil
}

func getFold(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

func deleteFold(m map[string]any, key string) {
	for k := range m {
		if strings.EqualFold(k, key) {
			delete(m, k)
		}
	}
}

// terminatingGatewayEntry is the body of a terminating-gateway entry.
type terminatingGatewayEntry struct {
	Services []struct {
		Name      string
		Namespace string
		CAFile    string
		CertFile  string
		KeyFile   string
		SNI       string
	}
	Meta map[string]string
}

func (e *terminatingGatewayEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := checkCount("Services", len(e.Services)); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, s := range e.Services {
		if s.Name == "" {
			return errors.New("Service name cannot be blank.")
		}
		if seen[s.Name] {
			return fmt.Errorf("Service %q was specified more than once", s.Name)
		}
		seen[s.Name] = true
		if (s.CertFile != "" || s.KeyFile != "") && (s.CAFile == "" || s.CertFile == "" || s.KeyFile == "") {
			return fmt.Errorf("Service %q must have a CertFile, CAFile, and KeyFile specified for TLS origination", s.Name)
		}
	}
	return nil
}
