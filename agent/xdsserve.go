package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/xds"
)

// Limits of the xDS port.
const (
	// xdsMaxStreams bounds the concurrent streams of one connection.
	xdsMaxStreams = 1024
	// xdsMaxRecvBytes bounds one request (Envoy's are small).
	xdsMaxRecvBytes = 4 << 20
	// xdsACLPoll is how often the streams' tokens are checked again when
	// the ACL index moved (a revoked token ends its streams).
	xdsACLPoll = 250 * time.Millisecond
)

// xdsService serves ADS on ports.grpc to the sidecar proxies registered on
// this agent: each stream names its proxy's service ID as node.id; the
// proxy's configuration is built from views the agent keeps fresh with
// blocking queries (its upstreams' mesh instances, the intentions of its
// service, the CA roots) and its leaf certificate, and pushed on change.
// Proxies of one token share the views.
type xdsService struct {
	a    *Agent
	srv  *xds.Server
	grpc *grpc.Server
	// views are started with the first proxy, so an agent without
	// proxies runs no view goroutines for xDS.
	views *lazyViews

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	proxies map[string]*proxyWatch
	streams map[*xdsStream]struct{}
	// subs are the shared watches of the views proxies read.
	subs  map[viewID]*viewSub
	addrs []net.Addr
	// revocable is set when streams' tokens are checked again as the ACLs
	// change (recheckTokens runs): a stream may then be ended under its
	// handler.
	revocable bool

	// ixnMu guards ixns: the intentions decoded from each view result
	// (results are shared and immutable), so that the proxies of a
	// change decode them once.
	ixnMu sync.Mutex
	ixns  map[*catalog.ReadResponse]map[string][]*catalog.Intention

	// chains shares decoded config entries and compiled discovery
	// chains between proxies (xdschain.go).
	chains chainCache

	// buildMu guards the queue of proxies to build and the count of
	// builders draining it (wake).
	buildMu  sync.Mutex
	queue    []*proxyWatch
	builders int
}

// maxBuilders bounds the goroutines that build proxies' configurations: a
// change that reaches every proxy (an intention, a shared upstream, the
// first connection of every sidecar) queues them, and past this many
// concurrent builds the rest wait their turn rather than each holding its
// build's inputs, snapshot and encoded response at the same time. In
// bench-xds (1,000 proxies on 2 cores) a bound of 32 gave the same RSS and
// a lower p50 but a higher p99 than 1,024 (which is not worse than one
// goroutine per proxy): the bound is for larger bursts, not the
// 1,000-proxy case.
const maxBuilders = 1024

// proxyWatch keeps one proxy's snapshot current, without a goroutine of
// its own while nothing changes: a change of one of its inputs (a view, its
// leaf certificate, the local services, a proxyless client's names) wakes
// it (wake), and the goroutine that rebuilds it ends when it is current.
type proxyWatch struct {
	node   string
	ctx    context.Context
	cancel context.CancelFunc
	read   func(context.Context) (*proxyInputs, error)
	ps     *proxyState
	// done is closed once the watch is stopped and no build runs.
	done chan struct{}
	// proxyless is set for a proxyless gRPC client (xdsproxyless.go).
	proxyless *proxylessNames

	// mu guards the fields below.
	mu sync.Mutex
	// building is set while a goroutine rebuilds the proxy; dirty when
	// an input changed during that build, which then builds again.
	building, dirty, stopped bool
	backoff                  time.Duration
	retry                    *time.Timer
	// leaf is the leaf certificate followed, leafCancel ends that.
	leaf       *leafDep
	leafCancel func()
}

// startXDS starts the xDS server when ports.grpc is on.
func (a *Agent) startXDS() error {
	if a.cfg.Ports.GRPC <= 0 {
		return nil
	}
	x := &xdsService{
		a:       a,
		views:   &lazyViews{reader: a.backend, logger: a.logger.Named("xds.viewcache")},
		proxies: map[string]*proxyWatch{},
		streams: map[*xdsStream]struct{}{},
		subs:    map[viewID]*viewSub{},
		ixns:    map[*catalog.ReadResponse]map[string][]*catalog.Intention{},
	}
	// Set before the first stream: intercept reads it unlocked.
	resolver, revocable := a.acls.(*acl.CachingResolver)
	x.revocable = revocable
	x.ctx, x.cancel = context.WithCancel(a.ctx)
	x.srv = xds.NewServerWithHooks(x.ctx, a.logger.Named("xds"), xds.Hooks{
		NodeConnected:    x.nodeConnected,
		NodeDisconnected: x.nodeDisconnected,
		ListenersNamed:   x.listenersNamed,
	})
	x.grpc = grpc.NewServer(x.serverOptions()...)
	x.srv.Register(x.grpc)
	addrs := a.cfg.Addresses.GRPC
	if len(addrs) == 0 {
		addrs = a.cfg.ClientAddrs
	}
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1"}
	}
	for _, host := range addrs {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(a.cfg.Ports.GRPC)))
		if err != nil {
			x.stop()
			return fmt.Errorf("gRPC (xDS) listener on %s: %w", host, err)
		}
		x.serve(ln)
	}
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		x.followLocal()
	}()
	if revocable {
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			x.recheckTokens(resolver)
		}()
	}
	a.xds = x
	a.xdsDebug.Store(x.srv)
	return nil
}

// serverOptions are the gRPC server options of every port that serves ADS.
func (x *xdsService) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(xdsMaxStreams),
		grpc.MaxRecvMsgSize(xdsMaxRecvBytes),
		// One connection per proxy: small read buffers (requests are
		// small) and write buffers released between writes (gRPC's default) keep the
		// memory per proxy down. Write buffers are 8 KiB, not gRPC's
		// 32: when a change reaches a thousand proxies at once, each
		// connection holds one while it writes (a larger response takes
		// a few more writes).
		grpc.ReadBufferSize(8 << 10),
		grpc.WriteBufferSize(8 << 10),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.StreamInterceptor(x.intercept),
		grpc.WaitForHandlers(true),
	}
}

// serve serves ADS on ln until the agent stops. It is the seam for the
// grpc_tls port: a TLS listener (tls.NewListener with "h2" in NextProtos)
// is served by the same server.
func (x *xdsService) serve(ln net.Listener) {
	x.mu.Lock()
	x.addrs = append(x.addrs, ln.Addr())
	x.mu.Unlock()
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		if err := x.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			x.a.logger.Error("gRPC (xDS) server stopped", "addr", ln.Addr(), "error", err)
		}
	}()
	x.a.logger.Info("gRPC (xDS) listening", "addr", ln.Addr().String())
}

// stop ends every stream and proxy loop and waits for them.
func (x *xdsService) stop() {
	x.cancel()
	x.grpc.Stop()
	x.mu.Lock()
	watches := make([]*proxyWatch, 0, len(x.proxies))
	for id, w := range x.proxies {
		watches = append(watches, w)
		delete(x.proxies, id)
	}
	x.mu.Unlock()
	for _, w := range watches {
		x.stopWatch(w)
		<-w.done
	}
	x.wg.Wait()
	x.views.close()
}

// stopXDS stops the xDS server; safe when it never started.
func (a *Agent) stopXDS() {
	if a.xds != nil {
		a.xdsDebug.Store(nil)
		a.xds.stop()
		a.xds = nil
	}
}

// XDSAddr returns the address of the first xDS (gRPC) listener, "" when
// ports.grpc is off.
func (a *Agent) XDSAddr() string {
	if a.xds == nil {
		return ""
	}
	a.xds.mu.Lock()
	defer a.xds.mu.Unlock()
	if len(a.xds.addrs) == 0 {
		return ""
	}
	return a.xds.addrs[0].String()
}

// XDSServer returns the agent's ADS server (nil when ports.grpc is off), for
// tests and the debug views: its ACK/NACK state and counters.
func (a *Agent) XDSServer() *xds.Server {
	if a.xds == nil {
		return nil
	}
	return a.xds.srv
}

// ---- authorization of streams ----

// tokenKey carries a stream's ACL token in its context.
type tokenKey struct{}

// xdsStream is an ADS stream whose first request is authorized before the
// ADS server sees it, and that ends when its token stops granting
// service:write on the proxied service.
type xdsStream struct {
	grpc.ServerStream
	x      *xdsService
	ctx    context.Context
	cancel context.CancelCauseFunc
	token  string

	mu   sync.Mutex
	node string // set once authorized
}

// Context is the stream's context, ended when its token is revoked.
func (s *xdsStream) Context() context.Context { return s.ctx }

// RecvMsg authorizes the node the first request names.
func (s *xdsStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	var node string
	switch r := m.(type) {
	case *discovery.DiscoveryRequest:
		node = r.GetNode().GetId()
	case *discovery.DeltaDiscoveryRequest:
		node = r.GetNode().GetId()
	}
	s.mu.Lock()
	first := s.node == ""
	s.mu.Unlock()
	if !first || node == "" {
		return nil
	}
	if err := s.x.authorize(s.token, node); err != nil {
		// go-control-plane ends a stream whose receive fails without
		// its error: the interceptor returns it.
		s.cancel(err)
		return err
	}
	s.mu.Lock()
	s.node = node
	s.mu.Unlock()
	return nil
}

// intercept wraps every stream of the server in an xdsStream.
func (x *xdsService) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	token := ""
	if md, ok := metadata.FromIncomingContext(ss.Context()); ok {
		if v := md.Get("x-consul-token"); len(v) > 0 {
			token = v[0]
		}
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(ss.Context(), tokenKey{}, token))
	s := &xdsStream{ServerStream: ss, x: x, ctx: ctx, cancel: cancel, token: token}
	x.mu.Lock()
	x.streams[s] = struct{}{}
	x.mu.Unlock()
	defer func() {
		x.mu.Lock()
		delete(x.streams, s)
		x.mu.Unlock()
		cancel(nil)
	}()
	if !x.revocable {
		// No token can be revoked under the stream: the handler runs on
		// the RPC's goroutine (one goroutine per proxy less).
		return refusal(ctx, handler(srv, s))
	}
	// go-control-plane's streams end only when a receive fails, and a
	// receive waits for the proxy: to end a stream whose token was
	// revoked, the RPC returns while the handler, owned by the wait
	// group, ends behind it (its receive fails once the RPC is over).
	done := make(chan error, 1)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		done <- handler(srv, s)
	}()
	select {
	case err := <-done:
		return refusal(ctx, err)
	case <-ctx.Done():
		if err := refusal(ctx, nil); err != nil {
			return err // refused or revoked
		}
		return <-done // the client went away: the handler ends now
	}
}

// refusal returns the status a stream was refused or revoked with (the
// cause of its context), else err.
func refusal(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		if _, ok := status.FromError(cause); ok {
			return cause
		}
	}
	return err
}

// isProxy reports whether node is a connect-proxy registered on this agent;
// any other node is a proxyless gRPC client.
func (x *xdsService) isProxy(node string) (*catalog.Service, bool) {
	svc := x.a.local.Service(node)
	return svc, svc != nil && svc.Kind == catalog.ServiceKindConnectProxy && svc.Proxy != nil
}

// authorize checks that token grants service:write on the service node
// proxies when node is a proxy registered on this agent, and that it is a
// valid token for a proxyless client (which is served only the services
// its token may read).
func (x *xdsService) authorize(token, node string) error {
	svc, proxy := x.isProxy(node)
	authz, err := x.a.acls.Resolve(token)
	if err != nil {
		if errors.Is(err, acl.ErrNotFound) {
			return status.Error(codes.Unauthenticated, "ACL not found")
		}
		return status.Errorf(codes.Unavailable, "resolve token: %v", err)
	}
	if !proxy {
		return nil
	}
	if authz.ServiceWrite(svc.Proxy.DestinationServiceName) != acl.Allow {
		return status.Errorf(codes.PermissionDenied, "Permission denied: token lacks service:write on %q", svc.Proxy.DestinationServiceName)
	}
	return nil
}

// recheckTokens checks every authorized stream's token again whenever the
// ACL index moves: a stream whose token was deleted or lost its policy
// ends with PermissionDenied.
func (x *xdsService) recheckTokens(r *acl.CachingResolver) {
	t := time.NewTicker(xdsACLPoll)
	defer t.Stop()
	last := r.Index()
	for {
		select {
		case <-x.ctx.Done():
			return
		case <-t.C:
		}
		idx := r.Index()
		if idx == last {
			continue
		}
		last = idx
		x.mu.Lock()
		streams := make([]*xdsStream, 0, len(x.streams))
		for s := range x.streams {
			streams = append(streams, s)
		}
		x.mu.Unlock()
		for _, s := range streams {
			s.mu.Lock()
			node := s.node
			s.mu.Unlock()
			if node == "" {
				continue
			}
			if err := x.authorize(s.token, node); err != nil && status.Code(err) != codes.Unavailable {
				x.a.logger.Named("xds").Warn("ending a proxy's stream: its token no longer grants access", "proxy", node, "error", err)
				s.cancel(status.Error(codes.PermissionDenied, status.Convert(err).Message()))
			}
		}
	}
}

// ---- proxies' configuration ----

// nodeConnected starts the proxy's watch on its first stream.
func (x *xdsService) nodeConnected(ctx context.Context, node string) error {
	_, proxy := x.isProxy(node)
	token, _ := ctx.Value(tokenKey{}).(string)
	x.mu.Lock()
	if x.proxies[node] != nil || x.ctx.Err() != nil {
		x.mu.Unlock()
		return nil
	}
	w := &proxyWatch{node: node, done: make(chan struct{}), backoff: xdsMinBackoff}
	w.ctx, w.cancel = context.WithCancel(x.ctx)
	w.ps = &proxyState{wake: func() { x.wake(w) }}
	w.read = func(ctx context.Context) (*proxyInputs, error) { return x.readProxy(ctx, node, token) }
	if !proxy {
		w.proxyless = newProxylessNames()
		w.read = func(ctx context.Context) (*proxyInputs, error) { return x.readProxyless(ctx, node, token, w.proxyless) }
	}
	x.proxies[node] = w
	x.mu.Unlock()
	x.wake(w)
	return nil
}

// nodeDisconnected stops the proxy's watch when its last stream ends.
func (x *xdsService) nodeDisconnected(node string) {
	x.mu.Lock()
	w := x.proxies[node]
	delete(x.proxies, node)
	x.mu.Unlock()
	if w == nil {
		return
	}
	x.stopWatch(w)
	// This runs on the closing stream's goroutine: wait for the build
	// elsewhere, then forget the snapshot unless the proxy came back.
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		<-w.done
		x.mu.Lock()
		back := x.proxies[node] != nil
		x.mu.Unlock()
		if !back {
			x.srv.Remove(node)
		}
	}()
}

// Backoff of a proxy whose configuration cannot be built.
const (
	xdsMinBackoff = 100 * time.Millisecond
	xdsMaxBackoff = 10 * time.Second
)

// wake has the proxy rebuilt: by a goroutine started now, or by the one
// building it, once more. A stopped watch is not rebuilt.
func (x *xdsService) wake(w *proxyWatch) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	if w.building {
		w.dirty = true
		w.mu.Unlock()
		return
	}
	w.building = true
	w.mu.Unlock()
	// The proxy is queued for a builder (started when fewer than
	// maxBuilders run); stopWatch's callers wait for w.done, closed only
	// once its build ran (a stopped watch's build ends at once).
	x.buildMu.Lock()
	x.queue = append(x.queue, w)
	start := x.builders < maxBuilders
	if start {
		x.builders++
	}
	x.buildMu.Unlock()
	if start {
		x.wg.Add(1)
		go x.builder()
	}
}

// builder builds queued proxies until the queue is empty.
func (x *xdsService) builder() {
	defer x.wg.Done()
	for {
		x.buildMu.Lock()
		if len(x.queue) == 0 {
			x.builders--
			x.queue = nil // let go of a burst's backing array
			x.buildMu.Unlock()
			return
		}
		w := x.queue[0]
		x.queue[0] = nil
		x.queue = x.queue[1:]
		x.buildMu.Unlock()
		x.runBuilds(w)
		// A builder never blocks while proxies are queued: yield, so
		// that the send the build started (a stream's flusher, ready to
		// run) goes out now rather than after every queued build.
		runtime.Gosched()
	}
}

// runBuilds builds the proxy until no input changed during the last build.
func (x *xdsService) runBuilds(w *proxyWatch) {
	for {
		x.build(w)
		w.mu.Lock()
		switch {
		case w.stopped:
			w.building = false
			w.mu.Unlock()
			x.release(w)
			return
		case !w.dirty:
			w.building = false
			w.mu.Unlock()
			return
		}
		w.dirty = false
		w.mu.Unlock()
	}
}

// stopWatch stops w: no build starts after it, and w.done is closed once
// the one running (if any) ends.
func (x *xdsService) stopWatch(w *proxyWatch) {
	w.cancel()
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	if w.retry != nil {
		w.retry.Stop()
	}
	building := w.building
	w.mu.Unlock()
	if !building {
		x.release(w)
	}
}

// release drops what a stopped watch follows and closes its done.
func (x *xdsService) release(w *proxyWatch) {
	x.setDeps(w.ps, nil)
	x.followLeaf(w, nil)
	close(w.done)
}

// build reads the proxy's inputs, hands its new snapshot to its streams and
// follows what it read; when that fails, it retries after a backoff.
func (x *xdsService) build(w *proxyWatch) {
	in, err := w.read(w.ctx)
	switch {
	case err != nil:
	case in.proxy != nil:
		_, err = x.srv.Update(w.ctx, in.proxy)
	case in.proxyless != nil:
		var snap *xds.Snapshot
		if snap, err = xds.BuildProxyless(in.proxyless); err == nil {
			err = x.srv.SetSnapshot(w.ctx, w.node, snap)
		}
	}
	if err != nil {
		if w.ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		d := w.backoff
		w.backoff = min(2*d, xdsMaxBackoff)
		if !w.stopped {
			if w.retry != nil {
				w.retry.Stop()
			}
			w.retry = time.AfterFunc(d, func() { x.wake(w) })
		}
		w.mu.Unlock()
		x.a.logger.Named("xds").Warn("cannot build the proxy's configuration; retrying", "proxy", w.node, "error", err, "retry_in", d)
		return
	}
	w.mu.Lock()
	w.backoff = xdsMinBackoff
	if in.retryRemote && !w.stopped {
		if w.retry != nil {
			w.retry.Stop()
		}
		w.retry = time.AfterFunc(xdsRemoteRetry, func() { x.wake(w) })
	}
	w.mu.Unlock()
	x.setDeps(w.ps, in.deps)
	x.followLeaf(w, in.leaf)
}

// leafDep is the leaf certificate a build read.
type leafDep struct {
	service string
	index   uint64
}

// followLeaf has w woken when its leaf certificate changes from the one of
// dep (nil: follow none), through the leaf manager's notifications.
func (x *xdsService) followLeaf(w *proxyWatch, dep *leafDep) {
	w.mu.Lock()
	cur, cancel := w.leaf, w.leafCancel
	same := cur != nil && dep != nil && cur.service == dep.service
	if !same {
		w.leaf, w.leafCancel = nil, nil
	}
	w.mu.Unlock()
	if !same && cancel != nil {
		cancel()
	}
	if dep == nil {
		return
	}
	if !same {
		c, ok := x.a.leaves.Notify(dep.service, w.ps.wake)
		if !ok {
			// No leaf entry (cannot happen after a Get): build again.
			w.ps.wake()
			return
		}
		w.mu.Lock()
		w.leaf, w.leafCancel = dep, c
		w.mu.Unlock()
	} else {
		w.mu.Lock()
		w.leaf = dep
		w.mu.Unlock()
	}
	// A change between the build's read and the subscription.
	select {
	case <-x.a.leaves.Changed(dep.service, dep.index):
		w.ps.wake()
	default:
	}
}

// followLocal wakes every proxy at each change of the local services (a
// proxy's registration is its configuration), until the server stops.
func (x *xdsService) followLocal() {
	for {
		ch := x.a.local.Changed()
		select {
		case <-x.ctx.Done():
			return
		case <-ch:
		}
		x.mu.Lock()
		ws := make([]*proxyWatch, 0, len(x.proxies))
		for _, w := range x.proxies {
			ws = append(ws, w)
		}
		x.mu.Unlock()
		for _, w := range ws {
			x.wake(w)
		}
	}
}

// proxyInputs is what one build of a proxy read.
type proxyInputs struct {
	proxy *xds.Proxy
	// proxyless is set instead of proxy for a proxyless client.
	proxyless *xds.Proxyless
	// deps are the views read, at the index read (xdsfanout.go).
	deps []viewDep
	// leaf is the proxy's leaf certificate (nil: none).
	leaf *leafDep
	// retryRemote is set when a read of another datacenter failed: the
	// proxy is rebuilt after xdsRemoteRetry to read it again.
	retryRemote bool
}

// readProxy reads everything the proxy's configuration is built from.
func (x *xdsService) readProxy(ctx context.Context, node, token string) (*proxyInputs, error) {
	in := &proxyInputs{}
	svc := x.a.local.Service(node)
	if svc == nil || svc.Kind != catalog.ServiceKindConnectProxy || svc.Proxy == nil {
		// Deregistered: the proxy keeps what it has until it goes.
		return in, nil
	}
	// The views read: the roots, the intentions, one per chain kind and
	// (at least) one per upstream.
	in.deps = make([]viewDep, 0, 2+len(chainKinds)+len(svc.Proxy.Upstreams))
	opts := catalog.QueryOptions{Token: token}
	target := svc.Proxy.DestinationServiceName
	roots, err := x.view(ctx, in, &catalog.ReadRequest{Op: catalog.ReadCARoots, Options: opts})
	if err != nil {
		return nil, fmt.Errorf("CA roots: %w", err)
	}
	if roots.CAConfig == nil || roots.CAConfig.ClusterID == "" || len(roots.CARoots) == 0 {
		return in, nil // the CA is not initialised yet: wait for it
	}
	leaf, err := x.a.leaves.Get(ctx, target, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("leaf certificate of %s: %w", target, err)
	}
	in.leaf = &leafDep{service: target, index: leaf.ModifyIndex}
	ixns, byName, err := x.intentions(ctx, in, opts, target)
	if err != nil {
		return nil, err
	}
	p := &xds.Proxy{
		ID: node, Service: target, Datacenter: x.a.cfg.Datacenter,
		TrustDomain:   connect.TrustDomain(roots.CAConfig.ClusterID),
		PublicAddress: publicBindAddress(svc), PublicPort: svc.Port,
		LocalAppAddress: svc.Proxy.LocalServiceAddress, LocalAppPort: svc.Proxy.LocalServicePort,
		LeafCert: leaf.CertPEM, LeafKey: leaf.PrivateKeyPEM,
		Intentions:   ixns,
		DefaultAllow: !(x.a.cfg.ACL.Enabled && x.a.cfg.ACL.DefaultPolicy == "deny"),
	}
	for _, r := range roots.CARoots {
		p.Roots = append(p.Roots, r.RootCert)
	}
	chains, err := x.chainEntries(ctx, in, opts)
	if err != nil {
		return nil, err
	}
	p.Protocol = serviceProtocol(svc, chains)
	for _, e := range svc.Proxy.Expose.Paths {
		p.Expose = append(p.Expose, xds.ExposePath{Path: e.Path, LocalPathPort: e.LocalPathPort, ListenerPort: e.ListenerPort,
			Protocol: strings.ToLower(e.Protocol)})
	}
	if svc.Proxy.Expose.Checks {
		// The checks of its service it serves (agent/local/expose.go).
		for _, e := range x.a.local.ExposedChecks(svc.Proxy.DestinationServiceID) {
			p.Expose = append(p.Expose, xds.ExposePath{Path: e.Path, LocalPathPort: e.LocalPathPort, ListenerPort: e.ListenerPort, Protocol: e.Protocol})
		}
	}
	mode, tp := proxyMode(svc, chains)
	transparent := mode == catalog.ProxyModeTransparent
	for i := range svc.Proxy.Upstreams {
		u := &svc.Proxy.Upstreams[i]
		if u.LocalBindPort == 0 && u.LocalBindSocketPath == "" &&
			!(transparent && u.DestinationType != catalog.UpstreamDestTypePreparedQuery && (u.Datacenter == "" || u.Datacenter == p.Datacenter)) {
			// No listener, and not a local service a transparent
			// proxy reaches at its virtual IP.
			continue
		}
		var up *xds.Upstream
		var err error
		if u.DestinationType == catalog.UpstreamDestTypePreparedQuery {
			up, err = x.readQueryUpstream(ctx, in, opts, u)
		} else {
			up, err = x.readUpstream(ctx, in, opts, chains, u, p.TrustDomain)
		}
		if err != nil {
			return nil, err
		}
		if up != nil {
			// Validated at registration (catalog.SocketMode).
			mode, _ := catalog.SocketMode(u.LocalBindSocketMode)
			up.LocalBindSocketPath, up.LocalBindSocketMode = u.LocalBindSocketPath, mode
			p.Upstreams = append(p.Upstreams, *up)
		}
	}
	if transparent {
		if err := x.readTransparent(ctx, in, opts, chains, tp, byName, p); err != nil {
			return nil, err
		}
	}
	in.proxy = p
	return in, nil
}

// maxDecodedIntentions bounds the decoded-intentions cache; past it, the
// cache starts over.
const maxDecodedIntentions = 64

// intentions returns the intentions of target and of the wildcard, and
// all of them by destination (shared: not to be modified). They are read
// from one view of every service-intentions entry, shared by every proxy
// of the agent whatever its service (one blocking query, not one per
// proxied service), and recorded as a dependency of in that wakes the
// proxy only when the entries of those two names change (xdsfanout.go);
// a caller that uses the others widens it (widenIntentions).
func (x *xdsService) intentions(ctx context.Context, in *proxyInputs, opts catalog.QueryOptions, target string) ([]*catalog.Intention, map[string][]*catalog.Intention, error) {
	names := []string{target, catalog.IntentionWildcard}
	req := &catalog.ReadRequest{Op: catalog.ReadConfigEntries, Key: httpapi.KindServiceIntentions, Options: opts}
	resp, err := x.views.Get(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("intentions: %w", err)
	}
	in.deps = append(in.deps, viewDep{req: req, idx: resp.Meta.Index, names: names})
	byName, err := x.intentionsOf(resp)
	if err != nil {
		return nil, nil, err
	}
	return append(append([]*catalog.Intention(nil), byName[target]...), byName[catalog.IntentionWildcard]...), byName, nil
}

// widenIntentions makes any change of the intentions wake the proxy in
// reads for (a transparent proxy's upstreams follow every service's).
func widenIntentions(in *proxyInputs) {
	for i := range in.deps {
		if r := in.deps[i].req; r.Op == catalog.ReadConfigEntries && r.Key == httpapi.KindServiceIntentions {
			in.deps[i].names = nil
		}
	}
}

// intentionsOf returns the intentions of a service-intentions list view
// result by destination, decoded once per result (results are shared and
// immutable, so the proxies of a change decode them once).
func (x *xdsService) intentionsOf(resp *catalog.ReadResponse) (map[string][]*catalog.Intention, error) {
	x.ixnMu.Lock()
	got, ok := x.ixns[resp]
	x.ixnMu.Unlock()
	if ok {
		return got, nil
	}
	got = make(map[string][]*catalog.Intention, len(resp.ConfigEntries))
	for _, e := range resp.ConfigEntries {
		ixns, err := httpapi.EntryIntentions(e)
		if err != nil {
			return nil, fmt.Errorf("intentions of %s: %w", e.Name, err)
		}
		got[e.Name] = ixns
	}
	x.ixnMu.Lock()
	if len(x.ixns) >= maxDecodedIntentions {
		clear(x.ixns)
	}
	x.ixns[resp] = got
	x.ixnMu.Unlock()
	return got, nil
}

// meshEndpoints are the instances of a health read as xDS endpoints: the
// service's address (the node's when it has none), healthy unless a check
// is critical or in maintenance.
func meshEndpoints(instances []*catalog.CheckServiceNode) []xds.Endpoint {
	out := make([]xds.Endpoint, 0, len(instances))
	for _, in := range instances {
		addr := in.Service.Address
		if addr == "" && in.Node != nil {
			addr = in.Node.Address
		}
		st := catalog.AggregatedStatus(in.Checks)
		out = append(out, xds.Endpoint{Address: addr, Port: in.Service.Port,
			Healthy: st == catalog.HealthPassing || st == catalog.HealthWarning})
	}
	return out
}

// publicBindAddress is where a sidecar accepts mTLS: Proxy.Config's
// bind_address, else every address, as Consul binds it.
func publicBindAddress(svc *catalog.Service) string {
	if a, ok := svc.Proxy.Config["bind_address"].(string); ok && a != "" {
		return a
	}
	return "0.0.0.0"
}
