package xds

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unique"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// Incremental (delta) ADS, the protocol of every Envoy sidecar, is served
// by deltaStream rather than go-control-plane's delta server and cache
// watches, from the snapshots the cache holds and with the subscription
// rules of go-control-plane's stream.Subscription (legacy and explicit
// wildcards, initial_resource_versions, unsubscribing). Why ours:
//   - goroutines: go-control-plane runs two per stream for its whole life
//     (the RPC's, which sends what the cache answers, and one that receives
//     the proxy's requests). Here the RPC's goroutine receives and answers
//     requests, and what a new snapshot changes is sent by a goroutine
//     started for it that ends once it is sent (flushNode): an idle stream
//     costs one goroutine (and its stack) fewer, and the goroutine that set
//     the snapshot (a proxy's build) never waits for a proxy that does not
//     read.
//   - memory: the cache keeps, per stream and type, a watch with its
//     request, and each answer carries a new copy of the versions the proxy
//     holds. Here an answer is computed when it can be sent, and what the
//     proxy holds of a type is, in the usual case (it holds the whole
//     snapshot's type), a pointer to that type of the snapshot, turned
//     into a map of versions only when a subscription change must edit it.
//
// As with go-control-plane, a type has at most one answer in flight: after
// an answer, the next one waits for the proxy's next request of that type
// (its ACK or NACK). A stream whose proxy does not read stops receiving its
// requests until it does. State-of-the-world streams (proxyless gRPC
// clients) stay on go-control-plane's server.

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

	// mu guards the fields below and is held while sending, so that the
	// answers of a type go out in the order they were made.
	mu sync.Mutex
	// nodeID is the node the first request named, once the server
	// recorded it (Server.deltaNodes).
	nodeID string
	nonce  int64
	// types are the stream's subscriptions, one per type URL it asked
	// for, in the order of its first requests.
	types []*deltaType
	// err is the error a send failed with, outside the stream's
	// goroutine; the stream ends with it.
	err    error
	closed bool

	// fmu guards the flusher's state (flushNode), never held while
	// sending: flushing is set while a flusher runs, again when snapshots
	// came meanwhile, ended once the stream is over; flushers counts the
	// flusher goroutines, for the stream's end to wait for.
	fmu                    sync.Mutex
	flushing, again, ended bool
	flushers               sync.WaitGroup
}

// deltaType is one resource type's subscription on a delta stream and what
// the proxy holds of it.
type deltaType struct {
	url string
	// wildcard: the proxy wants every resource of the type (besides the
	// names it subscribed); legacy: it subscribed no name yet, and an
	// empty subscription list still means the wildcard.
	wildcard, legacy bool
	// names are the names subscribed explicitly; unanswered, those
	// subscribed since the last answer that the proxy does not hold: an
	// answer must tell of each, in removed_resources if it does not
	// exist (Envoy then stops waiting for it: a cluster whose endpoints
	// do not exist warms empty instead of at its initial fetch timeout).
	// Nil when empty.
	names, unanswered map[string]struct{}
	// What the proxy holds: all of held (a snapshot's type, never
	// edited) when held is set, else returned (name -> version).
	held     *typeSet
	returned map[string]string
	// inflight: an answer was sent and no request of the type came
	// since. force: the next chance answers even with nothing changed (a
	// wildcard request that answers no response: Envoy waits for it).
	inflight, force bool
	// warming is the nonce of the last answer of clusters or endpoints,
	// until a request answers that nonce: Envoy warms clusters before the
	// listeners that use them.
	warming string
}

// newDeltaType is the subscription of a type's first request, as
// go-control-plane's stream.NewDeltaSubscription with legacy wildcards.
func newDeltaType(req *discovery.DeltaDiscoveryRequest) *deltaType {
	t := &deltaType{url: typeURL(req.GetTypeUrl()), wildcard: len(req.GetResourceNamesSubscribe()) == 0, legacy: true,
		names: map[string]struct{}{}, returned: req.GetInitialResourceVersions()}
	if t.returned == nil {
		t.returned = map[string]string{}
	}
	t.update(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), false)
	return t
}

// own makes returned what the proxy holds, editable.
func (t *deltaType) own() {
	if t.held != nil {
		m := make(map[string]string, len(t.held.entries))
		for _, e := range t.held.entries {
			m[e.name] = e.version
		}
		t.held, t.returned = nil, m
	}
}

// version returns the version of name the proxy holds.
func (t *deltaType) version(name string) (string, bool) {
	if t.held != nil {
		if e := t.held.find(name); e != nil {
			return e.version, true
		}
		return "", false
	}
	v, ok := t.returned[name]
	return v, ok
}

// update applies a request's subscribe and unsubscribe lists. resend:
// the request is not the stream's first, whose initial_resource_versions
// say what the proxy holds; a later one may subscribe to a name the proxy
// seems to hold, and the protocol has it sent again (the proxy may have
// forgotten it).
func (t *deltaType) update(subscribe, unsubscribe []string, resend bool) {
	if t.legacy {
		if len(subscribe) == 0 {
			return
		}
		t.legacy = false
	}
	for _, n := range subscribe {
		if n == "*" {
			t.wildcard = true
			continue
		}
		// The proxies of an agent subscribe to the same names (every
		// sidecar to its upstreams' clusters): one copy of each.
		n = unique.Make(n).Value()
		t.names[n] = struct{}{}
		if _, held := t.version(n); held {
			if resend {
				t.own()
				t.returned[n] = ""
			}
			continue
		}
		if t.unanswered == nil {
			t.unanswered = map[string]struct{}{}
		}
		t.unanswered[n] = struct{}{}
	}
	for _, n := range unsubscribe {
		if n == "*" {
			t.wildcard = false
			continue
		}
		_, named := t.names[n]
		_, held := t.version(n)
		switch {
		case named && t.wildcard:
			// Still wanted through the wildcard: sent again (Envoy
			// dropped it).
			t.own()
			t.returned[n] = ""
		case held:
			t.own()
			delete(t.returned, n)
		}
		delete(t.names, n)
		delete(t.unanswered, n)
	}
}

// answer is what the proxy lacks of snap's resources of t's type: the
// resources to send (name order), the names to remove (those the proxy
// holds that are gone, and those it subscribed to that do not exist), and
// what the proxy holds once it has them: all of whole when it is set, else
// versions.
func (t *deltaType) answer(snap *Snapshot) (send []*snapEntry, removed []string, versions map[string]string, whole *typeSet) {
	cur := snap.set(t.url)
	if cur == nil {
		cur = &typeSet{} // a type no snapshot has: empty
	}
	for name := range t.unanswered {
		if _, held := t.version(name); !held && cur.find(name) == nil {
			removed = append(removed, name)
		}
	}
	if t.wildcard {
		for i := range cur.entries {
			e := &cur.entries[i]
			if v, ok := t.version(e.name); !ok || v != e.version {
				send = append(send, e)
			}
		}
		if t.held != nil {
			for _, e := range t.held.entries {
				if cur.find(e.name) == nil {
					removed = append(removed, e.name)
				}
			}
		} else {
			for name := range t.returned {
				if cur.find(name) == nil {
					removed = append(removed, name)
				}
			}
		}
		slices.Sort(removed)
		return send, removed, nil, cur
	}
	n := 0
	for name := range t.names {
		prev, held := t.version(name)
		if e := cur.find(name); e != nil {
			if !held || prev != e.version {
				send = append(send, e)
			}
			n++
		} else if held {
			removed = append(removed, name)
		}
	}
	slices.SortFunc(send, func(a, b *snapEntry) int { return strings.Compare(a.name, b.name) })
	slices.Sort(removed)
	if n == len(cur.entries) {
		// The names cover the type: the proxy holds all of it.
		return send, removed, nil, cur
	}
	versions = make(map[string]string, n)
	for name := range t.names {
		if e := cur.find(name); e != nil {
			versions[e.name] = e.version
		}
	}
	return send, removed, versions, nil
}

// deltaADS serves a delta stream on the RPC's goroutine: each request
// updates its type's subscription, and what the node's snapshot has that
// the proxy lacks is sent.
func (s *Server) deltaADS(str discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	// Negative IDs: go-control-plane numbers the state-of-the-world
	// streams from 1, and the two must not meet in s.streams.
	id := -s.deltaIDs.Add(1)
	ds := &deltaStream{str: str, id: id}
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
		ds.mu.Unlock()
		// The stream is over: a flusher's send fails at once.
		ds.fmu.Lock()
		ds.ended = true
		ds.fmu.Unlock()
		ds.flushers.Wait()
		s.onClosed(id, nil)
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

// deltaRequest handles one request of ds.
func (s *Server) deltaRequest(ds *deltaStream, req *discovery.DeltaDiscoveryRequest) error {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.err != nil {
		return ds.err
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		return status.Errorf(codes.InvalidArgument, "type URL is required for ADS")
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
	t := ds.typ(typeURL)
	if t == nil {
		if len(ds.types) >= maxDeltaTypes {
			return status.Errorf(codes.InvalidArgument, "more than %d resource types on one stream", maxDeltaTypes)
		}
		t = newDeltaType(req)
		ds.types = append(ds.types, t)
	} else {
		t.update(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), true)
	}
	// Any request of the type lets its next answer go (go-control-plane
	// opens a watch on each); the one that answers the last answer of
	// clusters or endpoints ends their warming.
	t.inflight = false
	if t.warming != "" && t.warming == req.GetResponseNonce() {
		t.warming = ""
	}
	if t.wildcard && req.GetResponseNonce() == "" {
		t.force = true
	}
	return s.flushLocked(ds)
}

// maxDeltaTypes bounds the resource types one stream may subscribe to
// (Envoy uses five).
const maxDeltaTypes = 16

// typ returns ds's subscription of typeURL, nil when it has none.
func (ds *deltaStream) typ(typeURL string) *deltaType {
	for _, t := range ds.types {
		if t.url == typeURL {
			return t
		}
	}
	return nil
}

// typeURL returns u, as the package's constant when it is one of the types
// of sendOrder: a stream keeps it, and a thousand streams share it.
func typeURL(u string) string {
	if i := slices.Index(sendOrder, u); i >= 0 {
		return sendOrder[i]
	}
	return u
}

// sendOrder is the order in which a stream's answers go out, as Envoy
// expects them: secrets and clusters before the endpoints of the
// clusters, listeners after them, routes last.
var sendOrder = []string{resource.SecretType, resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// flushLocked sends what the node's snapshot has that the proxy lacks, type
// by type in sendOrder, holding listeners and routes while clusters or
// endpoints warm.
func (s *Server) flushLocked(ds *deltaStream) error {
	if ds.nodeID == "" || ds.closed {
		return nil
	}
	rs, err := s.cache.GetSnapshot(ds.nodeID)
	if err != nil {
		return nil // no snapshot yet: SetSnapshot flushes the stream
	}
	snap, ok := rs.(*Snapshot)
	if !ok {
		return fmt.Errorf("xds: snapshot of %s is a %T", ds.nodeID, rs) // SetSnapshot stores only Snapshots
	}
	for _, typ := range sendOrder {
		if t := ds.typ(typ); t != nil {
			if err := s.answerLocked(ds, t, snap); err != nil {
				return err
			}
		}
	}
	for _, t := range ds.types {
		if !slices.Contains(sendOrder, t.url) {
			if err := s.answerLocked(ds, t, snap); err != nil {
				return err
			}
		}
	}
	return nil
}

// clustersWarming reports whether an answer of clusters or endpoints is
// sent and not yet acknowledged.
func (ds *deltaStream) clustersWarming() bool {
	for _, t := range ds.types {
		if t.warming != "" {
			return true
		}
	}
	return false
}

// answerLocked sends t's answer from snap, if it may go and has something
// to say, and records what the proxy then holds.
func (s *Server) answerLocked(ds *deltaStream, t *deltaType, snap *Snapshot) error {
	if t.inflight || ((t.url == resource.ListenerType || t.url == resource.RouteType) && ds.clustersWarming()) {
		return nil
	}
	send, removed, versions, whole := t.answer(snap)
	if len(send) == 0 && len(removed) == 0 && !(t.force && t.wildcard) {
		// Nothing changed for the proxy: what it holds is described by
		// this snapshot as well as by the one it was sent, which need
		// not be kept for it.
		switch {
		case whole != nil && (t.held != nil || t.wildcard):
			t.held, t.returned = whole, nil
		case whole == nil && t.held != nil:
			t.held, t.returned = nil, versions
		}
		t.unanswered = nil
		return nil
	}
	out := &discovery.DeltaDiscoveryResponse{SystemVersionInfo: snap.GetVersion(t.url), TypeUrl: t.url,
		RemovedResources: removed, Resources: make([]*discovery.Resource, 0, len(send))}
	for _, e := range send {
		raw, err := cachev3.MarshalResource(e.res)
		if err != nil {
			return fmt.Errorf("xds: encode %s %s: %w", t.url, e.name, err)
		}
		out.Resources = append(out.Resources, &discovery.Resource{Name: e.name, Version: e.version,
			Resource: &anypb.Any{TypeUrl: t.url, Value: raw}})
	}
	ds.nonce++
	out.Nonce = strconv.FormatInt(ds.nonce, 10)
	s.onDeltaResponse(ds.id, out)
	if err := ds.str.Send(out); err != nil {
		return err
	}
	t.held, t.returned = whole, versions
	t.unanswered = nil
	t.inflight, t.force = true, false
	if t.url == resource.ClusterType || t.url == resource.EndpointType {
		t.warming = out.Nonce
	}
	return nil
}

// flushNode has what a new snapshot of node changes sent to each of its
// delta streams by a goroutine of the stream, which ends once it is sent:
// the caller (a proxy's build) never waits for a proxy that does not read,
// and an idle stream holds no goroutine for it.
func (s *Server) flushNode(node string) {
	s.mu.Lock()
	streams := slices.Clone(s.deltaNodes[node])
	s.mu.Unlock()
	for _, ds := range streams {
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

// flusher sends what ds's proxy lacks, again while snapshots came
// meanwhile. A
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
