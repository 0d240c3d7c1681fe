package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/federation"
	"github.com/tribune-mesh/tribune/gossip"
)

// The WAN pool: servers (only servers) of every datacenter gossip on
// ports.serf_wan as "<node>.<dc>", so that each server's router
// (federation.Router) knows the other datacenters and their servers.

// startWAN starts this server's WAN member; it joins nobody yet.
func (a *Agent) startWAN() error {
	cfg := a.cfg
	if !cfg.Server || cfg.Ports.SerfWAN < 0 {
		return nil
	}
	var keys [][]byte
	if cfg.Encrypt != "" {
		k, err := cfg.EncryptKey()
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		keys = [][]byte{k}
	}
	bind := cfg.BindAddr
	if bind == "" {
		bind = "0.0.0.0"
	}
	advertise := cfg.AdvertiseAddrWAN
	if advertise == "" {
		advertise = a.advertiseHost()
	}
	p, err := gossip.New(&gossip.Config{
		NodeName: federation.MemberName(cfg.NodeName, cfg.Datacenter), BindAddr: bind, BindPort: cfg.Ports.SerfWAN,
		AdvertiseAddr: advertise, AdvertisePort: cfg.Ports.SerfWAN,
		Tags: a.gossipTags(), Keys: keys, WAN: true, Fast: cfg.DevMode || cfg.Performance.RaftMultiplier == 1,
		ReconnectTimeout: cfg.ReconnectTimeoutWAN,
		Logger:           a.logger.Named("wan"),
	})
	if err != nil {
		return fmt.Errorf("WAN gossip: %w", err)
	}
	a.wan = p
	return nil
}

// stopWAN leaves the WAN pool gracefully when leave is set, then stops it.
func (a *Agent) stopWAN(leave bool) {
	if a.wan == nil {
		return
	}
	if leave {
		if err := a.wan.Leave(5 * time.Second); err != nil {
			a.logger.Warn("leave WAN", "error", err)
		}
	}
	if err := a.wan.Shutdown(); err != nil {
		a.logger.Warn("stop WAN gossip", "error", err)
	}
}

// startWANJoins joins start_join_wan now (failing when none answers) and
// retries retry_join_wan in the background.
func (a *Agent) startWANJoins() error {
	if a.wan == nil {
		return nil
	}
	if len(a.cfg.StartJoinWAN) > 0 {
		if _, err := a.wan.Join(a.cfg.StartJoinWAN); err != nil {
			return fmt.Errorf("start_join_wan: %w", err)
		}
	}
	a.retryJoin(a.wan, "the WAN", "retry_join_wan", a.cfg.RetryJoinWAN, a.cfg.RetryIntervalWAN, a.cfg.RetryMaxWAN)
	return nil
}

// knownDatacenter reports whether a ?dc= (or a DNS name's datacenter) may
// be served: a server knows the datacenters of the WAN pool; a client agent
// asks its servers, at most every datacentersTTL, so that random names
// cost neither an RPC each nor a view each.
func (a *Agent) knownDatacenter(dc string) bool {
	if dc == a.cfg.Datacenter {
		return true
	}
	if a.server != nil {
		r := a.server.Router()
		return r != nil && r.Known(dc)
	}
	for _, d := range a.clientDatacenters() {
		if d == dc {
			return true
		}
	}
	return false
}

// datacentersTTL is how long a client agent trusts the list of datacenters
// its servers gave.
const datacentersTTL = 5 * time.Second

// dcList is a client agent's last list of datacenters.
type dcList struct {
	mu   sync.Mutex
	list []string
	at   time.Time
}

// clientDatacenters returns the datacenters the servers know, asked again
// when the last answer is older than datacentersTTL (the old list stays on
// an error).
func (a *Agent) clientDatacenters() []string {
	d := &a.dcs
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.at) < datacentersTTL {
		return d.list
	}
	ctx, cancel := context.WithTimeout(a.ctx, 2*time.Second)
	defer cancel()
	if list, err := a.client.Datacenters(ctx); err == nil {
		d.list = list
	}
	d.at = time.Now()
	return d.list
}

// federationPart is what the HTTP API lists datacenters through: the
// server, or the client's servers.
func (a *Agent) federationPart() httpapi.Federation {
	if a.server != nil {
		return a.server
	}
	return a.client
}

// wanTranslator is the backend of an agent with translate_wan_addrs: reads
// of another datacenter answer with its nodes' and services' WAN addresses
// (their "wan" tagged addresses) where they have one.
type wanTranslator struct {
	httpapi.Backend
	dc string
}

// Read implements httpapi.Backend.
func (w wanTranslator) Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	resp, err := w.Backend.Read(ctx, req)
	if err != nil || resp == nil || req.Options.Datacenter == "" || req.Options.Datacenter == w.dc {
		return resp, err
	}
	// A remote read's response is decoded from the RPC for this call
	// alone, so it may be changed in place.
	node := func(n *catalog.Node) {
		if n != nil && n.TaggedAddresses["wan"] != "" {
			n.Address = n.TaggedAddresses["wan"]
		}
	}
	node(resp.Node)
	for _, n := range resp.Nodes {
		node(n)
	}
	for _, in := range resp.Instances {
		node(in.Node)
		if in.Service != nil {
			if a, ok := in.Service.TaggedAddresses["wan"]; ok && a.Address != "" {
				in.Service.Address, in.Service.Port = a.Address, a.Port
			}
		}
	}
	if resp.NodeServices != nil {
		node(resp.NodeServices.Node)
	}
	return resp, nil
}
