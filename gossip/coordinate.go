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
}

// Coordinate returns this member's current network coordinate.
func (p *Pool) Coordinate() *coordinate.Coordinate { return p.coord.GetCoordinate() }
