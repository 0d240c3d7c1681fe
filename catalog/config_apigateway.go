package catalog

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// resourceReference names another config entry (a route's parent
// gateway, a listener's certificate).
type resourceReference struct {
	Kind        string
	Name        string
	SectionName string
	Namespace   string
	Partition   string
}

// apiGatewayEntry is the body of an api-gateway entry.
type apiGatewayEntry struct {
	Listeners []struct {
		Name     string
		Hostname string
		Port     int
		Protocol string
		TLS      struct {
			Certificates []resourceReference
			MinVersion   string
			MaxVersion   string
			CipherSuites []string
		}
	}
	Meta map[string]string
}

func (e *apiGatewayEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := checkCount("Listeners", len(e.Listeners)); err != nil {
		return err
	}
	names := map[string]bool{}
	for i, l := range e.Listeners {
		if l.Name == "" {
			return fmt.Errorf("Listeners[%d]: listener name cannot be blank", i)
		}
		if names[l.Name] {
			return fmt.Errorf("Listeners[%d]: listener name %q is duplicated", i, l.Name)
		}
		names[l.Name] = true
		if l.Port < 1 || l.Port > 65535 {
			return fmt.Errorf("listener %q: port %d is not a valid port", l.Name, l.Port)
		}
		switch strings.ToLower(l.Protocol) {
		case "tcp", "http":
		default:
			return fmt.Errorf("listener %q: unsupported protocol %q, want \"tcp\" or \"http\"", l.Name, l.Protocol)
		}
		if l.Hostname != "" {
			if err := validateHostname(l.Hostname, true); err != nil {
				return fmt.Errorf("listener %q: %w", l.Name, err)
			}
		}
		if err := validateTLSVersions(fmt.Sprintf("listener %q", l.Name), l.TLS.MinVersion, l.TLS.MaxVersion); err != nil {
			return err
		}
		for j, c := range l.TLS.Certificates {
			if c.Kind != "" && c.Kind != KindInlineCertificate {
				return fmt.Errorf("listener %q: Certificates[%d]: unsupported certificate kind %q, want %q", l.Name, j, c.Kind, KindInlineCertificate)
			}
			if c.Name == "" {
				return fmt.Errorf("listener %q: Certificates[%d]: certificate reference must have a Name", l.Name, j)
			}
		}
	}
	return nil
}

func validateParents(parents []resourceReference) error {
	if len(parents) == 0 {
		return errors.New("route must have at least one parent")
	}
	if err := checkCount("Parents", len(parents)); err != nil {
		return err
	}
	for i, p := range parents {
		if p.Kind != "" && p.Kind != KindAPIGateway {
			return fmt.Errorf("Parents[%d]: unsupported parent kind %q, want %q", i, p.Kind, KindAPIGateway)
		}
		if p.Name == "" {
			return fmt.Errorf("Parents[%d]: parent reference must have a Name", i)
		}
	}
	return nil
}

// httpRouteEntry is the body of an http-route entry.
type httpRouteEntry struct {
	Parents []resourceReference
	Rules   []struct {
		Matches []struct {
			Headers []struct{ Match, Name, Value string }
			Method  string
			Path    struct{ Match, Value string }
			Query   []struct{ Match, Name, Value string }
		}
		Services []struct {
			Name   string
			Weight int
		}
	}
	Hostnames []string
	Meta      map[string]string
}

func (e *httpRouteEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := validateParents(e.Parents); err != nil {
		return err
	}
	if err := checkCount("Rules", len(e.Rules)+len(e.Hostnames)); err != nil {
		return err
	}
	for _, h := range e.Hostnames {
		if err := validateHostname(h, false); err != nil {
			return fmt.Errorf("Hostnames: %w", err)
		}
	}
	for i, r := range e.Rules {
		for j, m := range r.Matches {
			where := fmt.Sprintf("Rules[%d].Matches[%d]", i, j)
			switch m.Path.Match {
			case "", "exact", "prefix":
				if m.Path.Value != "" && !strings.HasPrefix(m.Path.Value, "/") {
					return fmt.Errorf("%s: path %q must start with '/'", where, m.Path.Value)
				}
			case "regex":
			default:
				return fmt.Errorf("%s: unsupported path match type %q", where, m.Path.Match)
			}
			if m.Method != "" && !validMethods[m.Method] {
				return fmt.Errorf("%s: unsupported method %q", where, m.Method)
			}
			for _, h := range m.Headers {
				switch h.Match {
				case "exact", "prefix", "present", "regex", "suffix":
				default:
					return fmt.Errorf("%s: unsupported header match type %q", where, h.Match)
				}
				if h.Name == "" {
					return fmt.Errorf("%s: header match must have a Name", where)
				}
			}
			for _, q := range m.Query {
				switch q.Match {
				case "exact", "present", "regex":
				default:
					return fmt.Errorf("%s: unsupported query match type %q", where, q.Match)
				}
				if q.Name == "" {
					return fmt.Errorf("%s: query match must have a Name", where)
				}
			}
		}
		for j, s := range r.Services {
			if s.Name == "" {
				return fmt.Errorf("Rules[%d].Services[%d]: service name cannot be blank", i, j)
			}
			if s.Weight < 0 {
				return fmt.Errorf("Rules[%d].Services[%d]: weight cannot be negative", i, j)
			}
		}
	}
	return nil
}

// tcpRouteEntry is the body of a tcp-route entry.
type tcpRouteEntry struct {
	Parents  []resourceReference
	Services []struct{ Name string }
	Meta     map[string]string
}

func (e *tcpRouteEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := validateParents(e.Parents); err != nil {
		return err
	}
	if len(e.Services) > 1 {
		return errors.New("tcp-route currently only supports one service")
	}
	for _, s := range e.Services {
		if s.Name == "" {
			return errors.New("Services: service name cannot be blank")
		}
	}
	return nil
}

// inlineCertificateEntry is the body of an inline-certificate entry: a
// PEM certificate chain and its private key.
type inlineCertificateEntry struct {
	Certificate string
	PrivateKey  string
	Meta        map[string]string
}

func (e *inlineCertificateEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	pair, err := tls.X509KeyPair([]byte(e.Certificate), []byte(e.PrivateKey))
	if err != nil {
		return fmt.Errorf("invalid certificate or private key: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("failed to parse certificate: %w", err)
	}
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("key length must be at least 2048 bits, not %d", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		return fmt.Errorf("unsupported key type %T", k)
	}
	return nil
}
