// Package discoverychain compiles the discovery chain of a service: the
// graph of service-router, service-splitter and service-resolver config
// entries that decides where a request for the service goes, down to the
// targets (a service, subset and datacenter) that the xDS layer turns into
// clusters. The result has the shape of Consul's CompiledDiscoveryChain, as
// /v1/discovery-chain/<service> serves it.
//
// The package is pure: entries come in, a chain or an error comes out. It
// reads no store and keeps no state; callers read the entries (and block
// on them) themselves.
package discoverychain

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// Node types, as Consul names them.
const (
	NodeTypeRouter   = "router"
	NodeTypeSplitter = "splitter"
	NodeTypeResolver = "resolver"
)

// DefaultConnectTimeout is the connect timeout of a target whose resolver
// does not set one.
const DefaultConnectTimeout = 5 * time.Second

// Namespace and partition of every chain: Tribune, like Consul's open
// source edition, has only the default ones.
const (
	defaultNamespace = "default"
	defaultPartition = "default"
)

// maxRedirects bounds a chain of resolver redirects; a longer one is a
// loop.
const maxRedirects = 64

// Entries are the config entries chains are compiled from, by service
// name. Build them with FromConfigEntries.
type Entries struct {
	Routers   map[string]*catalog.ServiceRouterEntry
	Splitters map[string]*catalog.ServiceSplitterEntry
	Resolvers map[string]*catalog.ServiceResolverEntry
	// Defaults are the protocol, mesh gateway mode and meta of each
	// service from its service-defaults entry.
	Defaults map[string]ServiceDefaults
	// Global is what the proxy-defaults entry sets for every service.
	Global ServiceDefaults
}

// ServiceDefaults is what the chain takes from service-defaults and
// proxy-defaults.
type ServiceDefaults struct {
	Protocol        string
	MeshGatewayMode string
	Meta            map[string]string
	// Mode is the proxy mode ("", "direct", "transparent") and
	// TransparentProxy its settings, for the sidecars of the service.
	Mode             string
	TransparentProxy catalog.TransparentProxyConfig
}

// FromConfigEntries sorts stored config entries into Entries; kinds the
// chain does not use are skipped.
func FromConfigEntries(list []*catalog.ConfigEntry) (*Entries, error) {
	out := &Entries{
		Routers:   map[string]*catalog.ServiceRouterEntry{},
		Splitters: map[string]*catalog.ServiceSplitterEntry{},
		Resolvers: map[string]*catalog.ServiceResolverEntry{},
		Defaults:  map[string]ServiceDefaults{},
	}
	for _, e := range list {
		var err error
		switch e.Kind {
		case catalog.KindServiceRouter:
			v := new(catalog.ServiceRouterEntry)
			err = catalog.DecodeConfigEntry(e, v)
			out.Routers[e.Name] = v
		case catalog.KindServiceSplitter:
			v := new(catalog.ServiceSplitterEntry)
			err = catalog.DecodeConfigEntry(e, v)
			out.Splitters[e.Name] = v
		case catalog.KindServiceResolver:
			v := new(catalog.ServiceResolverEntry)
			err = catalog.DecodeConfigEntry(e, v)
			out.Resolvers[e.Name] = v
		case catalog.KindServiceDefaults:
			var v struct {
				Protocol         string
				MeshGateway      struct{ Mode string }
				Meta             map[string]string
				Mode             string
				TransparentProxy catalog.TransparentProxyConfig
			}
			err = catalog.DecodeConfigEntry(e, &v)
			out.Defaults[e.Name] = ServiceDefaults{Protocol: strings.ToLower(v.Protocol), MeshGatewayMode: v.MeshGateway.Mode, Meta: v.Meta,
				Mode: v.Mode, TransparentProxy: v.TransparentProxy}
		case catalog.KindProxyDefaults:
			var v struct {
				Config           map[string]any
				MeshGateway      struct{ Mode string }
				Mode             string
				TransparentProxy catalog.TransparentProxyConfig
			}
			err = catalog.DecodeConfigEntry(e, &v)
			p, _ := v.Config["protocol"].(string)
			out.Global = ServiceDefaults{Protocol: strings.ToLower(p), MeshGatewayMode: v.MeshGateway.Mode,
				Mode: v.Mode, TransparentProxy: v.TransparentProxy}
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Protocol is a service's protocol: its service-defaults, else
// proxy-defaults, else tcp.
func (e *Entries) Protocol(service string) string {
	if p := e.Defaults[service].Protocol; p != "" {
		return p
	}
	if e.Global.Protocol != "" {
		return e.Global.Protocol
	}
	return "tcp"
}

// ProxyMode is the mode of a service's sidecars and its transparent proxy
// settings: its service-defaults, else proxy-defaults (a registration's
// own Proxy.Mode comes before both; see the caller).
func (e *Entries) ProxyMode(service string) (string, catalog.TransparentProxyConfig) {
	d := e.Defaults[service]
	mode := d.Mode
	if mode == "" {
		mode = e.Global.Mode
	}
	tp := d.TransparentProxy
	if tp.OutboundListenerPort == 0 {
		tp.OutboundListenerPort = e.Global.TransparentProxy.OutboundListenerPort
	}
	tp.DialedDirectly = tp.DialedDirectly || e.Global.TransparentProxy.DialedDirectly
	return mode, tp
}

func (e *Entries) meshGatewayMode(service string) string {
	if m := e.Defaults[service].MeshGatewayMode; m != "" {
		return m
	}
	return e.Global.MeshGatewayMode
}

// ChainServices returns every service that has a router, splitter or
// resolver: the chains a change to the entries can break.
func (e *Entries) ChainServices() []string {
	seen := map[string]bool{}
	for n := range e.Routers {
		seen[n] = true
	}
	for n := range e.Splitters {
		seen[n] = true
	}
	for n := range e.Resolvers {
		seen[n] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Request says what to compile: the service, the datacenter the chain is
// evaluated in, the CA's trust domain (for SNI names) and the overrides a
// caller may ask for.
type Request struct {
	Service                string
	Datacenter             string
	TrustDomain            string
	OverrideProtocol       string
	OverrideConnectTimeout time.Duration
	OverrideMeshGateway    string
}

// Chain is a compiled discovery chain, in Consul's CompiledDiscoveryChain
// shape.
type Chain struct {
	ServiceName       string
	Namespace         string
	Datacenter        string
	CustomizationHash string `json:",omitempty"`
	Default           bool   `json:",omitempty"`
	Protocol          string
	ServiceMeta       map[string]string `json:",omitempty"`
	StartNode         string            `json:",omitempty"`
	Nodes             map[string]*Node  `json:",omitempty"`
	Targets           map[string]*Target
	// AutoVirtualIPs and ManualVirtualIPs are the service's virtual IPs;
	// the compiler leaves them to the caller, who reads them.
	AutoVirtualIPs   []string `json:",omitempty"`
	ManualVirtualIPs []string `json:",omitempty"`
}

// Node is one node of the graph.
type Node struct {
	Type         string
	Name         string
	Routes       []*Route              `json:",omitempty"`
	Splits       []*Split              `json:",omitempty"`
	Resolver     *Resolver             `json:",omitempty"`
	LoadBalancer *catalog.LoadBalancer `json:",omitempty"`
}

// Route is one route of a router node: its definition and the node its
// requests go to.
type Route struct {
	Definition *catalog.ServiceRoute
	NextNode   string
}

// Split is one share of a splitter node.
type Split struct {
	Definition *catalog.ServiceSplit
	Weight     float32
	NextNode   string
}

// Resolver is a resolver node: the target it resolves to and where it
// fails over.
type Resolver struct {
	Default        bool
	ConnectTimeout catalog.Duration
	RequestTimeout catalog.Duration `json:",omitempty"`
	Target         string
	Failover       *Failover `json:",omitempty"`
}

// Failover lists the targets tried, in order, when a resolver's target has
// no healthy instance.
type Failover struct {
	Targets []string
	Policy  *catalog.ServiceResolverFailoverPolicy `json:",omitempty"`
}

// MeshGatewayConfig is a target's mesh gateway mode.
type MeshGatewayConfig struct {
	Mode string `json:",omitempty"`
}

// Target is one service, subset and datacenter (or peer) that requests
// end at.
type Target struct {
	ID             string
	Service        string
	ServiceSubset  string `json:",omitempty"`
	Namespace      string
	Datacenter     string `json:",omitempty"`
	Peer           string `json:",omitempty"`
	MeshGateway    MeshGatewayConfig
	Subset         catalog.ServiceResolverSubset
	ConnectTimeout catalog.Duration
	External       bool
	SNI            string
	Name           string
}

// ErrInvalidChain wraps every error that a set of entries makes; callers
// answer it as a bad request.
var ErrInvalidChain = errors.New("invalid discovery chain")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidChain, fmt.Sprintf(format, args...))
}

// Compile compiles the chain of service as evaluated in datacenter dc,
// without overrides and with no trust domain in SNI names (see
// CompileRequest).
func Compile(entries *Entries, service, dc string) (*Chain, error) {
	return CompileRequest(entries, Request{Service: service, Datacenter: dc})
}
