package agent

import (
	"sync"

	"github.com/tribune-mesh/tribune/gossip"
)

// User events (/v1/event/fire, /v1/event/list): the gossip pool carries them;
// each agent keeps the last eventBufferSize events whose filters match it and
// serves them with Consul's quasi-blocking list.

// eventBufferSize is how many accepted user events an agent keeps.
const eventBufferSize = 256

// eventBuffer is a ring of the last accepted user events. Safe for
// concurrent use.
type eventBuffer struct {
	mu sync.Mutex
	// ring holds the events, oldest at next once full.
	ring []*gossip.UserEvent
	next int
	// changed is closed and replaced on every add, waking blocked lists.
	changed chan struct{}
}

func newEventBuffer() *eventBuffer {
	return &eventBuffer{ring: make([]*gossip.UserEvent, 0, eventBufferSize), changed: make(chan struct{})}
}

// add appends ev, dropping the oldest event when the ring is full.
func (b *eventBuffer) add(ev *gossip.UserEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ring) < eventBufferSize {
		b.ring = append(b.ring, ev)
	} else {
		b.ring[b.next] = ev
		b.next = (b.next + 1) % eventBufferSize
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// List returns the events named name (every event when name is empty),
// oldest first, and a channel closed at the next add. The events are shared:
// callers must not modify them.
func (b *eventBuffer) List(name string) ([]*gossip.UserEvent, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*gossip.UserEvent, 0, len(b.ring))
	for i := range b.ring {
		ev := b.ring[(b.next+i)%len(b.ring)]
		if name == "" || ev.Name == name {
			out = append(out, ev)
		}
	}
	return out, b.changed
}

// runUserEvents keeps the user events gossip delivers that match this agent
// until stop is closed.
func (a *Agent) runUserEvents(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case ev := <-a.gossip.UserEvents():
			if !a.acceptsEvent(&ev) {
				a.logger.Debug("user event filtered out", "name", ev.Name, "id", ev.ID)
				continue
			}
			a.logger.Debug("user event", "name", ev.Name, "id", ev.ID, "ltime", ev.LTime)
			a.events.add(&ev)
		}
	}
}

// acceptsEvent applies an event's filters to this agent's node name and
// local services.
func (a *Agent) acceptsEvent(ev *gossip.UserEvent) bool {
	var services map[string][]string
	if ev.ServiceFilter != "" {
		svcs := a.local.Services()
		services = make(map[string][]string, len(svcs))
		for _, s := range svcs {
			services[s.Service] = append(services[s.Service], s.Tags...)
		}
	}
	return ev.Matches(a.cfg.NodeName, services)
}
