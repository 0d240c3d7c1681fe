// Package proxy is Tribune's built-in L4 service-mesh proxy, the engine of
// "tribune connect proxy" (Consul's "consul connect proxy"), for
// development and for applications that cannot run Envoy.
//
// A Proxy holds one service's identity: it follows that service's leaf
// certificate and the CA roots from the local agent's HTTP API with
// blocking queries, so a renewed leaf or rotated roots serve the next
// connection without a restart. Its public listener accepts mTLS
// connections whose client certificate chains to the roots, asks the agent
// whether the client's SPIFFE identity may connect (intentions), and
// splices the allowed ones to the local application. For each upstream it
// listens on a local port and splices every connection to a passing
// instance of the upstream service (round robin over /v1/health/connect),
// over mTLS that checks the instance presents that service's identity.
//
// It is the network edge of the mesh's identity: it talks to an agent
// only through the HTTP API (the official client), never to agent or
// server packages, and owns every goroutine it starts (Run returns after
// all of them have stopped).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/listen"
	"github.com/tribune-mesh/tribune/logthrottle"
)

// Connections to the agent's HTTP API beyond the watches: at most
// maxAuthorizeConns authorizations at once, maxIdleAgentConns kept idle.
const (
	maxAuthorizeConns = 64
	maxIdleAgentConns = 16
)

// Defaults of Config.
const (
	DefaultMaxConns            = 1024
	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultLocalConnectTimeout = time.Second
	DefaultConnectTimeout      = 10 * time.Second
	DefaultIdleTimeout         = time.Hour
	DefaultDrainTimeout        = 10 * time.Second
	// DefaultBindAddress is where upstream listeners bind by default.
	DefaultBindAddress = "127.0.0.1"
)

// Upstream is one service the local application reaches through the
// proxy.
type Upstream struct {
	// DestinationName is the upstream service.
	DestinationName string
	// Datacenter is the upstream's datacenter; "" is the agent's.
	Datacenter string
	// LocalBindAddress and LocalBindPort are where the proxy listens for
	// the application's connections (DefaultBindAddress when empty).
	LocalBindAddress string
	LocalBindPort    int
	// ConnectTimeout bounds the TCP dial of one instance
	// (DefaultConnectTimeout when 0).
	ConnectTimeout time.Duration
	// PreparedQuery: DestinationName names a prepared query, executed
	// with connect=true every QueryRefresh; its instances present the
	// SPIFFE ID of the service (and datacenter) the execution names.
	PreparedQuery bool
}

// QueryRefresh is how often a prepared-query upstream's query is executed
// again (executions cannot be waited on as blocking queries).
const QueryRefresh = 5 * time.Second

// Addr is the upstream's local listen address.
func (u Upstream) Addr() string {
	return net.JoinHostPort(u.LocalBindAddress, strconv.Itoa(u.LocalBindPort))
}

// Config says what a Proxy serves. Zero durations and counts take the
// defaults above (WithDefaults).
type Config struct {
	// API is how to reach the local agent (address, token, TLS). New
	// copies it.
	API *api.Config
	// Service is the service the proxy represents: its leaf certificate
	// is the proxy's identity both ways.
	Service string
	// PublicListener is the "host:port" of the inbound mTLS listener;
	// "" runs no inbound side.
	PublicListener string
	// LocalServiceAddress is the "host:port" of the application inbound
	// connections are spliced to; required with PublicListener.
	LocalServiceAddress string
	// Upstreams are the outbound listeners.
	Upstreams []Upstream

	// MaxConns bounds the connections open at once, inbound and
	// outbound together; a connection over the bound is closed at once.
	MaxConns int
	// HandshakeTimeout bounds an inbound connection's TLS handshake and
	// authorization, and an outbound one's handshake.
	HandshakeTimeout time.Duration
	// LocalConnectTimeout bounds the dial of the local application.
	LocalConnectTimeout time.Duration
	// IdleTimeout closes a connection on which no byte moved either way
	// for that long.
	IdleTimeout time.Duration
	// DrainTimeout is how long Run lets open connections finish after
	// its context ends before it closes them.
	DrainTimeout time.Duration

	// Logger receives the proxy's logs (a null logger when nil).
	Logger hclog.Logger
}

// WithDefaults returns c with every zero knob at its default.
func (c Config) WithDefaults() Config {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	setDur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setDur(&c.LocalConnectTimeout, DefaultLocalConnectTimeout)
	setDur(&c.IdleTimeout, DefaultIdleTimeout)
	setDur(&c.DrainTimeout, DefaultDrainTimeout)
	ups := make([]Upstream, len(c.Upstreams))
	for i, u := range c.Upstreams {
		if u.LocalBindAddress == "" {
			u.LocalBindAddress = DefaultBindAddress
		}
		setDur(&u.ConnectTimeout, DefaultConnectTimeout)
		ups[i] = u
	}
	c.Upstreams = ups
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Validate checks a configuration (after WithDefaults).
func (c Config) Validate() error {
	if c.API == nil {
		return errors.New("no agent API configuration")
	}
	if c.Service == "" {
		return errors.New("no service: the proxy needs the name of the service it represents")
	}
	if c.PublicListener == "" && len(c.Upstreams) == 0 {
		return errors.New("nothing to proxy: no public listener and no upstream")
	}
	if c.PublicListener != "" {
		if err := checkHostPort(c.PublicListener, true); err != nil {
			return fmt.Errorf("public listener: %w", err)
		}
		if err := checkHostPort(c.LocalServiceAddress, false); err != nil {
			return fmt.Errorf("local service address: %w", err)
		}
	}
	seen := map[string]string{}
	for _, u := range c.Upstreams {
		if u.DestinationName == "" {
			return errors.New("an upstream has no destination name")
		}
		if u.LocalBindPort <= 0 || u.LocalBindPort > 65535 {
			return fmt.Errorf("upstream %s: local bind port %d out of 1-65535", u.DestinationName, u.LocalBindPort)
		}
		if prev, dup := seen[u.Addr()]; dup {
			return fmt.Errorf("upstreams %s and %s both listen on %s", prev, u.DestinationName, u.Addr())
		}
		seen[u.Addr()] = u.DestinationName
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handshake timeout", c.HandshakeTimeout}, {"local connect timeout", c.LocalConnectTimeout},
		{"idle timeout", c.IdleTimeout}, {"drain timeout", c.DrainTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("%s %s is negative", d.name, d.v)
		}
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("max connections %d is negative", c.MaxConns)
	}
	return nil
}

// checkHostPort checks "host:port" (port 0 allowed when listen is true:
// any free port).
func checkHostPort(addr string, listen bool) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 || (port == 0 && !listen) {
		return fmt.Errorf("%q: bad port", addr)
	}
	return nil
}

// Stats counts what a Proxy did since it started.
type Stats struct {
	// Active is the connections open now (inbound and outbound).
	Active int64
	// InboundAuthorized and InboundDenied count inbound connections that
	// completed the handshake, by the agent's decision (an agent that did
	// not answer denies).
	InboundAuthorized, InboundDenied int64
	// InboundHandshakeFailed counts inbound handshakes that failed (no
	// or bad client certificate, timeout).
	InboundHandshakeFailed int64
	// OutboundConnected and OutboundFailed count outbound connections
	// that reached an upstream instance, or found none that would
	// complete a handshake.
	OutboundConnected, OutboundFailed int64
	// OverLimit counts connections closed because MaxConns were open.
	OverLimit int64
}

// Proxy is a running built-in proxy. New binds its listeners; Run serves
// them.
type Proxy struct {
	cfg    Config
	logger hclog.Logger
	// connLog logs what a peer can provoke on every connection (refused
	// handshakes, denials), throttled per message and source host.
	connLog *logthrottle.Logger
	// watch is the client of the blocking queries; authz answers each
	// inbound connection's authorization, its wait bounded by the
	// handshake timeout.
	watch, authz *api.Client
	// transport is both clients' connection pool, emptied when Run ends.
	transport *http.Transport
	certs     *certs

	public    net.Listener
	upstreams []*upstream

	slots chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]struct{}

	closeOnce sync.Once

	active, authorized, denied, hsFailed, outOK, outFailed, overLimit atomic.Int64
}

// New checks cfg, makes the agent clients and binds every listener (so a
// port in use is an error here). Call Run to serve, or Close to release the
// listeners without serving.
func New(cfg Config) (*Proxy, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy configuration: %w", err)
	}
	transport := api.DefaultConfig().Transport
	// Each watch holds a connection to the agent; authorizations share the
	// rest. The bound keeps a burst of handshakes under the agent's
	// per-client connection limit (200 by default): the excess waits for
	// a connection, within the handshake timeout.
	transport.MaxConnsPerHost = maxAuthorizeConns + 2 + len(cfg.Upstreams)
	transport.MaxIdleConnsPerHost = maxIdleAgentConns
	watch, authz, err := agentClients(cfg.API, transport, cfg.HandshakeTimeout)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, logger: cfg.Logger, connLog: logthrottle.New(cfg.Logger, logthrottle.DefaultConfig()),
		watch: watch, authz: authz, transport: transport,
		certs: newCerts(watch, cfg.Service, cfg.Logger),
		slots: make(chan struct{}, cfg.MaxConns), conns: map[net.Conn]struct{}{}}
	if cfg.PublicListener != "" {
		ln, err := net.Listen("tcp", cfg.PublicListener)
		if err != nil {
			return nil, fmt.Errorf("public listener: %w", err)
		}
		p.public = listen.Retry(ln, nil, cfg.Logger)
	}
	for _, u := range cfg.Upstreams {
		ln, err := net.Listen("tcp", u.Addr())
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("upstream %s: %w", u.DestinationName, err)
		}
		p.upstreams = append(p.upstreams, &upstream{cfg: u, ln: listen.Retry(ln, nil, cfg.Logger), logger: cfg.Logger})
	}
	return p, nil
}

// agentClients returns two clients of the agent sharing transport, a pool
// of keep-alive connections (a long-running proxy reuses its connections to
// the agent): one for blocking queries (no overall timeout), one whose
// requests time out after timeout.
func agentClients(cfg *api.Config, transport *http.Transport, timeout time.Duration) (*api.Client, *api.Client, error) {
	c := *cfg
	c.HttpClient = nil
	c.Transport = transport
	watch, err := api.NewClient(&c)
	if err != nil {
		return nil, nil, fmt.Errorf("agent client: %w", err)
	}
	a := c // as NewClient completed it: scheme, address, token
	a.HttpClient = &http.Client{Transport: c.HttpClient.Transport, Timeout: timeout}
	authz, err := api.NewClient(&a)
	if err != nil {
		return nil, nil, fmt.Errorf("agent client: %w", err)
	}
	return watch, authz, nil
}

// PublicAddr is the public listener's address (nil without one).
func (p *Proxy) PublicAddr() net.Addr {
	if p.public == nil {
		return nil
	}
	return p.public.Addr()
}

// UpstreamAddr is the listen address of the upstream to service (nil when
// there is none).
func (p *Proxy) UpstreamAddr(service string) net.Addr {
	for _, u := range p.upstreams {
		if u.cfg.DestinationName == service {
			return u.ln.Addr()
		}
	}
	return nil
}

// Ready is closed once the proxy holds its leaf certificate and the roots
// (until then every handshake fails).
func (p *Proxy) Ready() <-chan struct{} { return p.certs.ready }

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{Active: p.active.Load(), InboundAuthorized: p.authorized.Load(), InboundDenied: p.denied.Load(),
		InboundHandshakeFailed: p.hsFailed.Load(), OutboundConnected: p.outOK.Load(), OutboundFailed: p.outFailed.Load(),
		OverLimit: p.overLimit.Load()}
}

// Close closes the listeners. Run calls it when its context ends.
func (p *Proxy) Close() error {
	var errs []error
	p.closeOnce.Do(func() {
		if p.public != nil {
			errs = append(errs, p.public.Close())
		}
		for _, u := range p.upstreams {
			errs = append(errs, u.ln.Close())
		}
	})
	return errors.Join(errs...)
}

// Run serves until ctx ends, then closes the listeners, lets open
// connections finish for DrainTimeout, closes the rest and returns once
// every goroutine it started has stopped. Call it once.
func (p *Proxy) Run(ctx context.Context) error {
	// ctx ends the accept loops and the handshakes and dials under way;
	// the watches end after the drain, with watchCtx.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	var watches, accepts, conns sync.WaitGroup
	watches.Add(1)
	go func() {
		defer watches.Done()
		p.certs.run(watchCtx)
	}()
	for _, u := range p.upstreams {
		watches.Add(1)
		go func() {
			defer watches.Done()
			u.watch(watchCtx, p.watch)
		}()
	}
	if p.public != nil {
		accepts.Add(1)
		go func() {
			defer accepts.Done()
			p.acceptLoop(ctx, p.public, &conns, p.serveInbound)
		}()
	}
	for _, u := range p.upstreams {
		accepts.Add(1)
		go func() {
			defer accepts.Done()
			p.acceptLoop(ctx, u.ln, &conns, func(ctx context.Context, c net.Conn) { p.serveUpstream(ctx, u, c) })
		}()
	}
	if p.public != nil {
		p.logger.Info("public listener", "service", p.cfg.Service, "addr", p.public.Addr().String(),
			"local_service", p.cfg.LocalServiceAddress)
	}
	for _, u := range p.upstreams {
		p.logger.Info("upstream listener", "upstream", u.cfg.DestinationName, "addr", u.ln.Addr().String())
	}

	<-ctx.Done()
	p.Close()
	accepts.Wait()
	p.drain(&conns)
	stopWatch()
	watches.Wait()
	p.transport.CloseIdleConnections()
	p.connLog.Close()
	return nil
}

// drain waits up to DrainTimeout for open connections, then closes them
// and waits for their goroutines.
func (p *Proxy) drain(conns *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		conns.Wait()
		close(done)
	}()
	t := time.NewTimer(p.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	p.mu.Lock()
	n := len(p.conns)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.logger.Info("drain timeout: closed open connections", "connections", n)
	<-done
}

// acceptLoop accepts on ln until it is closed, handing each connection to
// serve in a goroutine counted in conns. Connections over MaxConns are
// closed at once.
func (p *Proxy) acceptLoop(ctx context.Context, ln net.Listener, conns *sync.WaitGroup, serve func(context.Context, net.Conn)) {
	for {
		// The listener retries failed Accepts itself (listen.Retry): an
		// error here is its closing.
		c, err := ln.Accept()
		if err != nil {
			return
		}
		select {
		case p.slots <- struct{}{}:
		default:
			p.overLimit.Add(1)
			p.connLog.Warn("connection refused: too many open", "addr", ln.Addr().String(), "max", p.cfg.MaxConns)
			c.Close()
			continue
		}
		p.track(c, true)
		p.active.Add(1)
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() {
				p.track(c, false)
				p.active.Add(-1)
				<-p.slots
			}()
			serve(ctx, c)
		}()
	}
}

// track adds c to (or removes it from) the connections drain closes.
func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

// serveInbound completes the mTLS handshake of an inbound connection, has
// the agent authorize the client's identity, and splices an allowed
// connection to the local application.
func (p *Proxy) serveInbound(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	conn := tls.Server(raw, p.certs.serverConfig())
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		p.hsFailed.Add(1)
		if errors.Is(err, io.EOF) {
			// Closed before a word of TLS: a TCP health check, a port scan.
			p.logger.Debug("inbound connection closed before the handshake", "remote", raw.RemoteAddr().String())
			return
		}
		p.connLog.Warn("inbound handshake failed", "remote", raw.RemoteAddr().String(), "error", err)
		return
	}
	peer := conn.ConnectionState().PeerCertificates[0]
	uri := peer.URIs[0].String()
	res, err := p.authz.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{
		Target: p.cfg.Service, ClientCertURI: uri, ClientCertSerial: connect.HexString(peer.SerialNumber.Bytes())})
	if err != nil || !res.Authorized {
		p.denied.Add(1)
		reason := ""
		if err != nil {
			reason = "authorize: " + err.Error()
		} else {
			reason = res.Reason
		}
		p.connLog.Warn("inbound connection denied", "remote", raw.RemoteAddr().String(), "client", uri, "reason", reason)
		return
	}
	p.authorized.Add(1)
	cancel()
	dctx, dcancel := context.WithTimeout(ctx, p.cfg.LocalConnectTimeout)
	app, err := (&net.Dialer{}).DialContext(dctx, "tcp", p.cfg.LocalServiceAddress)
	dcancel()
	if err != nil {
		p.connLog.Warn("local application unreachable", "addr", p.cfg.LocalServiceAddress, "error", err)
		return
	}
	splice(conn, app, p.cfg.IdleTimeout)
}

// serveUpstream splices an application's connection to an instance of the
// upstream.
func (p *Proxy) serveUpstream(ctx context.Context, u *upstream, app net.Conn) {
	defer app.Close()
	remote, err := u.dial(ctx, p.certs, p.cfg.HandshakeTimeout)
	if err != nil {
		p.outFailed.Add(1)
		p.connLog.Warn("upstream connection failed", "upstream", u.cfg.DestinationName, "error", err)
		return
	}
	p.outOK.Add(1)
	splice(app, remote, p.cfg.IdleTimeout)
}
