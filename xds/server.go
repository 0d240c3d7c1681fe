package xds

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/armon/go-metrics"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
)

// Server delivers proxies' snapshots over ADS, both state of the world
// (grpc-go's proxyless client) and incremental (Envoy as Consul bootstraps
// it), and keeps track of what each proxy acknowledged. NACKs are logged
// with the proxy, the resource type and Envoy's message, counted, and never
// answered by sending the rejected version again: the proxy keeps the last
// version it accepted until the next change.
type Server struct {
	logger hclog.Logger
	cache  cachev3.SnapshotCache
	ads    serverv3.Server
	hooks  Hooks
	// now is the time the debug view reports (stream starts, ACK and
	// NACK times); it decides nothing.
	now func() time.Time
	// memo shares built resources between the proxies' builds.
	memo *Memo

	// deltaIDs numbers the delta streams (deltaADS).
	deltaIDs atomic.Int64

	mu      sync.Mutex
	streams map[int64]*streamState
	// deltaNodes are the delta streams of each node, flushed after its
	// SetSnapshot (delta.go).
	deltaNodes map[string][]*deltaStream
	nodes      map[string]int               // node id -> open streams naming it
	acked      map[string]map[string]string // node id -> type URL -> acked version
	nacked     map[string]map[string]string // node id -> type URL -> last NACK's message
	changed    chan struct{}                // closed and replaced on every ACK or NACK

	nacks   atomic.Int64
	acks    atomic.Int64
	opened  atomic.Int64
	current atomic.Int64
}

// streamState is what the server remembers of one stream.
type streamState struct {
	// ctx is the stream's context.
	ctx  context.Context
	node string
	// nonces maps the nonce of a response not answered yet to the
	// snapshot version it carried.
	nonces map[string]string
	// started, delta and types are for the debug view (Streams): types
	// holds one entry per type URL the stream was sent (five for Envoy:
	// a slice).
	started time.Time
	delta   bool
	types   []typeEntry
}

// typeEntry is one type URL's status on a stream.
type typeEntry struct {
	url string
	TypeStatus
}

// StreamStatus is what the debug view shows of one ADS stream.
type StreamStatus struct {
	// Proxy is the node ID the stream named ("" until its first request).
	Proxy    string
	StreamID int64
	// Delta is true for an incremental stream, false for state of the
	// world.
	Delta   bool
	Started time.Time
	// Types is the state of each type URL the stream was sent.
	Types map[string]TypeStatus
}

// TypeStatus is one resource type's state on a stream.
type TypeStatus struct {
	// SentVersion is the version of the last response sent.
	SentVersion string
	SentAt      time.Time
	// AckedVersion is the version the proxy last accepted ("" when it
	// accepted none yet).
	AckedVersion string    `json:",omitempty"`
	AckedAt      time.Time `json:",omitempty"`
	// LastNack is the proxy's last rejection, nil when it rejected none.
	LastNack *NackStatus `json:",omitempty"`
}

// NackStatus is a rejected version, with Envoy's error_detail message.
type NackStatus struct {
	Version string
	Error   string
	At      time.Time
}

// typeLocked returns the stream's entry of url, made on first use; it is
// valid until the next call.
func (st *streamState) typeLocked(url string) *TypeStatus {
	for i := range st.types {
		if st.types[i].url == url {
			return &st.types[i].TypeStatus
		}
	}
	if st.types == nil {
		st.types = make([]typeEntry, 0, len(sendOrder))
	}
	st.types = append(st.types, typeEntry{url: typeURL(url)})
	return &st.types[len(st.types)-1].TypeStatus
}

// Streams returns the state of every open stream, by proxy then stream ID.
func (s *Server) Streams() []StreamStatus {
	s.mu.Lock()
	out := make([]StreamStatus, 0, len(s.streams))
	for id, st := range s.streams {
		ss := StreamStatus{Proxy: st.node, StreamID: id, Delta: st.delta, Started: st.started,
			Types: make(map[string]TypeStatus, len(st.types))}
		for _, te := range st.types {
			c := te.TypeStatus
			if c.LastNack != nil {
				n := *c.LastNack
				c.LastNack = &n
			}
			ss.Types[te.url] = c
		}
		out = append(out, ss)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Proxy != out[j].Proxy {
			return out[i].Proxy < out[j].Proxy
		}
		return out[i].StreamID < out[j].StreamID
	})
	return out
}

// maxNonces bounds the nonces remembered per stream: a proxy answers
// each response, so only the last few can still be acknowledged.
const maxNonces = 64

// Hooks let the server's owner follow which proxies are connected.
type Hooks struct {
	// NodeConnected is called when a stream first names a node (its first
	// request), with the stream's context; an error ends the stream with
	// that error. It must not block for long: it runs on the stream's
	// goroutine.
	NodeConnected func(ctx context.Context, nodeID string) error
	// NodeDisconnected is called when the last stream naming a node ends.
	NodeDisconnected func(nodeID string)
	// ListenersNamed is called when a stream asks for listeners by name
	// (a proxyless gRPC client names the services it dials): with the
	// whole set (state of the world, replace) or the names added and
	// removed (delta). Same constraints as NodeConnected.
	ListenersNamed func(nodeID string, names []string, replace bool, removed []string)
}

// NewServer returns a Server whose streams end with ctx.
func NewServer(ctx context.Context, logger hclog.Logger) *Server {
	return NewServerWithHooks(ctx, logger, Hooks{})
}

// NewServerWithHooks is NewServer with connection hooks.
func NewServerWithHooks(ctx context.Context, logger hclog.Logger, hooks Hooks) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{
		logger:     logger,
		hooks:      hooks,
		now:        time.Now,
		memo:       NewMemo(),
		streams:    map[int64]*streamState{},
		deltaNodes: map[string][]*deltaStream{},
		nodes:      map[string]int{},
		acked:      map[string]map[string]string{},
		nacked:     map[string]map[string]string{},
		changed:    make(chan struct{}),
	}
	s.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger{logger.Named("cache")})
	// go-control-plane serves the state-of-the-world streams; delta
	// streams are ours (delta.go).
	s.ads = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:     func(ctx context.Context, id int64, _ string) error { return s.onOpen(ctx, id, false) },
		StreamClosedFunc:   s.onClosed,
		StreamRequestFunc:  s.onRequest,
		StreamResponseFunc: s.onResponse,
	})
	return s
}

// Register serves ADS (state of the world and delta) on g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, adsServer{Server: s.ads, s: s})
}

// Update builds the proxy's snapshot and hands it to its streams. It returns
// the snapshot (each type has its own version: GetVersion).
func (s *Server) Update(ctx context.Context, p *Proxy) (*Snapshot, error) {
	snap, err := BuildMemo(p, s.memo)
	if err != nil {
		return nil, err
	}
	if err := s.SetSnapshot(ctx, p.ID, snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// SetSnapshot hands a snapshot to the node's streams: one of Build's, or
// one made otherwise (go-control-plane's), which is copied into a Snapshot.
func (s *Server) SetSnapshot(ctx context.Context, nodeID string, rs cachev3.ResourceSnapshot) error {
	snap, err := snapshotOf(rs)
	if err != nil {
		return fmt.Errorf("xds: snapshot of %s: %w", nodeID, err)
	}
	if err := s.cache.SetSnapshot(ctx, nodeID, snap); err != nil {
		return fmt.Errorf("xds: set snapshot of %s: %w", nodeID, err)
	}
	// The cache answered the node's state-of-the-world watches; its delta
	// streams are sent what changed by goroutines of their own.
	s.flushNode(nodeID)
	return nil
}

// Remove forgets a deregistered proxy.
func (s *Server) Remove(nodeID string) {
	s.cache.ClearSnapshot(nodeID)
	s.mu.Lock()
	delete(s.acked, nodeID)
	delete(s.nacked, nodeID)
	s.mu.Unlock()
}

const (
	listenerTypeURL = "type.googleapis.com/envoy.config.listener.v3.Listener"
)

// Acked returns the version of typeURL the proxy last acknowledged.
func (s *Server) Acked(nodeID, typeURL string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[nodeID][typeURL]
}

// LastNack returns Envoy's message of the proxy's last NACK of typeURL
// ("" when it never rejected one).
func (s *Server) LastNack(nodeID, typeURL string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nacked[nodeID][typeURL]
}

// WaitAcked blocks until every node of nodes has acknowledged version of
// typeURL, or ctx ends.
func (s *Server) WaitAcked(ctx context.Context, typeURL, version string, nodes []string) error {
	for {
		s.mu.Lock()
		missing := ""
		for _, n := range nodes {
			if s.acked[n][typeURL] != version {
				missing = n
				break
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if missing == "" {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("xds: %s has not acknowledged %s version %s: %w", missing, typeURL, version, ctx.Err())
		}
	}
}

// Stats are counters of the server's streams.
type Stats struct {
	StreamsOpen   int64
	StreamsOpened int64
	Acks          int64
	Nacks         int64
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{StreamsOpen: s.current.Load(), StreamsOpened: s.opened.Load(), Acks: s.acks.Load(), Nacks: s.nacks.Load()}
}

func (s *Server) onOpen(ctx context.Context, id int64, delta bool) error {
	s.opened.Add(1)
	metrics.SetGauge([]string{"xds", "streams"}, float32(s.current.Add(1)))
	s.mu.Lock()
	s.streams[id] = &streamState{ctx: ctx, nonces: map[string]string{}, started: s.now(), delta: delta}
	s.mu.Unlock()
	return nil
}

func (s *Server) onClosed(id int64, _ *core.Node) {
	metrics.SetGauge([]string{"xds", "streams"}, float32(s.current.Add(-1)))
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	gone := ""
	if st != nil && st.node != "" {
		s.nodes[st.node]--
		if s.nodes[st.node] <= 0 {
			delete(s.nodes, st.node)
			gone = st.node
		}
	}
	s.mu.Unlock()
	if gone != "" && s.hooks.NodeDisconnected != nil {
		s.hooks.NodeDisconnected(gone)
	}
}

// nameNode records the node a stream's request names, the first time, and
// calls NodeConnected. A stream may not change its node.
func (s *Server) nameNode(id int64, node string) (*streamState, error) {
	s.mu.Lock()
	st := s.streams[id]
	if st == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("xds: unknown stream %d", id)
	}
	if st.node != "" || node == "" {
		s.mu.Unlock()
		if st.node != "" && node != "" && node != st.node {
			return nil, fmt.Errorf("xds: stream of node %q named node %q", st.node, node)
		}
		return st, nil
	}
	if s.hooks.NodeConnected != nil {
		s.mu.Unlock()
		if err := s.hooks.NodeConnected(st.ctx, node); err != nil {
			return nil, err
		}
		s.mu.Lock()
	}
	st.node = node
	s.nodes[node]++
	s.mu.Unlock()
	return st, nil
}

func (s *Server) onRequest(id int64, req *discovery.DiscoveryRequest) error {
	st, err := s.nameNode(id, req.GetNode().GetId())
	if err != nil {
		return err
	}
	if req.GetTypeUrl() == listenerTypeURL && len(req.GetResourceNames()) > 0 && s.hooks.ListenersNamed != nil {
		s.hooks.ListenersNamed(st.node, req.GetResourceNames(), true, nil)
	}
	if req.GetResponseNonce() == "" {
		return nil // a subscription, not an answer to a push
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rejected, ok := st.answered(req.GetResponseNonce())
	if !ok {
		return nil // a stale nonce: the server ignores the request too
	}
	if e := req.GetErrorDetail(); e != nil {
		s.nackLocked(st, req.GetTypeUrl(), rejected, e.GetMessage())
		// The cache answers a request whose version differs from the
		// snapshot's at once: with the rejected version named instead of
		// the last accepted one, it waits for the next change rather than
		// sending the same configuration again.
		req.VersionInfo = rejected
		return nil
	}
	s.ackLocked(st, req.GetTypeUrl(), req.GetVersionInfo())
	return nil
}

func (s *Server) onResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

func (s *Server) onDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	st, err := s.nameNode(id, req.GetNode().GetId())
	if err != nil {
		return err
	}
	if req.GetTypeUrl() == listenerTypeURL && s.hooks.ListenersNamed != nil &&
		(len(req.GetResourceNamesSubscribe()) > 0 || len(req.GetResourceNamesUnsubscribe()) > 0) {
		s.hooks.ListenersNamed(st.node, req.GetResourceNamesSubscribe(), false, req.GetResourceNamesUnsubscribe())
	}
	if req.GetResponseNonce() == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	version, ok := st.answered(req.GetResponseNonce())
	if !ok {
		return nil
	}
	if e := req.GetErrorDetail(); e != nil {
		s.nackLocked(st, req.GetTypeUrl(), version, e.GetMessage())
		return nil
	}
	s.ackLocked(st, req.GetTypeUrl(), version)
	return nil
}

func (s *Server) onDeltaResponse(id int64, resp *discovery.DeltaDiscoveryResponse) {
	s.sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// sent remembers the version a response of the stream carried, by nonce.
func (s *Server) sent(id int64, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return
	}
	if len(st.nonces) >= maxNonces {
		clear(st.nonces)
	}
	st.nonces[nonce] = version
	ts := st.typeLocked(typeURL)
	ts.SentVersion, ts.SentAt = version, s.now()
}

// answered returns the version of the response a request answers, and
// forgets it.
func (st *streamState) answered(nonce string) (string, bool) {
	v, ok := st.nonces[nonce]
	delete(st.nonces, nonce)
	return v, ok
}

func (s *Server) ackLocked(st *streamState, url, version string) {
	s.acks.Add(1)
	metrics.IncrCounter([]string{"xds", "ack"}, 1)
	node := st.node
	m := s.acked[node]
	if m == nil {
		m = map[string]string{}
		s.acked[node] = m
	}
	m[typeURL(url)] = version
	ts := st.typeLocked(url)
	ts.AckedVersion, ts.AckedAt = version, s.now()
	s.wakeLocked()
}

func (s *Server) nackLocked(st *streamState, typeURL, version, msg string) {
	node := st.node
	s.nacks.Add(1)
	metrics.IncrCounter([]string{"xds", "nack"}, 1)
	s.logger.Warn("proxy rejected configuration (NACK); it keeps the last version it accepted",
		"proxy", node, "type", typeURL, "rejected_version", version, "accepted_version", s.acked[node][typeURL], "error", msg)
	m := s.nacked[node]
	if m == nil {
		m = map[string]string{}
		s.nacked[node] = m
	}
	m[typeURL] = msg
	st.typeLocked(typeURL).LastNack = &NackStatus{Version: version, Error: msg, At: s.now()}
	s.wakeLocked()
}

func (s *Server) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// cacheLogger adapts hclog to go-control-plane's logger.
type cacheLogger struct{ l hclog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) {
	if c.l.IsTrace() {
		c.l.Trace(fmt.Sprintf(f, a...))
	}
}

func (c cacheLogger) Infof(f string, a ...any) {
	if c.l.IsDebug() {
		c.l.Debug(fmt.Sprintf(f, a...))
	}
}

func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Warn(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...)) }
