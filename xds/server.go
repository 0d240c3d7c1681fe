package xds

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
)

// Server delivers proxies' snapshots over ADS (state of the world) and keeps
// track of what each proxy acknowledged. NACKs are logged with the proxy, the
// resource type and Envoy's message, and counted.
type Server struct {
	logger hclog.Logger
	cache  cachev3.SnapshotCache
	ads    serverv3.Server

	mu      sync.Mutex
	streams map[int64]string             // stream -> node id
	acked   map[string]map[string]string // node id -> type URL -> acked version
	changed chan struct{}                // closed and replaced on every ACK

	nacks   atomic.Int64
	acks    atomic.Int64
	opened  atomic.Int64
	current atomic.Int64
}

// NewServer returns a Server whose streams end with ctx.
func NewServer(ctx context.Context, logger hclog.Logger) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{
		logger:  logger,
		streams: map[int64]string{},
		acked:   map[string]map[string]string{},
		changed: make(chan struct{}),
	}
	s.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger{logger.Named("cache")})
	s.ads = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:    s.onOpen,
		StreamClosedFunc:  s.onClosed,
		StreamRequestFunc: s.onRequest,
	})
	return s
}

// Register serves ADS on g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// Update builds the proxy's snapshot and hands it to its streams. It returns
// the snapshot's version.
func (s *Server) Update(ctx context.Context, p *Proxy) (string, error) {
	snap, err := Build(p)
	if err != nil {
		return "", err
	}
	if err := s.cache.SetSnapshot(ctx, p.ID, snap); err != nil {
		return "", fmt.Errorf("xds: set snapshot of %s: %w", p.ID, err)
	}
	return snap.GetVersion(clusterTypeURL), nil
}

// Remove forgets a deregistered proxy.
func (s *Server) Remove(nodeID string) {
	s.cache.ClearSnapshot(nodeID)
	s.mu.Lock()
	delete(s.acked, nodeID)
	s.mu.Unlock()
}

const clusterTypeURL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// Acked returns the version of typeURL the proxy last acknowledged.
func (s *Server) Acked(nodeID, typeURL string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[nodeID][typeURL]
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

func (s *Server) onOpen(_ context.Context, id int64, _ string) error {
	s.opened.Add(1)
	s.current.Add(1)
	return nil
}

func (s *Server) onClosed(id int64, _ *core.Node) {
	s.current.Add(-1)
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

func (s *Server) onRequest(id int64, req *discovery.DiscoveryRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	node := s.streams[id]
	if n := req.GetNode().GetId(); n != "" {
		node = n
		s.streams[id] = n
	}
	if req.GetResponseNonce() == "" {
		return nil // a subscription, not an answer to a push
	}
	if e := req.GetErrorDetail(); e != nil {
		s.nacks.Add(1)
		s.logger.Warn("proxy rejected configuration (NACK)", "proxy", node, "type", req.GetTypeUrl(),
			"version", req.GetVersionInfo(), "error", e.GetMessage())
		return nil
	}
	s.acks.Add(1)
	m := s.acked[node]
	if m == nil {
		m = map[string]string{}
		s.acked[node] = m
	}
	m[req.GetTypeUrl()] = req.GetVersionInfo()
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// cacheLogger adapts hclog to go-control-plane's logger.
type cacheLogger struct{ l hclog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) { c.l.Trace(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Infof(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Warn(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...)) }
