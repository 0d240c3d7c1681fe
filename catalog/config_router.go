package catalog

import (
	"fmt"
	"net/http"
	"strings"
)

// ServiceRouterEntry is the body of a service-router entry: L7 routes
// matched in order, each sending matching requests to a destination.
type ServiceRouterEntry struct {
	Routes []ServiceRoute    `json:",omitempty"`
	Meta   map[string]string `json:",omitempty"`
}

// ServiceRoute is one route: a match and where matching requests go.
type ServiceRoute struct {
	Match       *ServiceRouteMatch       `json:",omitempty"`
	Destination *ServiceRouteDestination `json:",omitempty"`
}

// ServiceRouteMatch says which requests a route takes.
type ServiceRouteMatch struct {
	HTTP *ServiceRouteHTTPMatch `json:",omitempty"`
}

// ServiceRouteHTTPMatch matches on path, headers, query and method.
type ServiceRouteHTTPMatch struct {
	PathExact  string                            `json:",omitempty"`
	PathPrefix string                            `json:",omitempty"`
	PathRegex  string                            `json:",omitempty"`
	Header     []ServiceRouteHTTPMatchHeader     `json:",omitempty"`
	QueryParam []ServiceRouteHTTPMatchQueryParam `json:",omitempty"`
	Methods    []string                          `json:",omitempty"`
}

// ServiceRouteHTTPMatchHeader matches one request header.
type ServiceRouteHTTPMatchHeader struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Prefix  string `json:",omitempty"`
	Suffix  string `json:",omitempty"`
	Regex   string `json:",omitempty"`
	Invert  bool   `json:",omitempty"`
}

// ServiceRouteHTTPMatchQueryParam matches one query parameter.
type ServiceRouteHTTPMatchQueryParam struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Regex   string `json:",omitempty"`
}

// ServiceRouteDestination is where a route sends requests, with retries
// and timeouts.
type ServiceRouteDestination struct {
	Service               string               `json:",omitempty"`
	ServiceSubset         string               `json:",omitempty"`
	Namespace             string               `json:",omitempty"`
	Partition             string               `json:",omitempty"`
	PrefixRewrite         string               `json:",omitempty"`
	RequestTimeout        Duration             `json:",omitempty"`
	IdleTimeout           Duration             `json:",omitempty"`
	NumRetries            uint32               `json:",omitempty"`
	RetryOnConnectFailure bool                 `json:",omitempty"`
	RetryOnStatusCodes    []uint32             `json:",omitempty"`
	RetryOn               []string             `json:",omitempty"`
	RequestHeaders        *HTTPHeaderModifiers `json:",omitempty"`
	ResponseHeaders       *HTTPHeaderModifiers `json:",omitempty"`
}

// validRetryOn are the retry conditions Envoy (and so Consul) knows.
var validRetryOn = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true,
	"envoy-ratelimited": true, "retriable-4xx": true, "refused-stream": true,
	"cancelled": true, "deadline-exceeded": true, "internal": true,
	"resource-exhausted": true, "unavailable": true,
}

var validMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodConnect: true,
	http.MethodOptions: true, http.MethodTrace: true,
}

func (e *ServiceRouterEntry) validate(string) error {
	if err := validateMeta(e.Meta); err != nil {
		return err
	}
	if err := checkCount("Routes", len(e.Routes)); err != nil {
		return err
	}
	for i, r := range e.Routes {
		var m *ServiceRouteHTTPMatch
		if r.Match != nil {
			m = r.Match.HTTP
		}
		if err := m.validate(i); err != nil {
			return err
		}
		if err := r.Destination.validate(i, m); err != nil {
			return err
		}
	}
	return nil
}

func countSet(vals ...bool) int {
	n := 0
	for _, v := range vals {
		if v {
			n++
		}
	}
	return n
}

func (m *ServiceRouteHTTPMatch) validate(i int) error {
	if m == nil {
		return nil
	}
	if countSet(m.PathExact != "", m.PathPrefix != "", m.PathRegex != "") > 1 {
		return fmt.Errorf("Route[%d] should only contain at most one of PathExact, PathPrefix, or PathRegex", i)
	}
	if m.PathExact != "" && !strings.HasPrefix(m.PathExact, "/") {
		return fmt.Errorf("Route[%d] PathExact doesn't start with '/': %q", i, m.PathExact)
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		return fmt.Errorf("Route[%d] PathPrefix doesn't start with '/': %q", i, m.PathPrefix)
	}
	if err := checkCount(fmt.Sprintf("Route[%d] Header", i), len(m.Header)+len(m.QueryParam)+len(m.Methods)); err != nil {
		return err
	}
	for j, h := range m.Header {
		if h.Name == "" {
			return fmt.Errorf("Route[%d] Header[%d] missing required Name field", i, j)
		}
		if countSet(h.Present, h.Exact != "", h.Prefix != "", h.Suffix != "", h.Regex != "") > 1 {
			return fmt.Errorf("Route[%d] Header[%d] should only contain one of Present, Exact, Prefix, Suffix, or Regex", i, j)
		}
	}
	for j, q := range m.QueryParam {
		if q.Name == "" {
			return fmt.Errorf("Route[%d] QueryParam[%d] missing required Name field", i, j)
		}
		if countSet(q.Present, q.Exact != "", q.Regex != "") > 1 {
			return fmt.Errorf("Route[%d] QueryParam[%d] should only contain one of Present, Exact, or Regex", i, j)
		}
	}
	seen := map[string]bool{}
	for _, meth := range m.Methods {
		up := strings.ToUpper(meth)
		if !validMethods[up] {
			return fmt.Errorf("Route[%d] Methods contains an invalid method %q", i, meth)
		}
		if seen[up] {
			return fmt.Errorf("Route[%d] Methods contains %q more than once", i, meth)
		}
		seen[up] = true
	}
	return nil
}

func (d *ServiceRouteDestination) validate(i int, m *ServiceRouteHTTPMatch) error {
	if d == nil {
		return nil
	}
	if d.PrefixRewrite != "" && (m == nil || (m.PathExact == "" && m.PathPrefix == "")) {
		return fmt.Errorf("Route[%d] cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix", i)
	}
	if d.RequestTimeout < 0 {
		return fmt.Errorf("Route[%d] RequestTimeout cannot be negative", i)
	}
	if d.IdleTimeout < 0 {
		return fmt.Errorf("Route[%d] IdleTimeout cannot be negative", i)
	}
	if d.Partition != "" && d.Partition != "default" {
		return fmt.Errorf("Route[%d]: partitions are a Consul Enterprise feature", i)
	}
	if err := checkCount(fmt.Sprintf("Route[%d] RetryOn", i), len(d.RetryOn)+len(d.RetryOnStatusCodes)); err != nil {
		return err
	}
	for _, c := range d.RetryOn {
		if !validRetryOn[c] {
			return fmt.Errorf("Route[%d] contains an invalid retry condition: %q", i, c)
		}
	}
	for _, code := range d.RetryOnStatusCodes {
		if code < 100 || code > 599 {
			return fmt.Errorf("Route[%d] RetryOnStatusCodes contains an invalid status code %d", i, code)
		}
	}
	if err := d.RequestHeaders.validate(fmt.Sprintf("Route[%d].RequestHeaders", i)); err != nil {
		return err
	}
	return d.ResponseHeaders.validate(fmt.Sprintf("Route[%d].ResponseHeaders", i))
}
