package gossip

import (
	"encoding/json"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
)

// pingDelegate piggybacks this member's network coordinate on gossip ping
// acks and feeds the measured round trips into the Vivaldi client.
type pingDelegate struct{ p *Pool }

// AckPayload implements memberlist.PingDelegate.
func (d *pingDelegate) AckPayload() []byte {
	b, err := json.Marshal(d.p.coord.GetCoordinate())
	if err != nil {
		return nil
	}
	return b
}

// NotifyPingComplete implements memberlist.PingDelegate.
func (d *pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	if len(payload) == 0 {
		return
	}
	var c coordinate.Coordinate
	if err := json.Unmarshal(payload, &c); err != nil {
		return
	}
	if _, err := d.p.coord.Update(other.Name, &c, rtt); err != nil {
		d.p.logger.Debug("coordinate update rejected", "member", other.Name, "error", err)
	}
	// The payload is the other member's own coordinate, the same for
	// every member that pings it: kept so that routers agree on distances.
	d.p.mu.Lock()
	if _, known := d.p.members[other.Name]; known {
		d.p.coords[other.Name] = &c
	}
	d.p.mu.Unlock()
}

// Coordinate returns this member's current network coordinate.
func (p *Pool) Coordinate() *coordinate.Coordinate { return p.coord.GetCoordinate() }

// Coordinates returns the last coordinate each member reported about itself
// in a ping ack, this member's own included. The map and the coordinates
// are copies the caller owns.
func (p *Pool) Coordinates() map[string]*coordinate.Coordinate {
	self := p.coord.GetCoordinate()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*coordinate.Coordinate, len(p.coords)+1)
	for name, c := range p.coords {
		out[name] = c.Clone()
	}
	out[p.cfg.NodeName] = self
	return out
}
