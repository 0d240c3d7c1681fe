package catalog

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
)

// NodeMetaMatches reports whether meta carries every pair of filter.
func NodeMetaMatches(meta, filter map[string]string) bool {
	for k, v := range filter {
		got, ok := meta[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

// filterNodeMeta keeps, in the result of req, only what lives on nodes whose
// meta matches req.NodeMeta. Reads whose result does not hang off nodes are
// left alone. The nodes table joins ws, so a meta change wakes the reader.
func (s *Store) filterNodeMeta(ws memdb.WatchSet, req *ReadRequest, out *ReadResponse) error {
	txn := s.mem().Txn(false)
	matching := map[string]bool{}
	it, err := txn.Get(tableNodes, "id")
	if err != nil {
		return fmt.Errorf("nodes for node-meta: %w", err)
	}
	ws.Add(it.WatchCh())
	for raw := it.Next(); raw != nil; raw = it.Next() {
		n := raw.(*Node)
		if NodeMetaMatches(n.Meta, req.NodeMeta) {
			matching[n.Node] = true
		}
	}
	switch req.Op {
	case ReadNodes:
		kept := out.Nodes[:0:0]
		for _, n := range out.Nodes {
			if matching[n.Node] {
				kept = append(kept, n)
			}
		}
		out.Nodes = kept
	case ReadServiceInstances, ReadHealthService, ReadConnectInstances, ReadHealthConnect:
		kept := out.Instances[:0:0]
		for _, in := range out.Instances {
			if in.Node != nil && matching[in.Node.Node] {
				kept = append(kept, in)
			}
		}
		out.Instances = kept
	case ReadNodeChecks, ReadServiceChecks, ReadChecksInState:
		kept := []*HealthCheck{}
		for _, c := range out.Checks {
			if matching[c.Node] {
				kept = append(kept, c)
			}
		}
		out.Checks = kept
	case ReadServices:
		svcs, err := txn.Get(tableServices, "id")
		if err != nil {
			return fmt.Errorf("services for node-meta: %w", err)
		}
		tags := map[string]map[string]struct{}{}
		for raw := svcs.Next(); raw != nil; raw = svcs.Next() {
			row := raw.(*serviceRow)
			if !matching[row.Node] {
				continue
			}
			set := tags[row.Svc.Service]
			if set == nil {
				set = map[string]struct{}{}
				tags[row.Svc.Service] = set
			}
			for _, t := range row.Svc.Tags {
				set[t] = struct{}{}
			}
		}
		res := make(map[string][]string, len(tags))
		for name, set := range tags {
			list := make([]string, 0, len(set))
			for t := range set {
				list = append(list, t)
			}
			sort.Strings(list)
			res[name] = list
		}
		out.Services = res
	}
	return nil
}
