// Package gossip runs an agent's membership in a gossip pool (hashicorp/
// memberlist): who is in the datacenter, with what role and ports, and
// whether they are alive, leaving, left or failed.
//
// A Pool publishes every membership change on its event channel; the server's
// leader loop turns those changes into catalog updates. The package must not
// import agent or server.
package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"

	"github.com/tribune-mesh/tribune/clock"
)

// Status is a member's state, with Consul's numbering (/v1/agent/members).
type Status int

// Member states.
const (
	StatusNone    Status = 0
	StatusAlive   Status = 1
	StatusLeaving Status = 2
	StatusLeft    Status = 3
	StatusFailed  Status = 4
)

// String returns Consul's name for the status.
func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusLeaving:
		return "leaving"
	case StatusLeft:
		return "left"
	case StatusFailed:
		return "failed"
	}
	return "none"
}

// Member is one agent of the pool.
type Member struct {
	Name   string
	Addr   net.IP
	Port   uint16
	Tags   map[string]string
	Status Status
	// Protocol versions, reported as memberlist sees them.
	PMin, PMax, PCur, DMin, DMax, DCur uint8
}

// IsServer reports whether the member is a server of datacenter dc.
func (m Member) IsServer() bool { return m.Tags["role"] == "consul" }

// ServerAddr returns the member's server RPC address ("ip:port").
func (m Member) ServerAddr() string {
	return net.JoinHostPort(m.Addr.String(), m.Tags["port"])
}

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	EventJoin EventType = iota + 1
	EventLeave
	EventFailed
	EventUpdate
)

// Event is one membership change.
type Event struct {
	Type   EventType
	Member Member
}

// Config configures a Pool.
type Config struct {
	// NodeName must be unique in the pool.
	NodeName string
	// BindAddr and BindPort are where gossip listens (TCP and UDP).
	BindAddr string
	BindPort int
	// AdvertiseAddr/Port are what other members use; empty means bind.
	AdvertiseAddr string
	AdvertisePort int
	// Tags are this member's metadata (role, dc, id, port, build, ...).
	Tags map[string]string
	// Keys are the gossip encryption keys; the first is the primary. None
	// means no encryption.
	Keys [][]byte
	// WAN selects memberlist's WAN timings; default LAN.
	WAN bool
	// Fast selects memberlist's local-network timings (tests, -dev).
	Fast bool
	// Transport, when set, carries the gossip instead of UDP and TCP on
	// BindAddr:BindPort (in-process test networks).
	Transport memberlist.Transport
	// Logger receives memberlist's log.
	Logger hclog.Logger
	// Clock decides when departed members are forgotten; nil means
	// clock.New().
	Clock clock.Clock
	// ReconnectTimeout is how long a failed member is remembered
	// (reconnect_timeout); TombstoneTimeout how long a member that left
	// is. Zero means DefaultReconnectTimeout and DefaultTombstoneTimeout.
	ReconnectTimeout time.Duration
	TombstoneTimeout time.Duration
	// MaxDeparted bounds how many failed or left members are remembered
	// at once; beyond it the longest gone are forgotten first. Zero means
	// DefaultMaxDeparted.
	MaxDeparted int
}

// Defaults of the departed-member bounds, each defined here only.
const (
	// DefaultReconnectTimeout is Consul's reconnect_timeout.
	DefaultReconnectTimeout = 72 * time.Hour
	// DefaultTombstoneTimeout is how long a member that left is
	// remembered, as Serf's tombstone timeout.
	DefaultTombstoneTimeout = 24 * time.Hour
	// DefaultMaxDeparted caps the departed members a pool remembers.
	DefaultMaxDeparted = 4096
	// reapInterval is how often departed members are checked.
	reapInterval = time.Minute
)

// Pool is one gossip pool membership.
type Pool struct {
	cfg   *Config
	ml    *memberlist.Memberlist
	kr    *memberlist.Keyring
	bq    *memberlist.TransmitLimitedQueue
	coord *coordinate.Client
	// keyMu serialises keyring changes.
	keyMu  sync.Mutex
	logger hclog.Logger

	mu      sync.Mutex
	tags    map[string]string
	members map[string]*Member
	// departed holds when each failed or left member departed; they are
	// forgotten after their timeout or beyond MaxDeparted.
	departed map[string]time.Time
	// coords holds the coordinate each member last reported about itself
	// (coordinate.go); forgotten with the member.
	coords map[string]*coordinate.Coordinate
	left   bool

	events chan Event
	// conflict holds the error of another live member using this name.
	conflict atomic.Pointer[error]
	// userEvents is the user event clock, dedup set and queue (events.go).
	userEvents *userEvents
	// metaCh asks metaLoop to gossip changed tags; stopCh ends it.
	metaCh   chan struct{}
	stopCh   chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	// dropped counts events lost because nobody read them in time.
	dropped int
}

// leavingTag marks a member that announced its graceful leave.
const leavingTag = "leaving"

// ErrNameConflict is returned when another live member uses this name.
var ErrNameConflict = errors.New("node name is already in use by another member")

// New creates this agent's member and starts gossiping. It joins nobody:
// call Join.
func New(cfg *Config) (*Pool, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = DefaultReconnectTimeout
	}
	if cfg.TombstoneTimeout <= 0 {
		cfg.TombstoneTimeout = DefaultTombstoneTimeout
	}
	if cfg.MaxDeparted <= 0 {
		cfg.MaxDeparted = DefaultMaxDeparted
	}
	p := &Pool{
		cfg:      cfg,
		logger:   cfg.Logger.Named("gossip"),
		tags:     copyTags(cfg.Tags),
		members:  map[string]*Member{},
		departed: map[string]time.Time{},
		coords:   map[string]*coordinate.Coordinate{},
		events:   make(chan Event, 4096),
		metaCh:   make(chan struct{}, 1),
		stopCh:   make(chan struct{}),

		userEvents: newUserEvents(),
	}
	var mc *memberlist.Config
	switch {
	case cfg.Fast:
		mc = memberlist.DefaultLocalConfig()
		// The local profile retransmits each message only twice, which
		// loses leave notices in small pools with dead members.
		mc.RetransmitMult = 4
	case cfg.WAN:
		mc = memberlist.DefaultWANConfig()
	default:
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = cfg.NodeName
	mc.Transport = cfg.Transport
	// A restarted agent may come back on a new address (a rescheduled
	// pod); let it reclaim its name once the old one is known dead.
	mc.DeadNodeReclaimTime = 30 * time.Second
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	p.bq = &memberlist.TransmitLimitedQueue{NumNodes: func() int {
		if p.ml == nil {
			return 1
		}
		return p.ml.NumMembers()
	}, RetransmitMult: 4}
	cc, err := coordinate.NewClient(coordinate.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("coordinate client: %w", err)
	}
	p.coord = cc
	mc.Ping = &pingDelegate{p: p}
	mc.Delegate = &delegate{p: p}
	mc.Events = &eventDelegate{p: p}
	mc.Alive = &aliveDelegate{p: p}
	mc.Logger = log.New(&logAdapter{logger: p.logger}, "", 0)
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		p.kr = kr
		p.publishKeyTags()
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	p.ml = ml
	p.wg.Add(2)
	go p.metaLoop()
	go p.reapLoop()
	return p, nil
}

// reapLoop forgets departed members past their timeout until the pool
// shuts down.
func (p *Pool) reapLoop() {
	defer p.wg.Done()
	t := p.cfg.Clock.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stopCh:
			return
		case <-t.C():
			p.reapDeparted()
		}
	}
}

// reapDeparted forgets failed members gone longer than ReconnectTimeout
// and left ones gone longer than TombstoneTimeout.
func (p *Pool) reapDeparted() {
	now := p.cfg.Clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, at := range p.departed {
		m := p.members[name]
		timeout := p.cfg.ReconnectTimeout
		if m != nil && m.Status == StatusLeft {
			timeout = p.cfg.TombstoneTimeout
		}
		if m == nil || now.Sub(at) > timeout {
			delete(p.departed, name)
			delete(p.members, name)
			delete(p.coords, name)
		}
	}
}

// setMemberLocked records m's state and when it departed; past MaxDeparted
// departed members, the one gone longest is forgotten.
func (p *Pool) setMemberLocked(m *Member) {
	p.members[m.Name] = m
	if m.Status != StatusFailed && m.Status != StatusLeft {
		delete(p.departed, m.Name)
		return
	}
	if _, ok := p.departed[m.Name]; !ok {
		p.departed[m.Name] = p.cfg.Clock.Now()
	}
	for len(p.departed) > p.cfg.MaxDeparted {
		oldest, first := "", time.Time{}
		for name, at := range p.departed {
			if name != m.Name && (oldest == "" || at.Before(first)) {
				oldest, first = name, at
			}
		}
		delete(p.departed, oldest)
		delete(p.members, oldest)
		delete(p.coords, oldest)
	}
}

// metaLoop gossips this member's tags again whenever they change outside
// SetTags (keyring changes arrive on memberlist's own goroutines, which must
// not block).
func (p *Pool) metaLoop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stopCh:
			return
		case <-p.metaCh:
			if err := p.ml.UpdateNode(5 * time.Second); err != nil {
				p.logger.Debug("gossip tags update", "error", err)
			}
		}
	}
}

// Join contacts the given addresses ("host" or "host:port") and merges
// their view; it returns how many it reached.
func (p *Pool) Join(addrs []string) (int, error) {
	var norm []string
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, strconv.Itoa(p.cfg.BindPort))
		}
		norm = append(norm, a)
	}
	n, err := p.ml.Join(norm)
	if err != nil {
		return n, fmt.Errorf("join %v: %w", addrs, err)
	}
	if c := p.conflict.Load(); c != nil {
		return n, *c
	}
	return n, nil
}

// Events returns the channel of membership changes. One consumer.
func (p *Pool) Events() <-chan Event { return p.events }

// Members returns every known member, alive or not, sorted by name.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		c := *m
		c.Tags = copyTags(m.Tags)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LocalMember returns this agent's own member.
func (p *Pool) LocalMember() Member {
	n := p.ml.LocalNode()
	p.mu.Lock()
	defer p.mu.Unlock()
	return Member{Name: n.Name, Addr: n.Addr, Port: n.Port, Tags: copyTags(p.tags), Status: StatusAlive,
		PMin: n.PMin, PMax: n.PMax, PCur: n.PCur, DMin: n.DMin, DMax: n.DMax, DCur: n.DCur}
}

// SetTags replaces this member's tags and gossips them.
func (p *Pool) SetTags(tags map[string]string) error {
	p.mu.Lock()
	p.tags = copyTags(tags)
	p.mu.Unlock()
	if err := p.ml.UpdateNode(5 * time.Second); err != nil {
		return fmt.Errorf("update gossip tags: %w", err)
	}
	return nil
}

// Keyring returns the pool's encryption keyring, nil without encryption.
func (p *Pool) Keyring() *memberlist.Keyring {
	return p.kr
}

// RemoveFailed forgets a failed or left member (force-leave): it is marked
// left and its departure published.
func (p *Pool) RemoveFailed(name string) bool {
	p.mu.Lock()
	m, ok := p.members[name]
	if ok && m.Status != StatusAlive {
		m.Status = StatusLeft
		p.setMemberLocked(m)
	}
	var ev *Event
	if ok && m.Status == StatusLeft {
		ev = &Event{Type: EventLeave, Member: *m}
	}
	p.mu.Unlock()
	if ev != nil {
		p.publish(*ev)
	}
	return ev != nil
}

// Prune forgets a member that is not alive entirely (force-leave with
// ?prune): after RemoveFailed has marked it left, it is dropped from the
// member list rather than kept as left until reaped. It reports whether a
// member was dropped; an alive or unknown member is left alone.
func (p *Pool) Prune(name string) bool {
	p.RemoveFailed(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok || m.Status != StatusLeft {
		return false
	}
	delete(p.members, name)
	delete(p.coords, name)
	return true
}

// Leave tells the pool this member is leaving and waits for the message to
// spread (bounded by timeout).
func (p *Pool) Leave(timeout time.Duration) error {
	// memberlist cannot tell the others whether a member left or died, so
	// the intent travels in the member's tags first.
	p.logger.Info("leaving the gossip pool")
	p.mu.Lock()
	p.left = true
	p.tags[leavingTag] = "1"
	p.mu.Unlock()
	if err := p.ml.UpdateNode(timeout); err != nil {
		p.logger.Warn("announce leave", "error", err)
	}
	if err := p.ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave gossip: %w", err)
	}
	// Keep answering for a moment so the leave reaches every member before
	// failure detection marks this one failed instead (serf does the same).
	delay := time.Second
	if p.cfg.Fast {
		delay = 500 * time.Millisecond
	}
	time.Sleep(min(delay, timeout))
	return nil
}

// Shutdown stops gossiping without telling anyone (the others will see this
// member fail unless Leave was called first).
func (p *Pool) Shutdown() error {
	p.stopOnce.Do(func() { close(p.stopCh) })
	p.wg.Wait()
	if err := p.ml.Shutdown(); err != nil {
		return fmt.Errorf("stop gossip: %w", err)
	}
	return nil
}

// NumMembers returns how many members are alive.
func (p *Pool) NumMembers() int { return p.ml.NumMembers() }

func (p *Pool) publish(ev Event) {
	select {
	case p.events <- ev:
	default:
		p.mu.Lock()
		p.dropped++
		p.mu.Unlock()
		p.logger.Warn("membership event dropped; the leader's periodic reconcile will catch up", "member", ev.Member.Name)
	}
}

func (p *Pool) memberFrom(n *memberlist.Node, status Status) *Member {
	tags := map[string]string{}
	if len(n.Meta) > 0 {
		if err := json.Unmarshal(n.Meta, &tags); err != nil {
			p.logger.Warn("bad member metadata", "member", n.Name, "error", err)
		}
	}
	return &Member{Name: n.Name, Addr: n.Addr, Port: n.Port, Tags: tags, Status: status,
		PMin: n.PMin, PMax: n.PMax, PCur: n.PCur, DMin: n.DMin, DMax: n.DMax, DCur: n.DCur}
}

func copyTags(t map[string]string) map[string]string {
	c := make(map[string]string, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}

// delegate gives memberlist this member's metadata.
type delegate struct{ p *Pool }

func (d *delegate) NodeMeta(limit int) []byte {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	b, err := json.Marshal(d.p.tags)
	if err != nil || len(b) > limit {
		d.p.logger.Error("gossip tags too large, sending none", "size", len(b), "limit", limit)
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) > 0 && b[0] == msgUserEvent {
		d.p.handleUserEventMsg(b[1:])
		return
	}
	d.p.handleUserMsg(b)
}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.p.bq.GetBroadcasts(overhead, limit)
}
func (d *delegate) LocalState(join bool) []byte            { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// eventDelegate turns memberlist's callbacks into Events.
type eventDelegate struct{ p *Pool }

func (e *eventDelegate) NotifyJoin(n *memberlist.Node) {
	m := e.p.memberFrom(n, StatusAlive)
	e.p.mu.Lock()
	e.p.setMemberLocked(m)
	e.p.mu.Unlock()
	e.p.publish(Event{Type: EventJoin, Member: *m})
}

func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	m := e.p.memberFrom(n, StatusFailed)
	typ := EventFailed
	// A member that announced its own death (memberlist's StateLeft) left,
	// even when its "leaving" tag lost the race with the leave itself.
	if m.Tags[leavingTag] == "1" || n.State == memberlist.StateLeft {
		m.Status, typ = StatusLeft, EventLeave
	}
	delete(m.Tags, leavingTag)
	e.p.mu.Lock()
	e.p.setMemberLocked(m)
	e.p.mu.Unlock()
	e.p.publish(Event{Type: typ, Member: *m})
}

func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	m := e.p.memberFrom(n, StatusAlive)
	typ := EventUpdate
	if m.Tags[leavingTag] == "1" {
		m.Status = StatusLeaving
		delete(m.Tags, leavingTag)
	}
	e.p.mu.Lock()
	e.p.setMemberLocked(m)
	e.p.mu.Unlock()
	e.p.publish(Event{Type: typ, Member: *m})
}

// aliveDelegate refuses a member that claims a name another live member
// with a different node ID already holds.
type aliveDelegate struct{ p *Pool }

func (a *aliveDelegate) NotifyAlive(n *memberlist.Node) error {
	tags := map[string]string{}
	_ = json.Unmarshal(n.Meta, &tags)
	a.p.mu.Lock()
	defer a.p.mu.Unlock()
	if n.Name == a.p.cfg.NodeName && tags["id"] != "" && tags["id"] != a.p.tags["id"] {
		err := fmt.Errorf("%w: %q is held by node ID %s at %s", ErrNameConflict, n.Name, tags["id"], n.Address())
		a.p.conflict.Store(&err)
		return err
	}
	if old, ok := a.p.members[n.Name]; ok && old.Status == StatusAlive && old.Tags["id"] != "" && tags["id"] != "" && old.Tags["id"] != tags["id"] {
		return fmt.Errorf("%w: %q", ErrNameConflict, n.Name)
	}
	if dc, mine := tags["dc"], a.p.tags["dc"]; !a.p.cfg.WAN && dc != "" && mine != "" && dc != mine {
		return fmt.Errorf("member %q is in datacenter %q, not %q", n.Name, dc, mine)
	}
	return nil
}

// logAdapter routes memberlist's standard log lines to hclog.
type logAdapter struct{ logger hclog.Logger }

func (l *logAdapter) Write(b []byte) (int, error) {
	msg := string(b)
	for len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	switch {
	case len(msg) > 7 && msg[:7] == "[ERR] m":
		l.logger.Error(msg)
	case len(msg) > 8 && msg[:8] == "[WARN] m":
		l.logger.Warn(msg)
	default:
		l.logger.Debug(msg)
	}
	return len(b), nil
}

var _ io.Writer = (*logAdapter)(nil)
