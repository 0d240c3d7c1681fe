// Package agent runs a Tribune agent: the process on every machine. It is
// wiring only: it builds the parts (the server or the RPC client to the
// servers, the gossip pool, the local state with its anti-entropy in
// agent/local, the HTTP API in agent/httpapi, DNS, the coordinate and user
// event loops), connects them and stops them. It loads no configuration
// itself (see agent/config).
//
// The agent owns every goroutine it starts; Shutdown stops and waits for them.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/hashicorp/go-uuid"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/agent/httpguard"
	"github.com/tribune-mesh/tribune/agent/leafcert"
	"github.com/tribune-mesh/tribune/agent/local"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/logthrottle"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/telemetry"
	"github.com/tribune-mesh/tribune/tlsconfig"
	"github.com/tribune-mesh/tribune/xds"
)

// Version is Tribune's version, reported by `tribune version` and
// /v1/agent/self.
const Version = "0.1.0"

// Agent is one running agent.
type Agent struct {
	cfg    *config.Config
	logger hclog.Logger
	// intercept is the logger the process gave, when /v1/agent/monitor
	// can tap it; nil otherwise.
	intercept hclog.InterceptLogger
	server    *server.Server
	client    *server.Client
	gossip    *gossip.Pool
	backend   httpapi.Backend
	acls      acl.Resolver
	local     *local.State
	dns       *dnsService
	// xds serves ADS to the local sidecars on ports.grpc (xdsserve.go).
	xds *xdsService
	// xdsDebug is xds's ADS server, for the HTTP API's debug view, which
	// starts before it (nil: ports.grpc off or stopped).
	xdsDebug atomic.Pointer[xds.Server]
	// events keeps the last user events this agent accepted (http_event.go).
	events *eventBuffer
	// caConfig is connect.ca_config; leaves the Connect leaf certificates.
	caConfig  connect.Config
	clusterID string
	leaves    *leafcert.Manager

	// reloadMu serialises reloads; reloader loads the configuration again.
	reloadMu sync.Mutex
	reloader Reloader
	// configServices and configChecks are the IDs registered from
	// configuration files, which a reload may remove.
	configServices map[string]bool
	configChecks   map[string]bool
	started        time.Time

	httpMu    sync.Mutex
	httpSrvs  []*http.Server
	httpAddrs []net.Addr
	// httpsAddrs are the HTTPS listeners' addresses.
	httpsAddrs []net.Addr
	// grpcTLS serves ports.grpc_tls (grpclisten.go); grpcTLSAddrs are
	// its listeners' addresses.
	grpcTLS      *grpc.Server
	grpcTLSAddrs []net.Addr
	// httpViews answers the API's ?cached reads; closed with the HTTP
	// servers.
	httpViews *lazyViews

	// ctx is the parent of every request's context; cancelled on
	// Shutdown so that blocked queries return.
	ctx    context.Context
	cancel context.CancelFunc

	// throttled is the root of every logger the agent hands out; closed
	// last on Shutdown.
	throttled *logthrottle.Logger
	// telemetry holds the metrics sinks and serves /v1/agent/metrics.
	telemetry *telemetry.Telemetry
	// httpErrorLog is net/http's error log, through the throttle.
	httpErrorLog *log.Logger

	shutdownCh chan struct{}
	leaveCh    chan struct{}
	// closeOnceLeave guards closing leaveCh.
	closeOnceLeave sync.Once
	// gossipLeaveOnce makes the graceful gossip leave happen once, from
	// /v1/agent/leave or from Shutdown.
	gossipLeaveOnce sync.Once
	// leaving is set when the agent should leave the pool gracefully on
	// shutdown.
	leaveMu   sync.Mutex
	leaving   bool
	wg        sync.WaitGroup
	closeOnce sync.Once

	// tokens are the agent's own ACL tokens (nil with ACLs disabled).
	tokens *agentTokens
	// tls holds the TLS configurators of the tls block (agent/tls.go).
	tls *agentTLS
	// autoCertReady is closed once the agent has its certificate
	// (auto_encrypt; at once without it).
	autoCertReady chan struct{}

	// wan is the WAN gossip pool (servers only; nil otherwise); dcs a
	// client agent's list of the datacenters its servers know.
	wan *gossip.Pool
	dcs dcList
}

// New creates and starts an agent from a loaded configuration.
func New(cfg *config.Config, logger hclog.Logger) (*Agent, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		cfg.NodeName = host
	}
	// Peers and clients can provoke WARN and ERROR lines (junk gossip
	// packets, bad connections to the server port, TLS handshakes): a line
	// repeated from one source passes once per window, then a count.
	// The monitor endpoint taps the logger the process gave, before the
	// throttle, so that it streams every line.
	intercept, _ := logger.(hclog.InterceptLogger)
	throttled := logthrottle.New(logger, logthrottle.DefaultConfig())
	logger = throttled
	a := &Agent{
		cfg:        cfg,
		logger:     logger.Named("agent"),
		throttled:  throttled,
		acls:       acl.StaticResolver{Authorizer: acl.AllowAll()},
		started:    time.Now(),
		shutdownCh: make(chan struct{}),
		leaveCh:    make(chan struct{}),

		configServices: map[string]bool{},
		configChecks:   map[string]bool{},

		events: newEventBuffer(),
	}
	a.intercept = intercept
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.httpErrorLog = a.logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	started := false
	defer func() {
		if !started {
			defer throttled.Close()
			if a.telemetry != nil {
				defer a.telemetry.Shutdown()
			}
			a.cancel()
			if a.local != nil {
				// Checks from the configuration files already run.
				a.local.StopChecks()
			}
		}
	}()
	if cfg.NodeID == "" {
		id, err := loadOrCreateNodeID(cfg)
		if err != nil {
			return nil, err
		}
		cfg.NodeID = id
	}
	// Metrics first: Raft and memberlist emit to the process's sink from
	// their start.
	tel, err := telemetry.New(telemetry.Config{
		MetricsPrefix:           cfg.Telemetry.MetricsPrefix,
		DisableHostname:         cfg.Telemetry.DisableHostname,
		PrometheusRetentionTime: cfg.Telemetry.PrometheusRetentionTime,
	})
	if err != nil {
		return nil, err
	}
	a.telemetry = tel
	caConfig, clusterID, err := connectCAConfig(cfg)
	if err != nil {
		return nil, err
	}
	a.caConfig, a.clusterID = caConfig, clusterID
	if err := a.loadTokens(); err != nil {
		return nil, err
	}
	if a.tls, err = newAgentTLS(cfg); err != nil {
		return nil, err
	}
	if err := a.startGossip(); err != nil {
		return nil, err
	}
	if err := a.startWAN(); err != nil {
		a.stopGossip(false)
		return nil, err
	}
	if cfg.Server {
		srv, err := server.New(a.serverConfig(logger))
		if err != nil {
			a.stopWAN(false)
			a.stopGossip(false)
			return nil, fmt.Errorf("start server: %w", err)
		}
		a.server = srv
		a.backend = srv
	} else {
		a.client = server.NewClient(a.clientConfig())
		a.backend = a.client
	}
	if cfg.TranslateWANAddrs {
		a.backend = wanTranslator{Backend: a.backend, dc: cfg.Datacenter}
	}
	if err := a.setupACLs(); err != nil {
		a.stopCore()
		return nil, err
	}
	a.local = a.newLocalState()
	a.leaves = a.newLeafCerts()
	if err := a.loadConfigDefinitions(); err != nil {
		a.stopCore()
		return nil, err
	}
	// The services and checks an earlier run registered through the API,
	// with their tokens; the config files' win on the same ID.
	if err := a.local.LoadPersisted(); err != nil {
		a.stopCore()
		return nil, err
	}
	if err := a.startHTTP(); err != nil {
		a.stopCore()
		return nil, err
	}
	if err := a.startDNS(); err != nil {
		a.stopHTTP(context.Background())
		a.stopCore()
		return nil, err
	}
	if err := a.startXDS(); err != nil {
		a.stopDNS()
		a.stopHTTP(context.Background())
		a.stopCore()
		return nil, err
	}
	// After xDS: the gRPC TLS port serves it too.
	if err := a.startGRPCTLS(); err != nil {
		a.stopXDS()
		a.stopDNS()
		a.stopHTTP(context.Background())
		a.stopCore()
		return nil, err
	}
	err = a.startJoins()
	if err == nil {
		err = a.startWANJoins()
	}
	if err != nil {
		a.stopGRPCTLS()
		a.stopXDS()
		a.stopDNS()
		a.stopHTTP(context.Background())
		a.stopCore()
		return nil, err
	}
	a.runACLs()
	a.startAutoEncrypt()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		// With auto_encrypt, the servers take nothing before the
		// agent has its certificate.
		if a.waitAutoCert() {
			a.local.Run(a.ctx)
		}
	}()
	if a.gossip != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.syncCoordinates(a.shutdownCh)
		}()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.runUserEvents(a.shutdownCh)
		}()
	}
	started = true
	return a, nil
}

// newLocalState builds the agent's own services and checks, synced to the
// catalog through the backend.
func (a *Agent) newLocalState() *local.State {
	node := local.Node{
		ID: a.cfg.NodeID, Name: a.cfg.NodeName, Datacenter: a.cfg.Datacenter, Address: a.advertiseHost(),
		Meta: a.nodeMeta(), TaggedAddresses: a.taggedAddresses(),
	}
	if a.cfg.Server {
		node.LeaderService = server.ServerServiceName
	}
	var syncToken local.SyncToken
	var withToken func(context.Context, string) context.Context
	var resolveToken func(string) (acl.Authorizer, error)
	if a.cfg.ACL.Enabled {
		syncToken = a.syncToken
		// A service or check registered with a token is synced with it.
		withToken, resolveToken = server.WithToken, a.acls.Resolve
	}
	return local.New(local.Config{
		Node: node,
		// Anti-entropy writes with the agent's own token, on a server
		// agent too (its server checks in-process calls that carry one).
		Backend:                 agentTokenBackend{inner: a.backend, token: a.agentToken},
		SyncToken:               syncToken,
		WithToken:               withToken,
		ResolveToken:            resolveToken,
		DataDir:                 a.cfg.DataDir,
		Clock:                   clock.New(),
		Logger:                  a.logger,
		Members:                 a.lanMembers,
		CheckOutputMaxSize:      a.cfg.CheckOutputMaxSize,
		EnableScriptChecks:      a.cfg.EnableScriptChecks,
		EnableLocalScriptChecks: a.cfg.EnableLocalScriptChecks,
		SidecarMinPort:          a.cfg.Ports.SidecarMinPort,
		ExposeMinPort:           a.cfg.Ports.ExposeMinPort,
		ExposeMaxPort:           a.cfg.Ports.ExposeMaxPort,
		SidecarMaxPort:          a.cfg.Ports.SidecarMaxPort,
	})
}

// lanMembers counts the LAN gossip members, this agent included.
func (a *Agent) lanMembers() int {
	if a.gossip == nil {
		return 1
	}
	return max(len(a.gossip.Members()), 1)
}

// loadOrCreateNodeID returns the node ID kept in <data_dir>/node-id, creating
// it the first time, so a restarted agent keeps its identity.
func loadOrCreateNodeID(cfg *config.Config) (string, error) {
	if cfg.DataDir == "" {
		return uuid.GenerateUUID()
	}
	path := cfg.DataDir + "/node-id"
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return string(b), nil
	}
	id, err := uuid.GenerateUUID()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(id), 0o600); err != nil {
		return "", fmt.Errorf("write node-id: %w", err)
	}
	return id, nil
}

func (a *Agent) startHTTP() error {
	httpsOn := a.cfg.Ports.HTTPS > 0 && a.tls.https != nil
	if a.cfg.Ports.HTTP < 0 && !httpsOn {
		return nil
	}
	views := &lazyViews{reader: a.backend, logger: a.logger.Named("http.viewcache")}
	a.httpMu.Lock()
	a.httpViews = views
	a.httpMu.Unlock()
	handler, err := a.httpHandler(views)
	if err != nil {
		return err
	}
	type iface struct {
		hosts []string
		port  int
		tlsc  *tlsconfig.Configurator
	}
	var ifaces []iface
	if a.cfg.Ports.HTTP >= 0 {
		ifaces = append(ifaces, iface{orDefaultHosts(a.cfg.Addresses.HTTP, a.cfg.ClientAddrs), a.cfg.Ports.HTTP, nil})
	}
	if httpsOn {
		ifaces = append(ifaces, iface{orDefaultHosts(a.cfg.Addresses.HTTPS, a.cfg.ClientAddrs), a.cfg.Ports.HTTPS, a.tls.https})
	}
	for _, i := range ifaces {
		for _, host := range i.hosts {
			if err := a.serveHTTP(handler, host, i.port, i.tlsc); err != nil {
				a.stopHTTP(context.Background())
				return err
			}
		}
	}
	return nil
}

// orDefaultHosts returns the interface's own addresses, else client_addr,
// else 127.0.0.1.
func orDefaultHosts(own, client []string) []string {
	if len(own) > 0 {
		return own
	}
	if len(client) > 0 {
		return client
	}
	return []string{"127.0.0.1"}
}

// serveHTTP serves the API on host:port, over TLS when tlsc is set.
func (a *Agent) serveHTTP(handler http.Handler, host string, port int, tlsc *tlsconfig.Configurator) error {
	limits := a.cfg.Limits
	kind := "HTTP"
	if tlsc != nil {
		kind = "HTTPS"
	}
	rawLn, addr, err := listenHTTP(host, port)
	if err != nil {
		return fmt.Errorf("%s listener on %s: %w", kind, addr, err)
	}
	// One source holds at most http_max_conns_per_client connections;
	// one more is answered 429 and closed (on HTTPS, closed: a
	// plaintext answer would be noise to a TLS client).
	refuse := httpguard.Refuse429
	if tlsc != nil {
		refuse = func(net.Conn) {}
	}
	ln := httpguard.LimitListener(rawLn, limits.HTTPMaxConnsPerClient, refuse)
	if tlsc == nil {
		// Parked blocking queries hand their connections back for
		// keep-alive (httpapi/blocking.go).
		ln = httpguard.Reinjectable(ln, limits.HTTPIdleTimeout)
	}
	if tlsc != nil {
		// net/http bounds the handshake by ReadHeaderTimeout, and answers
		// a plaintext request with 400 "Client sent an HTTP request to
		// an HTTPS server".
		ln = tls.NewListener(ln, tlsc.IncomingConfig())
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: limits.HTTPReadHeaderTimeout,
		// The body's deadline is httpguard.BodyTimeout's: a
		// ReadTimeout here would cancel blocking queries.
		IdleTimeout:    limits.HTTPIdleTimeout,
		MaxHeaderBytes: 1 << 20,
		BaseContext:    func(net.Listener) context.Context { return a.ctx },
		ErrorLog:       a.httpErrorLog,
	}
	a.httpMu.Lock()
	a.httpSrvs = append(a.httpSrvs, srv)
	if tlsc != nil {
		a.httpsAddrs = append(a.httpsAddrs, ln.Addr())
	} else {
		a.httpAddrs = append(a.httpAddrs, ln.Addr())
	}
	a.httpMu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error(kind+" server stopped", "addr", ln.Addr(), "error", err)
		}
	}()
	a.logger.Info(kind+" API listening", "addr", ln.Addr().String())
	return nil
}

// httpHandler returns the HTTP API behind its guard: configured response
// headers, writes only from allow_write_http_from, no cross-site browser
// writes, unknown datacenters refused, ?filter= bounded, and a deadline on
// reading request bodies.
func (a *Agent) httpHandler(views *lazyViews) (http.Handler, error) {
	allow, err := httpguard.ParsePrefixes(a.cfg.HTTP.AllowWriteHTTPFrom)
	if err != nil {
		return nil, fmt.Errorf("http_config: %w", err)
	}
	api := httpapi.New(httpapi.Parts{
		Config: a.cfg, Version: Version, ACL: a.acls, Backend: a.backend, Local: a.local,
		Gossip: a.gossip, Events: a.events, Control: apiControl{a: a}, Metrics: a.telemetry,
		CA: a.connectCA(), Leaves: a.leaves, Cache: views,
		WAN: a.wan, Federation: a.federationPart(),
		XDS: a.xdsDebug.Load,
	})
	guard := httpguard.New(httpguard.Config{
		Datacenter:      a.cfg.Datacenter,
		KnownDatacenter: a.knownDatacenter,
		AllowWriteFrom:  allow,
		AllowedOrigins:  a.cfg.HTTP.AllowedOrigins,
		ResponseHeaders: a.cfg.HTTP.ResponseHeaders,
	})
	return guard.Wrap(httpguard.BodyTimeout(api, a.cfg.Limits.HTTPReadTimeout)), nil
}

// listenHTTP listens on host:port, or on the Unix socket of a
// "unix:///path" address (a stale socket left at path is removed first).
func listenHTTP(host string, port int) (net.Listener, string, error) {
	if path, ok := strings.CutPrefix(host, "unix://"); ok {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path)
		}
		ln, err := net.Listen("unix", path)
		return ln, host, err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	return ln, addr, err
}

func (a *Agent) stopHTTP(ctx context.Context) {
	a.httpMu.Lock()
	srvs, views := a.httpSrvs, a.httpViews
	a.httpSrvs, a.httpViews = nil, nil
	a.httpMu.Unlock()
	for _, s := range srvs {
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
		}
	}
	if views != nil {
		views.close()
	}
}

// HTTPAddr returns the address of the first HTTP listener ("host:port").
func (a *Agent) HTTPAddr() string {
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	if len(a.httpAddrs) == 0 {
		return ""
	}
	return a.httpAddrs[0].String()
}

// HTTPSAddr returns the address of the first HTTPS listener ("host:port"),
// empty when HTTPS is off.
func (a *Agent) HTTPSAddr() string {
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	if len(a.httpsAddrs) == 0 {
		return ""
	}
	return a.httpsAddrs[0].String()
}

// Server returns the agent's server, nil on a client agent.
func (a *Agent) Server() *server.Server { return a.server }

// LeaveCh is closed when the agent was asked to leave through the API.
func (a *Agent) LeaveCh() <-chan struct{} { return a.leaveCh }

// WaitForLeader blocks until the agent's backend knows a leader.
func (a *Agent) WaitForLeader(ctx context.Context) error {
	if a.server != nil {
		return a.server.WaitForLeader(ctx)
	}
	for {
		leader, _, err := a.backend.Status(ctx)
		if err == nil && leader != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w", server.ErrNoLeader)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Shutdown stops the agent: the HTTP API (letting requests in flight end
// within ctx), the local sync, and the server.
func (a *Agent) Shutdown(ctx context.Context) error {
	var err error
	a.closeOnce.Do(func() {
		close(a.shutdownCh)
		a.cancel()
		a.stopHTTP(ctx)
		a.stopGRPCTLS()
		a.stopDNS()
		a.stopXDS()
		a.wg.Wait()
		a.leaves.Close()
		err = a.stopCore()
		a.telemetry.Shutdown()
		a.throttled.Close()
	})
	return err
}
