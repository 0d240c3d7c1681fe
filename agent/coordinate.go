package agent

import (
	"context"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
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
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		_, err := a.backend.Apply(ctx, catalog.CmdCoordinate, []*catalog.CoordinateEntry{{Node: a.cfg.NodeName, Coord: c}})
		cancel()
		if err != nil && a.ctx.Err() == nil {
			a.logger.Debug("coordinate update failed", "error", err)
		}
	}
}
