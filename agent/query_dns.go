package agent

import (
	"context"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/federation"
)

// preparedQuery answers <query>.query.<domain> (dnsserver's
// Config.PreparedQuery): the instances the query named (by ID, name or
// template prefix) selects. It reads from views like every DNS lookup: the
// list of queries is one view, so random names start no views of their
// own, and the service's health is the view a service lookup uses. No
// matching query answers nothing, which the handler turns into NXDOMAIN.
//
// The query's DNS.TTL is not applied yet: the hook returns instances only,
// and the handler gives query answers the service TTL of the query name.
func (s *dnsSource) preparedQuery(ctx context.Context, dc, name string) ([]*catalog.CheckServiceNode, error) {
	root := s
	s, err := s.forDC(dc)
	if err != nil {
		return nil, err
	}
	list, err := s.get(ctx, catalog.ReadPreparedQueries, "")
	if err != nil {
		return nil, err
	}
	q := catalog.ResolvePreparedQuery(list.PreparedQueries, name)
	if q == nil {
		return nil, nil
	}
	q, err = q.Render(name)
	if err != nil {
		return nil, err
	}
	insts, err := s.queryHealth(ctx, dc, &q.Service)
	if err != nil {
		return nil, err
	}
	selected := catalog.SelectInstances(&q.Service, insts)
	if len(selected) > 0 || root.datacenters == nil {
		return selected, nil
	}
	// None here: the query's failover datacenters in turn.
	selected, _, _ = queryFailover(ctx, q, dc, root.datacenters, func(other string) ([]*catalog.CheckServiceNode, error) {
		rs, err := root.forDC(other)
		if err != nil {
			return nil, err
		}
		return rs.queryHealth(ctx, other, &q.Service)
	})
	return selected, nil
}

// queryFailover returns what q selects in the first of its failover
// datacenters after dc (federation.FailoverOrder, NearestN counted over
// datacenters when it is not nil) that has any instance it selects, read
// by read, and that datacenter; nil and "" when none has. A datacenter
// whose read fails is skipped, and unreadable reports it.
func queryFailover(ctx context.Context, q *catalog.PreparedQuery, dc string, datacenters func(context.Context) ([]string, error),
	read func(dc string) ([]*catalog.CheckServiceNode, error)) (selected []*catalog.CheckServiceNode, in string, unreadable bool) {
	var known []string
	if q.Service.Failover.NearestN > 0 && datacenters != nil {
		known, _ = datacenters(ctx)
	}
	for _, other := range federation.FailoverOrder(dc, known, q.Service.Failover) {
		insts, err := read(other)
		if err != nil {
			unreadable = true
			continue
		}
		if selected := catalog.SelectInstances(&q.Service, insts); len(selected) > 0 {
			return selected, other, unreadable
		}
	}
	return nil, "", unreadable
}

// queryHealth reads the instances a query selects from: the service's, or
// its mesh instances (proxies and Connect-native) for a Connect query.
func (s *dnsSource) queryHealth(ctx context.Context, dc string, sq *catalog.ServiceQuery) ([]*catalog.CheckServiceNode, error) {
	if sq.Connect {
		return s.connectLookup(ctx, dc, sq.Service)
	}
	return s.ServiceHealth(ctx, dc, sq.Service)
}
