package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// ReadCatalogDump reads every node, every service instance (with its node
// and its node's and its own checks) and every check in one snapshot: what
// the web UI's summary endpoints (/v1/internal/ui/...) are computed from.
// The read watches the three tables, so a blocking dump wakes on any
// catalog change.
const ReadCatalogDump ReadOp = "internal.dump"

// CatalogDump returns every node, every service instance with its node and
// checks, and every check, at the highest index of the three tables.
func (s *Store) CatalogDump(ws memdb.WatchSet) (uint64, []*Node, []*CheckServiceNode, []*HealthCheck, error) {
	txn := s.mem().Txn(false)
	idx := maxIndex(txn, tableNodes, tableServices, tableChecks)

	nit, err := txn.Get(tableNodes, "id")
	if err != nil {
		return 0, nil, nil, nil, fmt.Errorf("dump nodes: %w", err)
	}
	ws.Add(nit.WatchCh())
	nodes := []*Node{}
	byName := make(map[string]*Node)
	for raw := nit.Next(); raw != nil; raw = nit.Next() {
		n := raw.(*Node)
		nodes = append(nodes, n)
		byName[n.Node] = n
	}

	cit, err := txn.Get(tableChecks, "id")
	if err != nil {
		return 0, nil, nil, nil, fmt.Errorf("dump checks: %w", err)
	}
	ws.Add(cit.WatchCh())
	checks := collectChecks(cit)
	// Checks by node: the node's own (ServiceID "") and by service ID.
	type key struct{ node, svc string }
	grouped := make(map[key][]*HealthCheck, len(checks))
	for _, c := range checks {
		k := key{c.Node, c.ServiceID}
		grouped[k] = append(grouped[k], c)
	}

	sit, err := txn.Get(tableServices, "id")
	if err != nil {
		return 0, nil, nil, nil, fmt.Errorf("dump services: %w", err)
	}
	ws.Add(sit.WatchCh())
	var instances []*CheckServiceNode
	for raw := sit.Next(); raw != nil; raw = sit.Next() {
		row := raw.(*serviceRow)
		n := byName[row.Node]
		if n == nil {
			continue
		}
		var cs []*HealthCheck
		cs = append(cs, grouped[key{row.Node, ""}]...)
		cs = append(cs, grouped[key{row.Node, row.ID}]...)
		instances = append(instances, &CheckServiceNode{Node: n, Service: row.Svc, Checks: cs})
	}
	return max(idx, 1), nodes, instances, checks, nil
}
