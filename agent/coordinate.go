package agent

import (
	"context"
	"errors"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// coordinateInterval is how often the agent sends its network coordinate to
// the servers.
func (a *Agent) coordinateInterval() time.Duration {
	if a.cfg.DevMode || a.cfg.Performance.RaftMultiplier == 1 {
		return 2 * time.Second
	}
	return 15 * time.Second
}

// syncCoordinates sends this agent's gossip coordinate to the catalog until
// stop is closed.
func (a *Agent) syncCoordinates(stop <-chan struct{}) {
	t := time.NewTicker(a.coordinateInterval())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c := a.gossip.Coordinate()
		if c == nil || !c.IsValid() {
			continue
		}
		// The update needs node:write on this node: the agent's token's.
		ctx, cancel := context.WithTimeout(server.WithToken(a.ctx, a.agentToken()), 10*time.Second)
		_, err := a.backend.Apply(ctx, catalog.CmdCoordinate, []*catalog.CoordinateEntry{{Node: a.cfg.NodeName, Coord: c}})
		cancel()
		switch {
		case err == nil || a.ctx.Err() != nil:
		case errors.Is(err, acl.ErrPermissionDenied) || errors.Is(err, acl.ErrNotFound):
			// Throttled by the agent's logger: once per window.
			a.logger.Warn("coordinate update blocked by ACLs: set acl.tokens.agent to a token with node:write on this node", "error", err)
		default:
			a.logger.Debug("coordinate update failed", "error", err)
		}
	}
}
