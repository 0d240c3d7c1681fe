package xds

import (
	"slices"
	"strconv"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Incremental (delta) ADS, the protocol of every Envoy sidecar, is served
// by deltaStream rather than go-control-plane's delta server, on the same
// snapshot cache and with the same subscription logic (its
// stream.Subscription). go-control-plane runs two goroutines per stream for
// its whole life: the RPC's, which sends what the cache answers, and one
// that receives the proxy's requests. Here the RPC's goroutine receives and
// answers requests, and what a new snapshot changes is sent by a goroutine
// started for it that ends once it is sent (flushNode): an idle stream
// costs one goroutine (and its stack) fewer, and the goroutine that set the
// snapshot (a proxy's build) never waits for a proxy that does not read.
// As with go-control-plane, a stream whose proxy does not read stops
// receiving its requests until it does. State-of-the-world streams
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
	// held is what the cache answered and is not sent yet, one answer
	// per type at most. Answers go out in Envoy's order (sendOrder), and
	// listeners and routes wait while an answer of clusters or endpoints
	// is not acknowledged: Envoy warms clusters before the listeners that
	// use them. warming is the nonce of each such answer sent and not yet
	// ACKed or NACKed, by type.
	held    map[string]cachev3.DeltaResponse
	warming map[string]string
	// err is the error a send failed with, outside the stream's
	// goroutine; the stream ends with it.
	err    error
	closed bool

	// fmu guards the flusher's state (flushNode), never held while
	// sending: flushing is set while a flusher runs, again when answers
	// came meanwhile, ended once the stream is over; flushers counts the
	// flusher goroutines, for the stream's end to wait for.
	fmu                    sync.Mutex
	flushing, again, ended bool
	flushers               sync.WaitGroup
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
		held: make(map[string]cachev3.DeltaResponse, 5), warming: make(map[string]string, 2),
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
		// The stream is over: a flusher's send fails at once.
		ds.fmu.Lock()
		ds.ended = true
		ds.fmu.Unlock()
		ds.flushers.Wait()
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
	// An ACK or NACK of a cluster or endpoint answer ends its warming:
	// held listeners and routes may follow.
	if n, ok := ds.warming[req.GetTypeUrl()]; ok && n == req.GetResponseNonce() {
		delete(ds.warming, req.GetTypeUrl())
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
	// The cache keeps the request with the watch: only what it reads of
	// it (the node, the type, whether it answers a response), not the
	// proxy's whole request with its names and error detail.
	watchReq := &discovery.DeltaDiscoveryRequest{Node: ds.node, TypeUrl: typeURL, ResponseNonce: req.GetResponseNonce()}
	cancel, err := s.cache.CreateDeltaWatch(watchReq, w.sub, ds.responses)
	if err != nil {
		return err
	}
	w.cancel = cancel
	return s.flushLocked(ds)
}

// sendOrder is the order in which a stream's answers go out, as Envoy
// expects them: secrets and clusters before the endpoints of the
// clusters, listeners after them, routes last.
var sendOrder = []string{resource.SecretType, resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// flushLocked sends what the cache answered ds's watches, in sendOrder,
// holding listeners and routes while clusters or endpoints warm.
func (s *Server) flushLocked(ds *deltaStream) error {
drain:
	for {
		select {
		case resp := <-ds.responses:
			// A newer answer of a type replaces a held one: it was made
			// against what the proxy holds, which the held one never
			// changed.
			ds.held[resp.GetDeltaRequest().GetTypeUrl()] = resp
		default:
			break drain
		}
	}
	for _, typ := range sendOrder {
		if err := s.sendHeldLocked(ds, typ); err != nil {
			return err
		}
	}
	for typ := range ds.held {
		// Types outside sendOrder (none that Envoy subscribes to today).
		if err := s.sendHeldLocked(ds, typ); err != nil {
			return err
		}
	}
	return nil
}

// sendHeldLocked sends ds's held answer of typ, unless it is of listeners
// or routes and clusters or endpoints are warming.
func (s *Server) sendHeldLocked(ds *deltaStream, typ string) error {
	resp, ok := ds.held[typ]
	if !ok {
		return nil
	}
	if (typ == resource.ListenerType || typ == resource.RouteType) && ds.clustersWarming() {
		return nil
	}
	delete(ds.held, typ)
	return s.sendLocked(ds, resp)
}

// clustersWarming reports whether an answer of clusters or endpoints is
// held or sent and not yet acknowledged.
func (ds *deltaStream) clustersWarming() bool {
	if len(ds.warming) > 0 {
		return true
	}
	_, c := ds.held[resource.ClusterType]
	_, e := ds.held[resource.EndpointType]
	return c || e
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
	if typ := resp.GetDeltaRequest().GetTypeUrl(); typ == resource.ClusterType || typ == resource.EndpointType {
		ds.warming[typ] = out.Nonce
	}
	if w := ds.watches[resp.GetDeltaRequest().GetTypeUrl()]; w != nil {
		w.sub.SetReturnedResources(resp.GetNextVersionMap())
	}
	return nil
}

// flushNode has what the cache answered the delta streams of node (after
// a SetSnapshot) sent by a goroutine of each stream that has answers, which
// ends once they are sent: the caller (a proxy's build) never waits for a
// proxy that does not read, and an idle stream holds no goroutine for it.
func (s *Server) flushNode(node string) {
	s.mu.Lock()
	streams := slices.Clone(s.deltaNodes[node])
	s.mu.Unlock()
	for _, ds := range streams {
		if len(ds.responses) == 0 {
			continue
		}
		ds.fmu.Lock()
		switch {
		case ds.ended:
		case ds.flushing:
			ds.again = true
		default:
			ds.flushing = true
			ds.flushers.Add(1)
			go s.flusher(ds)
		}
		ds.fmu.Unlock()
	}
}

// flusher sends ds's pending answers, again while more came meanwhile. A
// failed send ends the stream at its next request (a broken transport
// fails its receive at once).
func (s *Server) flusher(ds *deltaStream) {
	defer ds.flushers.Done()
	for {
		ds.mu.Lock()
		if ds.err == nil {
			if err := s.flushLocked(ds); err != nil {
				ds.err = err
				s.logger.Debug("send to a proxy failed", "proxy", ds.nodeID, "error", err)
			}
		}
		ds.mu.Unlock()
		ds.fmu.Lock()
		if !ds.again || ds.ended {
			ds.flushing = false
			ds.fmu.Unlock()
			return
		}
		ds.again = false
		ds.fmu.Unlock()
	}
}
