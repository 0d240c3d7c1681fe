package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tribune-mesh/tribune/catalog"
)

// entrySet is every stored config entry by kind and name, with a proposed
// write applied, for the checks that span entries.
type entrySet map[string]map[string]*catalog.ConfigEntry

func (h *Handler) proposedEntries(ctx context.Context, proposed *catalog.ConfigEntry, deleted bool) (entrySet, error) {
	resp, err := h.agent.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadConfigEntries})
	if err != nil {
		return nil, err
	}
	set := entrySet{}
	add := func(e *catalog.ConfigEntry) {
		if set[e.Kind] == nil {
			set[e.Kind] = map[string]*catalog.ConfigEntry{}
		}
		set[e.Kind][e.Name] = e
	}
	for _, e := range resp.ConfigEntries {
		add(e)
	}
	if deleted {
		delete(set[proposed.Kind], proposed.Name)
	} else {
		add(proposed)
	}
	return set, nil
}

// protocol is a service's protocol: its service-defaults, else the global
// proxy-defaults, else tcp.
func (s entrySet) protocol(service string) string {
	if e := s[kindServiceDefaults][service]; e != nil {
		var v struct{ Protocol string }
		if json.Unmarshal(e.Body, &v) == nil && v.Protocol != "" {
			return strings.ToLower(v.Protocol)
		}
	}
	if e := s[kindProxyDefaults]["global"]; e != nil {
		var v struct{ Config map[string]any }
		if json.Unmarshal(e.Body, &v) == nil {
			if p, ok := v.Config["protocol"].(string); ok && p != "" {
				return strings.ToLower(p)
			}
		}
	}
	return "tcp"
}

// checkGraph refuses a write that would leave the entries inconsistent:
// routing or splitting on a service whose protocol is not L7, an ingress
// listener whose protocol does not match its services'.
func (h *Handler) checkGraph(ctx context.Context, e *catalog.ConfigEntry, deleted bool) error {
	switch e.Kind {
	case catalog.KindServiceRouter, catalog.KindServiceSplitter, catalog.KindIngressGateway,
		kindServiceDefaults, kindProxyDefaults:
	default:
		return nil
	}
	set, err := h.proposedEntries(ctx, e, deleted)
	if err != nil {
		return err
	}
	for _, kind := range []string{catalog.KindServiceRouter, catalog.KindServiceSplitter} {
		for name := range set[kind] {
			if p := set.protocol(name); !catalog.IsHTTPProtocol(p) {
				return badRequest("discovery chain %q uses a protocol %q that does not permit advanced routing or splitting behavior", name, p)
			}
		}
	}
	for gw, ig := range set[catalog.KindIngressGateway] {
		services, err := catalog.IngressListenerServices(ig.Body)
		if err != nil {
			return fmt.Errorf("ingress-gateway %q: %w", gw, err)
		}
		for svc, lp := range services {
			if p := set.protocol(svc); catalog.IsHTTPProtocol(lp) && p != lp {
				return badRequest("service %q has protocol %q, which does not match defined listener protocol %q", svc, p, lp)
			}
		}
	}
	return nil
}
