package agent

import (
	"context"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/xds"
)

// readQueryUpstream reads a prepared-query upstream (destination_type
// "prepared_query") as an execution with connect=true would answer it: the
// query (by ID, name or template prefix) as an execution finds it, which
// needs no right on the query, then the mesh instances of its service that
// it selects in the upstream's datacenter, else in its failover
// datacenters in turn. Everything is read from views, so a change of the
// query or of the instances rebuilds the proxy as a service upstream's
// does. The reads use the proxy's token, except that the servers filter a
// read of the query's own service in the query's datacenter with the
// query's token when it has one (PreparedQueryID), as an execution does.
// No such query: the upstream's listener is served with no endpoints, and
// appears once the query does.
func (x *xdsService) readQueryUpstream(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions, u *catalog.Upstream) (*xds.Upstream, error) {
	local := x.a.cfg.Datacenter
	dc := u.Datacenter
	if dc == "" {
		dc = local
	}
	up := &xds.Upstream{DestinationName: u.DestinationName, Datacenter: u.Datacenter, PreparedQuery: true,
		LocalBindAddress: u.LocalBindAddress, LocalBindPort: u.LocalBindPort}
	if ms, ok := u.Config["connect_timeout_ms"].(float64); ok && ms > 0 {
		up.ConnectTimeout = time.Duration(ms) * time.Millisecond
	}
	o := opts
	if dc != local {
		o.Datacenter = dc
	}
	found, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadPreparedQueryResolve, Name: u.DestinationName, Options: o})
	if err != nil && dc != local && ctx.Err() == nil {
		// Another datacenter that does not answer must not hold back
		// the proxy's configuration: no endpoints until a retry.
		in.retryRemote = true
		return up, nil
	}
	if err != nil {
		return nil, err
	}
	if len(found.PreparedQueries) == 0 {
		return up, nil
	}
	q := found.PreparedQueries[0]
	if q, err = q.Render(u.DestinationName); err != nil {
		x.a.logger.Named("xds").Warn("prepared query upstream cannot be rendered; serving it without endpoints",
			"upstream", u.DestinationName, "error", err)
		return up, nil
	}
	up.QueryService = q.Service.Service
	queryDC := dc
	read := func(dc string) ([]*catalog.CheckServiceNode, error) {
		o := opts
		if dc != local {
			o.Datacenter = dc
		}
		req := &catalog.ReadRequest{Op: catalog.ReadHealthConnect, Name: q.Service.Service, Options: o}
		if dc == queryDC {
			req.PreparedQueryID = q.ID
		}
		resp, err := x.view(ctx, in, req)
		if err != nil {
			return nil, err
		}
		return resp.Instances, nil
	}
	insts, err := read(dc)
	if err != nil && dc != local && ctx.Err() == nil {
		in.retryRemote = true
		insts, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	selected := catalog.SelectInstances(&q.Service, insts)
	up.QueryDatacenter = dc
	if len(selected) == 0 {
		// Another datacenter that does not answer is skipped until a
		// retry reads it.
		var other string
		var unreadable bool
		selected, other, unreadable = queryFailover(ctx, q, dc, x.a.federationPart().Datacenters, read)
		if other != "" {
			up.QueryDatacenter = other
		}
		in.retryRemote = in.retryRemote || unreadable
	}
	up.Endpoints = meshEndpoints(selected)
	return up, nil
}
