package agent

import (
	"context"
	"fmt"
	"sort"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/xds"
)

// A sidecar in transparent mode (Proxy.Mode, else its service's
// service-defaults, else proxy-defaults) has an outbound listener that
// reaches every mesh service its service may reach, at the service's
// virtual IPs: the services the intentions allow it to (the default
// decides where none matches, as for its inbound), besides those it names
// as upstreams. The mesh config entry's TransparentProxy.MeshDestinationsOnly
// stops connections to other addresses; by default they pass through.

// maxTransparentUpstreams bounds the upstreams a transparent proxy infers
// from the intentions (xds.MaxUpstreams bounds them all).
const maxTransparentUpstreams = xds.MaxUpstreams - 64

// proxyMode returns svc's proxy mode and transparent proxy settings: its
// registration's, else its service-defaults', else proxy-defaults'.
func proxyMode(svc *catalog.Service, set *chainSet) (string, catalog.TransparentProxyConfig) {
	mode, tp := set.entries.ProxyMode(svc.Proxy.DestinationServiceName)
	if svc.Proxy.Mode != "" {
		mode = svc.Proxy.Mode
	}
	if own := svc.Proxy.TransparentProxy; own != nil && own.OutboundListenerPort != 0 {
		tp.OutboundListenerPort = own.OutboundListenerPort
	}
	return mode, tp
}

// readTransparent makes p transparent: its outbound listener, its explicit
// upstreams of local services matched at their virtual IPs too, and an
// upstream for every other mesh service the intentions let p's service
// reach. byName are the intentions by destination.
func (x *xdsService) readTransparent(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions, set *chainSet, tp catalog.TransparentProxyConfig,
	byName map[string][]*catalog.Intention, p *xds.Proxy) error {
	widenIntentions(in)
	meshOnly, err := x.meshDestinationsOnly(ctx, in, opts)
	if err != nil {
		return err
	}
	p.Outbound = &xds.Outbound{Port: tp.OutboundListenerPort, Passthrough: !meshOnly}
	vips, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadServiceVirtualIPs, Options: opts})
	if err != nil {
		return fmt.Errorf("virtual IPs: %w", err)
	}
	addrs := make(map[string][]string, len(vips.VirtualIPs))
	for _, v := range vips.VirtualIPs {
		addrs[v.Service] = append([]string{v.IP()}, v.ManualIPs...)
	}
	// An address claimed by two services (a manual IP is moved, not
	// shared, so only through a race of reads) goes to neither.
	owner := map[string]string{}
	for svc, as := range addrs {
		for _, a := range as {
			if o, ok := owner[a]; ok && o != svc {
				owner[a] = ""
				continue
			}
			owner[a] = svc
		}
	}
	match := func(svc string) []string {
		var out []string
		for _, a := range addrs[svc] {
			if owner[a] == svc {
				out = append(out, a)
			}
		}
		return out
	}
	named := map[string]bool{}
	for i := range p.Upstreams {
		u := &p.Upstreams[i]
		if u.LocalBindPort == 0 && u.LocalBindSocketPath == "" {
			u.Transparent = true // reached through the outbound listener only
		}
		if u.PreparedQuery || (u.Datacenter != "" && u.Datacenter != p.Datacenter) || named[u.DestinationName] {
			continue // reached at its own port only
		}
		named[u.DestinationName] = true
		u.Transparent, u.MatchAddresses = true, match(u.DestinationName)
		u.DialedDirectly = dialedDirectly(set, u.DestinationName)
	}
	var reach []string
	for svc := range addrs {
		if svc == p.Service || named[svc] {
			continue
		}
		ixns := append(append([]*catalog.Intention(nil), byName[svc]...), byName[catalog.IntentionWildcard]...)
		d := connect.Authorize(ixns, p.Service, svc, p.DefaultAllow)
		// An intention with L7 permissions lets some requests through:
		// the destination's sidecar decides which.
		if d.Allowed || (d.Match != nil && len(d.Match.Permissions) > 0) {
			reach = append(reach, svc)
		}
	}
	sort.Strings(reach)
	if len(reach) > maxTransparentUpstreams {
		x.a.logger.Named("xds").Warn("transparent proxy: more mesh services than it may have upstreams; the rest are not reachable through it",
			"proxy", p.ID, "services", len(reach), "max", maxTransparentUpstreams)
		reach = reach[:maxTransparentUpstreams]
	}
	for _, svc := range reach {
		up, err := x.readUpstream(ctx, in, opts, set, &catalog.Upstream{DestinationName: svc}, p.TrustDomain)
		if err != nil {
			return err
		}
		if up == nil {
			continue
		}
		up.Transparent, up.MatchAddresses = true, match(svc)
		up.DialedDirectly = dialedDirectly(set, svc)
		p.Upstreams = append(p.Upstreams, *up)
	}
	return nil
}

// dialedDirectly reports whether transparent proxies may reach service's
// instances at their own addresses: its service-defaults', else
// proxy-defaults' TransparentProxy.DialedDirectly.
func dialedDirectly(set *chainSet, service string) bool {
	_, tp := set.entries.ProxyMode(service)
	return tp.DialedDirectly
}

// meshDestinationsOnly reads the mesh config entry's
// TransparentProxy.MeshDestinationsOnly.
func (x *xdsService) meshDestinationsOnly(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions) (bool, error) {
	resp, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadConfigEntry, Key: catalog.KindMesh, Name: catalog.KindMesh, Options: opts})
	if err != nil {
		return false, fmt.Errorf("mesh config entry: %w", err)
	}
	if len(resp.ConfigEntries) == 0 {
		return false, nil
	}
	var mesh struct {
		TransparentProxy struct{ MeshDestinationsOnly bool }
	}
	if err := catalog.DecodeConfigEntry(resp.ConfigEntries[0], &mesh); err != nil {
		return false, fmt.Errorf("mesh config entry: %w", err)
	}
	return mesh.TransparentProxy.MeshDestinationsOnly, nil
}
