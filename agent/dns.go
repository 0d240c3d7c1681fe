package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/dnsserver"
	"github.com/tribune-mesh/tribune/server"
)

// dnsShutdownTimeout bounds how long stopping DNS waits for queries in
// flight.
const dnsShutdownTimeout = 5 * time.Second

// dnsService is an agent's running DNS interface: the listeners, the views
// they answer from, and the context of the queries in flight.
type dnsService struct {
	srv    *dnsserver.Server
	views  *viewcache.Cache
	cancel context.CancelFunc
	once   sync.Once
	// countDone is closed when the cached-answers counting loop ended.
	countDone chan struct{}
}

// cachedAnswersInterval is how often the answers served from the DNS packet
// cache are added to the dns.cached_answers counter.
const cachedAnswersInterval = time.Second

// countCachedAnswers adds the handler's cache answers to the
// dns.cached_answers counter every interval until ctx ends, then once more.
func countCachedAnswers(ctx context.Context, h *dnsserver.Handler, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(cachedAnswersInterval)
	defer t.Stop()
	flush := func() {
		if n := h.TakeCachedAnswers(); n > 0 {
			metrics.IncrCounter([]string{"dns", "cached_answers"}, float32(n))
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case <-t.C:
			flush()
		}
	}
}

// stop aborts the queries in flight, closes the listeners (waiting for the
// queries to end) and then stops every view loop.
func (d *dnsService) stop(logger hclog.Logger) {
	d.once.Do(func() {
		d.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), dnsShutdownTimeout)
		defer cancel()
		if err := d.srv.Shutdown(ctx); err != nil {
			logger.Warn("DNS shutdown", "error", err)
		}
		d.views.Close()
		<-d.countDone
	})
}

// startDNS starts the DNS interface on every DNS address (addresses.dns,
// else client_addr) at ports.dns over UDP and TCP, answering from views the
// agent keeps fresh with blocking queries. A negative port disables it.
// stopDNS stops it.
func (a *Agent) startDNS() error {
	cfg := a.cfg
	if cfg.Ports.DNS < 0 {
		return nil
	}
	hosts := cfg.Addresses.DNS
	if len(hosts) == 0 {
		hosts = cfg.ClientAddrs
	}
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	addrs := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if strings.HasPrefix(h, "unix://") {
			return fmt.Errorf("DNS address %q: unix sockets are not supported for DNS", h)
		}
		addrs = append(addrs, net.JoinHostPort(h, strconv.Itoa(cfg.Ports.DNS)))
	}

	views := viewcache.New(a.backend, viewcache.Config{Logger: a.logger.Named("viewcache")})
	src := &dnsSource{
		dc:      cfg.Datacenter,
		views:   views,
		knownDC: a.knownDatacenter,
		datacenters: func(ctx context.Context) ([]string, error) {
			return a.federationPart().Datacenters(ctx)
		},
		opts: catalog.QueryOptions{
			AllowStale:       cfg.DNS.AllowStale,
			MaxStaleDuration: cfg.DNS.MaxStale,
			Token:            cfg.ACL.Tokens.Default,
		},
	}
	ctx, cancel := context.WithCancel(a.ctx)
	h, err := dnsserver.New(dnsserver.Config{
		Domain:                      cfg.Domain,
		AltDomain:                   cfg.AltDomain,
		Datacenter:                  cfg.Datacenter,
		NodeName:                    cfg.NodeName,
		NodeTTL:                     cfg.DNS.NodeTTL,
		ServiceTTL:                  cfg.DNS.ServiceTTL,
		UDPAnswerLimit:              cfg.DNS.UDPAnswerLimit,
		ARecordLimit:                cfg.DNS.ARecordLimit,
		EnableTruncate:              cfg.DNS.EnableTruncate,
		OnlyPassing:                 cfg.DNS.OnlyPassing,
		DisableCompression:          cfg.DNS.DisableCompression,
		EnableAdditionalNodeMetaTXT: cfg.DNS.EnableAdditionalNodeMetaTXT,
		SOA: dnsserver.SOAConfig{
			Refresh: cfg.DNS.SOA.Refresh,
			Retry:   cfg.DNS.SOA.Retry,
			Expire:  cfg.DNS.SOA.Expire,
			MinTTL:  cfg.DNS.SOA.MinTTL,
		},
		Recursors:        cfg.Recursors,
		RecursorTimeout:  cfg.DNS.RecursorTimeout,
		RecursorStrategy: cfg.DNS.RecursorStrategy,
		// DNS answers with the agent's default token (acl.tokens.default,
		// as /v1/agent/token/default last set it), else the anonymous
		// token's rights: "" resolves to exactly that.
		Authorize: func() (acl.Authorizer, error) { return a.acls.Resolve("") },
		Context:   ctx,
		Logger:    a.logger.Named("dns"),
		// Prepared queries (<query>.query.<domain>): agent/query_dns.go.
		PreparedQuery: src.preparedQuery,
		// Mesh instances (<service>.connect.<domain>).
		ConnectLookup: src.connectLookup,
		// Virtual IPs (<service>.virtual.<domain>), for transparent
		// proxies' apps.
		VirtualIP: src.virtualIP,
	}, src)
	if err != nil {
		cancel()
		views.Close()
		return err
	}
	srv, err := dnsserver.Listen(h, addrs, a.logger.Named("dns"))
	if err != nil {
		cancel()
		views.Close()
		return err
	}
	countDone := make(chan struct{})
	go countCachedAnswers(ctx, h, countDone)
	a.dns = &dnsService{srv: srv, views: views, cancel: cancel, countDone: countDone}
	return nil
}

// stopDNS stops the DNS interface and waits for its goroutines: queries in
// flight are aborted, the listeners closed, the view loops stopped. It is
// safe to call more than once, and when DNS never started.
func (a *Agent) stopDNS() {
	if a.dns != nil {
		a.dns.stop(a.logger)
		a.dns = nil
	}
}

// dnsSource is the DNS handler's view of the catalog: every read is served
// from a view, so a query costs no server round trip once its view exists.
// Names that are not in the catalog are answered from the lists of services
// and nodes, so that queries for random names start no views.
type dnsSource struct {
	dc    string
	views *viewcache.Cache
	opts  catalog.QueryOptions
	// knownDC reports whether another datacenter can be asked; remote
	// holds the source of each one asked, whose views read there
	// (bounded by the datacenters known).
	knownDC func(dc string) bool
	// datacenters lists the known datacenters, nearest first (prepared
	// query failover); nil without federation.
	datacenters func(ctx context.Context) ([]string, error)
	remoteMu    sync.Mutex
	remote      map[string]*dnsSource

	// services and nodes index the last lists read, rebuilt when the
	// list's response changes; queries only load them.
	services atomic.Pointer[serviceIndex]
	nodes    atomic.Pointer[nodeIndex]
}

// serviceIndex is the lower-cased names of the services of one list.
type serviceIndex struct {
	from  *catalog.ReadResponse
	names map[string]bool
}

// nodeIndex is the nodes of one list by lower-cased name.
type nodeIndex struct {
	from   *catalog.ReadResponse
	byName map[string]*catalog.Node
}

var _ dnsserver.Source = (*dnsSource)(nil)

func (s *dnsSource) get(ctx context.Context, op catalog.ReadOp, name string) (*catalog.ReadResponse, error) {
	resp, err := s.views.Get(ctx, &catalog.ReadRequest{Op: op, Name: name, Options: s.opts})
	if errors.Is(err, server.ErrNoPathToDC) {
		// A client agent learns only from its servers that a
		// datacenter is unknown.
		return nil, fmt.Errorf("%w: %q", dnsserver.ErrUnknownDatacenter, s.dc)
	}
	return resp, err
}

// forDC returns the source of datacenter dc: this one, or one whose views
// read in that datacenter through the servers (federation).
func (s *dnsSource) forDC(dc string) (*dnsSource, error) {
	if dc == s.dc {
		return s, nil
	}
	if s.knownDC == nil || !s.knownDC(dc) {
		return nil, fmt.Errorf("%w: %q", dnsserver.ErrUnknownDatacenter, dc)
	}
	s.remoteMu.Lock()
	defer s.remoteMu.Unlock()
	if r, ok := s.remote[dc]; ok {
		return r, nil
	}
	if s.remote == nil {
		s.remote = map[string]*dnsSource{}
	}
	opts := s.opts
	opts.Datacenter = dc
	r := &dnsSource{dc: dc, views: s.views, opts: opts}
	s.remote[dc] = r
	return r, nil
}

// ServiceHealth implements dnsserver.Source.
func (s *dnsSource) ServiceHealth(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
	s, err := s.forDC(dc)
	if err != nil {
		return nil, err
	}
	service = strings.ToLower(service)
	if ok, err := s.known(ctx, service); !ok || err != nil {
		return nil, err
	}
	resp, err := s.get(ctx, catalog.ReadHealthService, service)
	if err != nil {
		return nil, err
	}
	return resp.Instances, nil
}

// known reports whether the lower-cased service is in the list of services.
func (s *dnsSource) known(ctx context.Context, service string) (bool, error) {
	list, err := s.get(ctx, catalog.ReadServices, "")
	if err != nil {
		return false, err
	}
	idx := s.services.Load()
	if idx == nil || idx.from != list {
		// Concurrent queries may build the same index; the last one
		// stored wins, and all are equal.
		idx = &serviceIndex{from: list, names: make(map[string]bool, len(list.Services))}
		for name := range list.Services {
			idx.names[strings.ToLower(name)] = true
		}
		s.services.Store(idx)
	}
	return idx.names[service], nil
}

// connectLookup answers <service>.connect.<domain>: the service's proxies
// and Connect-native instances, from a view. Only a service of the catalog
// starts one (a proxy's destination is a registered service).
func (s *dnsSource) connectLookup(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error) {
	s, err := s.forDC(dc)
	if err != nil {
		return nil, err
	}
	service = strings.ToLower(service)
	if ok, err := s.known(ctx, service); !ok || err != nil {
		return nil, err
	}
	resp, err := s.get(ctx, catalog.ReadHealthConnect, service)
	if err != nil {
		return nil, err
	}
	return resp.Instances, nil
}

// virtualIP answers <service>.virtual.<domain>: the service's virtual IP,
// from one view of them all (a view per name asked would let any query
// start one).
func (s *dnsSource) virtualIP(ctx context.Context, dc, service string) (net.IP, error) {
	s, err := s.forDC(dc)
	if err != nil {
		return nil, err
	}
	resp, err := s.get(ctx, catalog.ReadServiceVirtualIPs, "")
	if err != nil {
		return nil, err
	}
	for _, v := range resp.VirtualIPs {
		if strings.EqualFold(v.Service, service) {
			return net.ParseIP(v.IP()), nil
		}
	}
	return nil, nil
}

// Node implements dnsserver.Source.
func (s *dnsSource) Node(ctx context.Context, dc, name string) (*catalog.Node, error) {
	s, err := s.forDC(dc)
	if err != nil {
		return nil, err
	}
	list, err := s.get(ctx, catalog.ReadNodes, "")
	if err != nil {
		return nil, err
	}
	idx := s.nodes.Load()
	if idx == nil || idx.from != list {
		idx = &nodeIndex{from: list, byName: make(map[string]*catalog.Node, len(list.Nodes))}
		for _, n := range list.Nodes {
			idx.byName[strings.ToLower(n.Node)] = n
		}
		s.nodes.Store(idx)
	}
	return idx.byName[strings.ToLower(name)], nil
}

// Nodes implements dnsserver.Source.
func (s *dnsSource) Nodes(ctx context.Context, dc string) ([]*catalog.Node, error) {
	s, err := s.forDC(dc)
	if err != nil {
		return nil, err
	}
	list, err := s.get(ctx, catalog.ReadNodes, "")
	if err != nil {
		return nil, err
	}
	return list.Nodes, nil
}
