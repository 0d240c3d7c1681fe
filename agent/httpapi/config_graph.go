package httpapi

import (
	"context"
	"fmt"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/discoverychain"
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

// checkGraph refuses a write that would leave the entries inconsistent:
// a discovery chain that no longer compiles (routing or splitting on a
// service whose protocol is not L7, a missing subset, a redirect loop), an
// ingress listener whose protocol does not match its services'.
func (h *Handler) checkGraph(ctx context.Context, e *catalog.ConfigEntry, deleted bool) error {
	switch e.Kind {
	case catalog.KindServiceRouter, catalog.KindServiceSplitter, catalog.KindServiceResolver, catalog.KindIngressGateway,
		kindServiceDefaults, kindProxyDefaults:
	default:
		return nil
	}
	set, err := h.proposedEntries(ctx, e, deleted)
	if err != nil {
		return err
	}
	var list []*catalog.ConfigEntry
	for _, byName := range set {
		for _, e := range byName {
			list = append(list, e)
		}
	}
	entries, err := discoverychain.FromConfigEntries(list)
	if err != nil {
		return badRequest("%v", err)
	}
	for _, svc := range entries.ChainServices() {
		if _, err := discoverychain.Compile(entries, svc, h.agent.cfg.Datacenter); err != nil {
			return badRequest("%v", err)
		}
	}
	for gw, ig := range set[catalog.KindIngressGateway] {
		services, err := catalog.IngressListenerServices(ig.Body)
		if err != nil {
			return fmt.Errorf("ingress-gateway %q: %w", gw, err)
		}
		for svc, lp := range services {
			if p := entries.Protocol(svc); catalog.IsHTTPProtocol(lp) && p != lp {
				return badRequest("service %q has protocol %q, which does not match defined listener protocol %q", svc, p, lp)
			}
		}
	}
	return nil
}
