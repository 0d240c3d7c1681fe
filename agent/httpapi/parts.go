package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/federation"
	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/xds"
)

// Backend is how the API reaches the catalog and the servers: the local
// server when the agent is one, an RPC client to the servers otherwise (and
// an in-memory catalog in tests). Implementations are safe for concurrent
// use and honour ctx.
type Backend interface {
	// Apply commits a write and returns the FSM's response.
	Apply(ctx context.Context, t catalog.CommandType, body any) (any, error)
	// Read runs a catalog read in its consistency mode, blocking if asked.
	Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
	// Status returns the leader's server address ("" when none) and the
	// voting servers' addresses.
	Status(ctx context.Context) (string, []string, error)
	// SessionRenew restarts a session's TTL timer on the leader and
	// returns the session, nil when there is no session with that ID.
	SessionRenew(ctx context.Context, id string) (*catalog.Session, error)
	// SaveSnapshot returns a snapshot archive of the whole state.
	SaveSnapshot(ctx context.Context) ([]byte, error)
	// RestoreSnapshot replaces every server's state with an archive's.
	RestoreSnapshot(ctx context.Context, archive []byte) error
	// Operator runs an operator call (Raft configuration, peers,
	// autopilot) on the leader and returns its JSON result.
	Operator(ctx context.Context, req *server.OperatorRequest) (json.RawMessage, error)
}

// ViewCache answers catalog reads from views the agent keeps fresh with
// blocking queries (agent/viewcache), for ?cached reads.
type ViewCache interface {
	// Get answers req from its view, starting the view when there is
	// none; with Options.MinQueryIndex it blocks as a blocking query.
	Get(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
	// Has reports whether req's view already holds a result.
	Has(req *catalog.ReadRequest) bool
	// Age returns how old req's view's result is (zero while its
	// blocking queries succeed); false when it has none.
	Age(req *catalog.ReadRequest) (time.Duration, bool)
	// Shared is Get for the parked blocking queries the API shares
	// (blocking.go): it also returns the result's Memo, and returns as
	// soon as the view's reads fail, with their error.
	Shared(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, *viewcache.Memo, error)
	// Park is Shared without a waiting goroutine: fn is called once
	// with the outcome (viewcache.Cache.Park).
	Park(req *catalog.ReadRequest, fn viewcache.ParkFunc)
}

// EventLog holds the user events this agent accepted.
type EventLog interface {
	// List returns the events named name (every event when name is empty),
	// oldest first, and a channel closed at the next accepted event. The
	// events are shared: callers must not modify them.
	List(name string) ([]*gossip.UserEvent, <-chan struct{})
}

// Control is the agent's own life as the API changes it.
type Control interface {
	// Self describes this agent as a gossip member would.
	Self() Member
	// Members lists the LAN gossip members (this agent alone when gossip
	// is off).
	Members() []Member
	// Leave leaves the gossip pool gracefully (bounded in time), so the
	// other members see this one as left when it returns, then asks the
	// process to stop; it does not wait for the stop.
	Leave()
	// Reload loads the configuration files again.
	Reload() error
	// Monitor streams the agent's log lines at level and above (JSON
	// objects when json is set) on the returned channel until stop is
	// called; lines a slow reader cannot take are dropped, never waited
	// for.
	Monitor(level string, json bool) (lines <-chan []byte, stop func(), err error)
	// Stats is the agent's runtime state by subsystem (agent, build,
	// consul, raft, runtime, serf_lan), each a map of names to values as
	// `consul info` prints them.
	Stats() map[string]map[string]string
}

// Member is an agent as /v1/agent/members shows it.
type Member struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// Parts are what the handlers act through, one family each. Config, ACL,
// Backend, Local, Events and Control are required; Gossip is nil when the
// agent runs without a gossip pool.
type Parts struct {
	// Config is the agent's configuration; the handlers only read it.
	Config *config.Config
	// Version is reported by /v1/agent/self.
	Version string
	// ACL resolves every request's token before the handler acts.
	ACL acl.Resolver
	// Backend serves catalog, KV, session, query, snapshot, operator and
	// status requests.
	Backend Backend
	// Local holds the agent's own services and checks (/v1/agent/...).
	Local *local.State
	// Gossip joins, force-leaves, fires events and manages the keyring.
	Gossip *gossip.Pool
	// Events serves /v1/event/list.
	Events EventLog
	// Control serves /v1/agent/self, members, leave and reload.
	Control Control
	// Metrics serves /v1/agent/metrics (telemetry.Telemetry); nil answers
	// 404.
	Metrics http.Handler
	// CA changes the Connect CA and signs leaves; Leaves is the agent's
	// leaf certificate cache. Both nil when Connect is off.
	CA     ConnectCA
	Leaves LeafCerts
	// Cache serves ?cached reads; nil answers them from the servers.
	Cache ViewCache
	// WAN is the WAN gossip pool on a server (nil on a client agent):
	// ?wan members, join and force-leave, and the keyring's WAN half.
	WAN *gossip.Pool
	// Federation lists the datacenters; nil refuses every ?dc= naming
	// another datacenter with "No path to datacenter".
	Federation Federation
	// XDS returns the agent's ADS server, for GET /v1/agent/xds/proxies;
	// nil when ports.grpc is off (the list is empty). Nil XDS: always off.
	XDS func() *xds.Server
}

// Federation is what the servers know of the other datacenters
// (server.Server on a server agent, server.Client on a client agent).
type Federation interface {
	// Datacenters lists the known datacenters, nearest first.
	Datacenters(ctx context.Context) ([]string, error)
	// WANCoordinates returns every datacenter's servers' WAN coordinates.
	WANCoordinates(ctx context.Context) ([]federation.DatacenterCoordinates, error)
	// ReplicationStatus is the datacenter's replication state, as its
	// leader knows it.
	ReplicationStatus(ctx context.Context) (server.ReplicationStatus, error)
	// FireEvent fires a user event in another datacenter.
	FireEvent(ctx context.Context, dc string, ev gossip.UserEvent) (gossip.UserEvent, error)
}

// parts is Parts as the handlers read them.
type parts struct {
	cfg     *config.Config
	version string
	acls    acl.Resolver
	backend Backend
	local   *local.State
	gossip  *gossip.Pool
	events  EventLog
	control Control
	metrics http.Handler
	ca      ConnectCA
	leaves  LeafCerts
	cache   ViewCache
	wan     *gossip.Pool
	fed     Federation
	xds     func() *xds.Server
}

func (p *parts) status(ctx context.Context) (string, []string, error) { return p.backend.Status(ctx) }
func (p *parts) selfMember() Member                                   { return p.control.Self() }
func (p *parts) members() []Member                                    { return p.control.Members() }
func (p *parts) requestLeave()                                        { p.control.Leave() }
func (p *parts) stats() map[string]map[string]string                  { return p.control.Stats() }

// Reload loads the configuration again.
func (p *parts) Reload() error { return p.control.Reload() }

// remoteDC reports whether a ?dc= names a datacenter other than the agent's.
func (h *Handler) remoteDC(dc string) bool {
	return dc != "" && dc != h.agent.cfg.Datacenter
}
