package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hashicorp/go-uuid"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// User events (Consul's `consul event`, /v1/event/fire) travel the pool as
// gossip user messages: best effort, no persistence, no total order. Every
// member that receives one for the first time hands it to its owner on the
// UserEvents channel and gossips it on, so that it spreads epidemically like
// memberlist's own messages.

// msgUserEvent marks a user event among gossip user messages.
const msgUserEvent byte = 2

// User event limits.
const (
	// UserEventSizeLimit bounds an event's name plus payload, in bytes: the
	// limit serf (and so Consul) applies by default.
	UserEventSizeLimit = 512
	// maxUserEventMsg bounds the encoded message, filters included, so
	// that it always fits in one gossip packet next to memberlist's
	// framing and encryption overhead.
	maxUserEventMsg = 1024
	// userEventVersion is the event format version this member writes.
	userEventVersion = 1
	// seenEventIDs is how many recent event IDs a member remembers to drop
	// the copies gossip delivers more than once; also how far behind the
	// Lamport clock an event may be before it is ignored as stale.
	seenEventIDs = 1024
	// userEventQueue is how many received events may wait for the owner.
	userEventQueue = 512
)

// ErrUserEventTooLarge is returned when an event does not fit the gossip
// limits.
var ErrUserEventTooLarge = errors.New("user event too large")

// UserEvent is one user event, with the fields Consul's /v1/event endpoints
// show.
type UserEvent struct {
	// ID is a random UUID assigned when the event is fired.
	ID   string
	Name string
	// Payload is opaque to Tribune; nil when the event has none.
	Payload []byte
	// NodeFilter, ServiceFilter and TagFilter are regular expressions
	// each receiving member checks against itself (see Matches).
	NodeFilter    string
	ServiceFilter string
	TagFilter     string
	Version       int
	// LTime is the pool's Lamport time when the event was fired.
	LTime uint64
}

// userEventMsg is the wire form of a UserEvent: short keys keep it small.
type userEventMsg struct {
	ID            string `json:"i"`
	Name          string `json:"n"`
	Payload       []byte `json:"p,omitempty"`
	NodeFilter    string `json:"nf,omitempty"`
	ServiceFilter string `json:"sf,omitempty"`
	TagFilter     string `json:"tf,omitempty"`
	Version       int    `json:"v"`
	LTime         uint64 `json:"l"`
}

// Validate checks what the sender of an event controls: a name, filters that
// compile, and a tag filter only together with a service filter.
func (e *UserEvent) Validate() error {
	if e.Name == "" {
		return errors.New("user event missing name")
	}
	if e.TagFilter != "" && e.ServiceFilter == "" {
		return errors.New("cannot provide tag filter without service filter")
	}
	for _, f := range []struct{ what, expr string }{
		{"node", e.NodeFilter}, {"service", e.ServiceFilter}, {"tag", e.TagFilter},
	} {
		if f.expr == "" {
			continue
		}
		if _, err := regexp.Compile(f.expr); err != nil {
			return fmt.Errorf("invalid %s filter: %w", f.what, err)
		}
	}
	return nil
}

// Matches reports whether a member named node, running services (service
// name -> its tags), should accept the event: the node filter must match the
// node name, and the service filter the name of one of its services whose
// tags, when a tag filter is set, include one the tag filter matches. The
// expressions are unanchored, as Go's and Consul's are. A filter that does
// not compile matches nothing.
func (e *UserEvent) Matches(node string, services map[string][]string) bool {
	if e.NodeFilter != "" {
		re, err := regexp.Compile(e.NodeFilter)
		if err != nil || !re.MatchString(node) {
			return false
		}
	}
	if e.ServiceFilter == "" {
		return true
	}
	svcRe, err := regexp.Compile(e.ServiceFilter)
	if err != nil {
		return false
	}
	var tagRe *regexp.Regexp
	if e.TagFilter != "" {
		if tagRe, err = regexp.Compile(e.TagFilter); err != nil {
			return false
		}
	}
	for name, tags := range services {
		if !svcRe.MatchString(name) {
			continue
		}
		if tagRe == nil {
			return true
		}
		for _, t := range tags {
			if tagRe.MatchString(t) {
				return true
			}
		}
	}
	return false
}

// userEvents is a pool's user event state: the Lamport clock, the IDs seen
// lately, and the queue to the owner.
type userEvents struct {
	clock atomic.Uint64
	ch    chan UserEvent

	mu sync.Mutex
	// seen holds the IDs of the last seenEventIDs events; order is a ring
	// of the same IDs, oldest at next once full.
	seen  map[string]struct{}
	order []string
	next  int
}

func newUserEvents() *userEvents {
	return &userEvents{
		ch:    make(chan UserEvent, userEventQueue),
		seen:  make(map[string]struct{}, seenEventIDs),
		order: make([]string, 0, seenEventIDs),
	}
}

// witness moves the clock to at least t.
func (u *userEvents) witness(t uint64) {
	for {
		cur := u.clock.Load()
		if t <= cur || u.clock.CompareAndSwap(cur, t) {
			return
		}
	}
}

// firstSight records id and reports whether it was new.
func (u *userEvents) firstSight(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.seen[id]; ok {
		return false
	}
	if len(u.order) < seenEventIDs {
		u.order = append(u.order, id)
	} else {
		delete(u.seen, u.order[u.next])
		u.order[u.next] = id
		u.next = (u.next + 1) % seenEventIDs
	}
	u.seen[id] = struct{}{}
	return true
}

// userEventBroadcast is one event in the gossip queue.
type userEventBroadcast struct{ msg []byte }

func (b *userEventBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *userEventBroadcast) Message() []byte                       { return b.msg }
func (b *userEventBroadcast) Finished()                             {}

// UserEvents returns the channel of user events this member accepted for the
// first time, its own included, each once. One consumer; an event that finds
// the channel full is dropped (user events are best effort).
func (p *Pool) UserEvents() <-chan UserEvent { return p.userEvents.ch }

// FireUserEvent gives ev a new ID, the format version and the next Lamport
// time, gossips it to the pool and delivers it on this member's own
// UserEvents channel. It returns the event as fired. Errors: ev.Validate's,
// and ErrUserEventTooLarge (wrapped) when the name and payload exceed
// UserEventSizeLimit or the whole message cannot fit in a gossip packet.
func (p *Pool) FireUserEvent(ev UserEvent) (UserEvent, error) {
	if err := ev.Validate(); err != nil {
		return UserEvent{}, err
	}
	if n := len(ev.Name) + len(ev.Payload); n > UserEventSizeLimit {
		return UserEvent{}, fmt.Errorf("%w: name and payload are %d bytes, the limit is %d",
			ErrUserEventTooLarge, n, UserEventSizeLimit)
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return UserEvent{}, fmt.Errorf("generate event ID: %w", err)
	}
	ev.ID = id
	ev.Version = userEventVersion
	ev.LTime = p.userEvents.clock.Add(1)
	body, err := json.Marshal(userEventMsg(ev))
	if err != nil {
		return UserEvent{}, fmt.Errorf("encode user event: %w", err)
	}
	msg := append([]byte{msgUserEvent}, body...)
	if len(msg) > maxUserEventMsg {
		return UserEvent{}, fmt.Errorf("%w: the encoded event is %d bytes, the limit is %d (shorten the filters)",
			ErrUserEventTooLarge, len(msg), maxUserEventMsg)
	}
	p.userEvents.firstSight(ev.ID)
	p.bq.QueueBroadcast(&userEventBroadcast{msg: msg})
	p.deliverUserEvent(ev)
	return ev, nil
}

// handleUserEventMsg takes a gossiped event (without its type byte): the
// first copy is delivered and gossiped on, later ones are dropped. It runs
// on memberlist's goroutine and must not block; b is not retained.
func (p *Pool) handleUserEventMsg(b []byte) {
	var m userEventMsg
	if err := json.Unmarshal(b, &m); err != nil {
		p.logger.Warn("bad user event message", "error", err)
		return
	}
	if m.ID == "" || m.Name == "" {
		p.logger.Warn("user event message without ID or name, dropped")
		return
	}
	if now := p.userEvents.clock.Load(); m.LTime+seenEventIDs < now {
		// Older than anything the seen set still remembers: it may be a
		// copy of an event already delivered.
		p.logger.Debug("stale user event dropped", "name", m.Name, "ltime", m.LTime, "clock", now)
		return
	}
	p.userEvents.witness(m.LTime)
	if !p.userEvents.firstSight(m.ID) {
		return
	}
	if m.Version > userEventVersion {
		p.logger.Warn("user event of a newer format version; some features may be ignored", "name", m.Name, "version", m.Version)
	}
	p.bq.QueueBroadcast(&userEventBroadcast{msg: append([]byte{msgUserEvent}, b...)})
	p.deliverUserEvent(UserEvent(m))
}

// deliverUserEvent hands ev to the owner without blocking.
func (p *Pool) deliverUserEvent(ev UserEvent) {
	select {
	case p.userEvents.ch <- ev:
	default:
		p.logger.Warn("user event dropped: the agent is not keeping up", "name", ev.Name, "id", ev.ID)
	}
}
