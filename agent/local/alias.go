package local

import (
	"context"
	"fmt"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// aliasSource feeds alias checks: it follows the health of another node or
// service instance with blocking queries.
type aliasSource struct {
	backend Backend
	// node is this agent's node, the default target.
	node string
}

// Watch implements checks.AliasSource. The aliased health is the worst of
// the node's own checks and, when serviceID is set, that instance's checks;
// an unregistered target is critical. It blocks until ctx ends.
func (s aliasSource) Watch(ctx context.Context, node, serviceID string, fn func(status string)) error {
	if node == "" {
		node = s.node
	}
	var index uint64
	for {
		resp, err := s.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNodeChecks, Name: node,
			Options: catalog.QueryOptions{AllowStale: true, MinQueryIndex: index, MaxQueryTime: 5 * time.Minute}})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("alias watch of %s/%s: %w", node, serviceID, err)
		}
		index = resp.Meta.Index
		var relevant []*catalog.HealthCheck
		found := serviceID == ""
		for _, c := range resp.Checks {
			if c.ServiceID == "" || c.ServiceID == serviceID {
				relevant = append(relevant, c)
			}
			if serviceID != "" && c.ServiceID == serviceID {
				found = true
			}
		}
		if serviceID != "" && !found {
			// The instance may have no checks: look it up.
			ns, err := s.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNode, Name: node,
				Options: catalog.QueryOptions{AllowStale: true}})
			if err == nil && ns.NodeServices != nil {
				for _, sv := range ns.NodeServices.Services {
					if sv.ID == serviceID {
						found = true
					}
				}
			}
		}
		status := catalog.AggregatedStatus(relevant)
		if !found || (serviceID == "" && len(resp.Checks) == 0 && !s.nodeExists(ctx, node)) {
			status = catalog.HealthCritical
		}
		fn(status)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func (s aliasSource) nodeExists(ctx context.Context, node string) bool {
	ns, err := s.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNode, Name: node,
		Options: catalog.QueryOptions{AllowStale: true}})
	return err == nil && ns.NodeServices != nil
}
