package catalog

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Gateway services: what an ingress or terminating gateway routes to, as
// /v1/catalog/gateway-services/<gateway> lists it and as
// /v1/health/ingress/<service> looks it up backwards. They are derived on
// read from the gateway's config entry (and, for a wildcard, from the
// services registered), so nothing is stored and nothing can go stale.

// Gateway reads.
const (
	// ReadGatewayServices lists the services gateway Name routes to.
	ReadGatewayServices ReadOp = "catalog.gateway-services"
	// ReadHealthIngress reads the instances, with their checks, of the
	// ingress gateways that route to service Name.
	ReadHealthIngress ReadOp = "health.ingress"
)

// consulServiceName is the servers' own service, which wildcards of
// gateway entries never cover (as in Consul).
const consulServiceName = "consul"

// CompoundServiceName names a service; Namespace and Partition are Consul
// Enterprise's and always empty here.
type CompoundServiceName struct {
	Name      string
	Namespace string `json:",omitempty"`
	Partition string `json:",omitempty"`
}

// GatewayService is one service a gateway routes to, in Consul's shape.
type GatewayService struct {
	Gateway     CompoundServiceName
	Service     CompoundServiceName
	GatewayKind string
	// Port, Protocol and Hosts are an ingress listener's.
	Port     int      `json:",omitempty"`
	Protocol string   `json:",omitempty"`
	Hosts    []string `json:",omitempty"`
	// CAFile, CertFile, KeyFile and SNI are a terminating gateway's
	// settings for the service.
	CAFile   string `json:",omitempty"`
	CertFile string `json:",omitempty"`
	KeyFile  string `json:",omitempty"`
	SNI      string `json:",omitempty"`
	// FromWildcard says that a "*" of the entry covers the service.
	FromWildcard bool `json:",omitempty"`
}

// GatewayServices returns what gateway routes to, sorted by service name
// (for an ingress gateway, then by listener port): the services its
// ingress-gateway or terminating-gateway entry names, and for a "*" every
// typical service registered that the entry does not name.
func (s *Store) GatewayServices(ws memdb.WatchSet, gateway string) (uint64, []*GatewayService, error) {
	idx, ing, err := s.ConfigEntry(ws, KindIngressGateway, gateway)
	if err != nil {
		return 0, nil, err
	}
	_, term, err := s.ConfigEntry(ws, KindTerminatingGateway, gateway)
	if err != nil {
		return 0, nil, err
	}
	gw := CompoundServiceName{Name: gateway}
	var out []*GatewayService
	// wildcards are the entries' "*" items, completed once the named
	// services are known.
	var wildcards []*GatewayService
	if ing != nil {
		var e ingressGatewayEntry
		if err := decodeEntry(ing.Body, &e); err != nil {
			return 0, nil, fmt.Errorf("ingress-gateway %s: %w", gateway, err)
		}
		for _, l := range e.Listeners {
			for _, sv := range l.Services {
				g := &GatewayService{Gateway: gw, Service: CompoundServiceName{Name: sv.Name}, GatewayKind: KindIngressGateway,
					Port: l.Port, Protocol: listenerProtocol(l.Protocol), Hosts: sv.Hosts}
				if sv.Name == "*" {
					wildcards = append(wildcards, g)
				} else {
					out = append(out, g)
				}
			}
		}
	}
	if term != nil {
		var e terminatingGatewayEntry
		if err := decodeEntry(term.Body, &e); err != nil {
			return 0, nil, fmt.Errorf("terminating-gateway %s: %w", gateway, err)
		}
		for _, sv := range e.Services {
			g := &GatewayService{Gateway: gw, Service: CompoundServiceName{Name: sv.Name}, GatewayKind: KindTerminatingGateway,
				CAFile: sv.CAFile, CertFile: sv.CertFile, KeyFile: sv.KeyFile, SNI: sv.SNI}
			if sv.Name == "*" {
				wildcards = append(wildcards, g)
			} else {
				out = append(out, g)
			}
		}
	}
	if len(wildcards) > 0 {
		sidx, names, err := s.typicalServiceNames(ws)
		if err != nil {
			return 0, nil, err
		}
		idx = max(idx, sidx)
		for _, w := range wildcards {
			for _, name := range names {
				if slices.ContainsFunc(out, func(g *GatewayService) bool {
					return g.Service.Name == name && g.GatewayKind == w.GatewayKind && g.Port == w.Port
				}) {
					continue
				}
				if w.GatewayKind == KindIngressGateway {
					// An ingress "*" (on an L7 listener only) covers the
					// services of the listener's protocol.
					pidx, p, err := s.serviceProtocol(ws, name)
					if err != nil {
						return 0, nil, err
					}
					idx = max(idx, pidx)
					if p != w.Protocol {
						continue
					}
				}
				g := *w
				g.Service.Name, g.FromWildcard = name, true
				out = append(out, &g)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Service.Name != out[j].Service.Name {
			return out[i].Service.Name < out[j].Service.Name
		}
		return out[i].Port < out[j].Port
	})
	return idx, out, nil
}

// typicalServiceNames returns the sorted names of the typical services
// registered (no proxies, no gateways), without Consul's own.
func (s *Store) typicalServiceNames(ws memdb.WatchSet) (uint64, []string, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableServices)
	it, err := txn.Get(tableServices, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("services: %w", err)
	}
	seen := map[string]bool{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		sv := raw.(*serviceRow).Svc
		if sv.Kind == "" && sv.Service != consulServiceName {
			seen[sv.Service] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return idx, names, nil
}

// serviceProtocol is a service's protocol: its service-defaults entry's,
// else the proxy-defaults entry's config, else tcp.
func (s *Store) serviceProtocol(ws memdb.WatchSet, service string) (uint64, string, error) {
	idx, sd, err := s.ConfigEntry(ws, KindServiceDefaults, service)
	if err != nil {
		return 0, "", err
	}
	if sd != nil {
		var v struct{ Protocol string }
		if decodeEntry(sd.Body, &v) == nil && v.Protocol != "" {
			return idx, strings.ToLower(v.Protocol), nil
		}
	}
	_, pd, err := s.ConfigEntry(ws, KindProxyDefaults, "global")
	if err != nil {
		return 0, "", err
	}
	if pd != nil {
		var v struct{ Config map[string]any }
		if decodeEntry(pd.Body, &v) == nil {
			if p, _ := v.Config["protocol"].(string); p != "" {
				return idx, strings.ToLower(p), nil
			}
		}
	}
	return idx, "tcp", nil
}

// IngressServiceNodes returns the instances, with their checks, of every
// ingress gateway that routes to service (by name or by a wildcard).
func (s *Store) IngressServiceNodes(ws memdb.WatchSet, service string) (uint64, []*CheckServiceNode, error) {
	idx, entries, err := s.ConfigEntries(ws, KindIngressGateway)
	if err != nil {
		return 0, nil, err
	}
	var out []*CheckServiceNode
	for _, e := range entries {
		gidx, routes, err := s.GatewayServices(ws, e.Name)
		if err != nil {
			return 0, nil, err
		}
		idx = max(idx, gidx)
		if !slices.ContainsFunc(routes, func(g *GatewayService) bool {
			return g.GatewayKind == KindIngressGateway && g.Service.Name == service
		}) {
			continue
		}
		nidx, nodes, err := s.CheckServiceNodes(ws, e.Name, nil)
		if err != nil {
			return 0, nil, err
		}
		idx = max(idx, nidx)
		out = append(out, nodes...)
	}
	return idx, out, nil
}
