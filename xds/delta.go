package xds

import (
	"slices"
	"strconv"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Incremental (delta) ADS, the protocol of every Envoy sidecar, is served
// by deltaStream rather than go-control-plane's delta server, on the same
// snapshot cache and with the same subscription logic (its
// stream.Subscription): go-control-plane runs two goroutines per stream
// (the RPC's, which sends what the cache answers, and one that receives
// the proxy's requests); here the RPC's goroutine receives and answers
// requests, and a new snapshot is sent by the goroutine that set it
// (Server.SetSnapshot, the proxy's build), so a stream costs one goroutine
// (and its stack) fewer. Both ways, a stream whose proxy does not read
// stops receiving requests until it does. State-of-the-world streams
// (proxyless gRPC clients) stay on go-control-plane's server.

// adsServer is go-control-plane's ADS server with delta streams served by
// Server.deltaADS.
type adsServer struct {
	serverv3.Server
	s *Server
}

// DeltaAggregatedResources serves one delta ADS stream.
func (a adsServer) DeltaAggregatedResources(str discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.s.deltaADS(str)
}

// deltaStream is one delta ADS stream.
type deltaStream struct {
	str discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	id  int64
	// responses receives the cache's answers to the stream's watches (at
	// most one outstanding per type: a watch is answered once).
	responses chan cachev3.DeltaResponse

	// mu guards the fields below and is held while sending, so that the
	// responses of a type go out in the order the cache made them.
	mu sync.Mutex
	// node is the node the first request named (later ones may omit it);
	// nodeID its ID once the server recorded it (Server.deltaNodes).
	node    *core.Node
	nodeID  string
	nonce   int64
	watches map[string]*deltaWatch
	// err is the error a send failed with, outside the stream's
	// goroutine; the stream ends with it.
	err    error
	closed bool
}

// deltaWatch is one resource type's subscription and open watch.
type deltaWatch struct {
	sub    stream.Subscription
	cancel func()
}

// deltaADS serves a delta stream on the RPC's goroutine: each request
// updates its type's subscription and opens a watch on the cache, whose
// answer (at once, or at the next SetSnapshot of the node) is sent.
func (s *Server) deltaADS(str discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	// Negative IDs: go-control-plane numbers the state-of-the-world
	// streams from 1, and the two must not meet in s.streams.
	id := -s.deltaIDs.Add(1)
	ds := &deltaStream{str: str, id: id, node: &core.Node{}, watches: make(map[string]*deltaWatch, 5),
		responses: make(chan cachev3.DeltaResponse, 2*int(types.UnknownType))}
	if err := s.onOpen(str.Context(), id, true); err != nil {
		return err
	}
	defer func() {
		ds.mu.Lock()
		ds.closed = true
		if ds.nodeID != "" {
			s.mu.Lock()
			s.deltaNodes[ds.nodeID] = slices.DeleteFunc(s.deltaNodes[ds.nodeID], func(d *deltaStream) bool { return d == ds })
			if len(s.deltaNodes[ds.nodeID]) == 0 {
				delete(s.deltaNodes, ds.nodeID)
			}
			s.mu.Unlock()
		}
		for _, w := range ds.watches {
			if w.cancel != nil {
				w.cancel()
			}
		}
		node := ds.node
		ds.mu.Unlock()
		s.onClosed(id, node)
	}()
	for {
		req, err := str.Recv()
		if err != nil {
			// The proxy went away (or the stream was ended under it).
			return nil
		}
		if err := s.deltaRequest(ds, req); err != nil {
			return err
		}
	}
}

// deltaRequest handles one request of ds, as go-control-plane's delta
// server does.
func (s *Server) deltaRequest(ds *deltaStream, req *discovery.DeltaDiscoveryRequest) error {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.err != nil {
		return ds.err
	}
	// What the cache answered before this request goes first.
	if err := s.flushLocked(ds); err != nil {
		return err
	}
	if err := s.onDeltaRequest(ds.id, req); err != nil {
		return err
	}
	if ds.nodeID == "" {
		// The first request named the node: SetSnapshot of that node
		// flushes this stream from now on.
		s.mu.Lock()
		if st := s.streams[ds.id]; st != nil && st.node != "" {
			ds.nodeID = st.node
			s.deltaNodes[st.node] = append(s.deltaNodes[st.node], ds)
		}
		s.mu.Unlock()
	}
	if req.GetNode() != nil {
		ds.node = req.GetNode()
	} else {
		req.Node = ds.node
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
	}
	w := ds.watches[typeURL]
	if w == nil {
		// The first request of a type: an empty subscription is a
		// wildcard (legacy wildcard, as Envoy subscribes to CDS and LDS).
		w = &deltaWatch{sub: stream.NewDeltaSubscription(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), req.GetInitialResourceVersions(), true)}
		ds.watches[typeURL] = w
	} else {
		if w.cancel != nil {
			w.cancel()
		}
		w.sub.UpdateResourceSubscriptions(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	cancel, err := s.cache.CreateDeltaWatch(req, w.sub, ds.responses)
	if err != nil {
		return err
	}
	w.cancel = cancel
	return s.flushLocked(ds)
}

// flushLocked sends what the cache answered ds's watches.
func (s *Server) flushLocked(ds *deltaStream) error {
	for {
		select {
		case resp := <-ds.responses:
			if err := s.sendLocked(ds, resp); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// sendLocked sends one of the cache's answers and records what the proxy
// now holds of its type.
func (s *Server) sendLocked(ds *deltaStream, resp cachev3.DeltaResponse) error {
	if ds.closed {
		return nil
	}
	out, err := resp.GetDeltaDiscoveryResponse()
	if err != nil {
		return err
	}
	ds.nonce++
	out.Nonce = strconv.FormatInt(ds.nonce, 10)
	s.onDeltaResponse(ds.id, resp.GetDeltaRequest(), out)
	if err := ds.str.Send(out); err != nil {
		return err
	}
	if w := ds.watches[resp.GetDeltaRequest().GetTypeUrl()]; w != nil {
		w.sub.SetReturnedResources(resp.GetNextVersionMap())
	}
	return nil
}

// flushNode sends, on the caller's goroutine, what the cache answered the
// delta streams of node (after a SetSnapshot). A failed send ends its
// stream.
func (s *Server) flushNode(node string) {
	s.mu.Lock()
	streams := slices.Clone(s.deltaNodes[node])
	s.mu.Unlock()
	for _, ds := range streams {
		ds.mu.Lock()
		if ds.err == nil {
			if err := s.flushLocked(ds); err != nil {
				// A broken transport fails the stream's receive too;
				// anything else ends it at its next request.
				ds.err = err
				s.logger.Debug("send to a proxy failed", "proxy", node, "error", err)
			}
		}
		ds.mu.Unlock()
	}
}
