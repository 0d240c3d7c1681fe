package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/federation"
	"github.com/tribune-mesh/tribune/gossip"
)

// Cross-datacenter requests. A request for another datacenter (a read's
// Options.Datacenter, a write's context datacenter) is sent by this server
// to a server of that datacenter found through the WAN pool (the Router),
// over the same server port, trying its servers in turn within the hold
// timeout. The remote server serves it as its own.

// ErrNoPathToDC is returned for a datacenter no server knows of; its text
// is Consul's.
var ErrNoPathToDC = federation.ErrNoPath

// dcKey is the context key of the datacenter a write is for.
type dcKey struct{}

// dcMetadata is the gRPC metadata key that carries a write's datacenter
// from a client agent to its server.
const dcMetadata = "tribune-dc"

// WithDatacenter returns a context whose writes (Apply) are for datacenter
// dc: a server forwards them to dc when it is not its own.
func WithDatacenter(ctx context.Context, dc string) context.Context {
	if dc == "" {
		return ctx
	}
	return context.WithValue(ctx, dcKey{}, dc)
}

// datacenterOf returns the datacenter a context's writes are for, "" for
// the local one.
func datacenterOf(ctx context.Context) string {
	dc, _ := ctx.Value(dcKey{}).(string)
	return dc
}

// DatacenterOf returns the datacenter a context's writes are for (see
// WithDatacenter), "" for the local one.
func DatacenterOf(ctx context.Context) string { return datacenterOf(ctx) }

// outgoingDC adds the context's datacenter to an RPC's metadata.
func outgoingDC(ctx context.Context) context.Context {
	if dc := datacenterOf(ctx); dc != "" {
		return metadata.AppendToOutgoingContext(ctx, dcMetadata, dc)
	}
	return ctx
}

// incomingDC moves the datacenter an RPC's metadata names into the context.
func incomingDC(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	if v := md.Get(dcMetadata); len(v) == 1 && len(v[0]) <= 256 {
		return WithDatacenter(ctx, v[0])
	}
	return ctx
}

// remoteDC reports whether dc names a datacenter other than this server's.
func (s *Server) remoteDC(dc string) bool {
	return dc != "" && dc != s.config.Datacenter
}

// Router returns the server's datacenter router, nil without a WAN pool.
func (s *Server) Router() *federation.Router { return s.router }

// Datacenters lists the datacenters this server knows, nearest first (its
// own alone without a WAN pool).
func (s *Server) Datacenters(ctx context.Context) ([]string, error) {
	if s.router == nil {
		return []string{s.config.Datacenter}, nil
	}
	return s.router.Datacenters(), nil
}

// WANCoordinates returns every datacenter's servers' WAN coordinates.
func (s *Server) WANCoordinates(ctx context.Context) ([]federation.DatacenterCoordinates, error) {
	if s.router == nil {
		return []federation.DatacenterCoordinates{{Datacenter: s.config.Datacenter, AreaID: "wan", Coordinates: []federation.Coordinate{}}}, nil
	}
	return s.router.Coordinates(), nil
}

// forwardDC sends one RPC to a server of datacenter dc, moving to the next
// of its servers when one cannot be reached, until answerErr accepts the
// answer or the hold timeout passes. A write (method Apply) is sent again
// only when it provably never left. The call as a whole is bounded by
// timeout and each attempt by perAttempt (0: no bound of its own, for a
// blocking query), both real time, so a partitioned datacenter answers with
// an error, never a hang. Errors of the way there name the datacenter; the
// remote server's own answers are returned as they are.
func (s *Server) forwardDC(ctx context.Context, dc, method string, req, resp any, timeout, perAttempt time.Duration, answerErr func() error) error {
	if s.router == nil {
		return fmt.Errorf("%w %q", ErrNoPathToDC, dc)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	write := method == "Apply"
	transport := false
	retry := func(err error) bool {
		if write {
			return retryableWrite(err)
		}
		// A read is safe to repeat elsewhere after any failure of the
		// way there, an attempt that ran out of time included.
		return retryable(err) || (transport && ctx.Err() == nil)
	}
	var tried []string
	err := holdRetry(ctx, s.clock, s.config.HoldTimeout, s.shutdownCh, retry, func() error {
		servers, err := s.router.Servers(dc)
		if err != nil {
			transport = false
			return err
		}
		addr := servers[0]
		for _, a := range servers {
			if !contains(tried, a) {
				addr = a
				break
			}
		}
		tried = append(tried, addr)
		if len(tried) >= len(servers) {
			tried = tried[:0]
		}
		actx := ctx
		if perAttempt > 0 {
			var acancel context.CancelFunc
			actx, acancel = context.WithTimeout(ctx, perAttempt)
			defer acancel()
		}
		if err := s.pool.call(actx, addr, method, req, resp); err != nil {
			transport = true
			if !leaderErr(err) {
				s.router.MarkFailed(addr)
			}
			s.logger.Debug("forward to datacenter failed", "dc", dc, "server", addr, "error", err)
			return err
		}
		transport = false
		return answerErr()
	})
	var he *holdExpiredError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoPathToDC):
		return ErrNoPathToDC
	case errors.As(err, &he):
		if leaderErr(he.last) {
			return ErrNoLeader
		}
		return fmt.Errorf("datacenter %s: %w", dc, he.last)
	case ctx.Err() != nil:
		return fmt.Errorf("datacenter %s did not answer within %s: %w", dc, timeout, err)
	case transport:
		return fmt.Errorf("datacenter %s: %w", dc, err)
	}
	return err
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// readTimeout bounds a forwarded read: the hold timeout, plus the wait of a
// blocking query.
func (s *Server) readTimeout(req *catalog.ReadRequest) time.Duration {
	if req.Options.MinQueryIndex == 0 {
		return s.config.HoldTimeout
	}
	wait := req.Options.MaxQueryTime
	if wait <= 0 {
		wait = DefaultQueryTime
	}
	return min(wait, MaxQueryTime) + wait/16 + s.config.HoldTimeout
}

// readDC runs a read in another datacenter.
func (s *Server) readDC(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	var resp ReadResponseWire
	perAttempt := s.config.HoldTimeout / 3
	if req.Options.MinQueryIndex > 0 {
		perAttempt = 0
	}
	err := s.forwardDC(ctx, req.Options.Datacenter, "Read", req, &resp, s.readTimeout(req), perAttempt, func() error { return fromWire(resp.Error) })
	if err != nil {
		return nil, err
	}
	return resp.Resp, nil
}

// applyDC commits an encoded command in another datacenter.
func (s *Server) applyDC(ctx context.Context, dc string, buf []byte) (any, error) {
	var resp ApplyResponse
	var res any
	err := s.forwardDC(WithDatacenter(ctx, dc), dc, "Apply", &ApplyRequest{Data: buf}, &resp, s.config.HoldTimeout, s.config.HoldTimeout/3, func() error {
		var derr error
		res, derr = decodeApplyResult(&resp)
		return derr
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// sessionRenewDC renews a session of another datacenter.
func (s *Server) sessionRenewDC(ctx context.Context, dc, id string) (*catalog.Session, error) {
	var resp SessionRenewResponse
	err := s.forwardDC(ctx, dc, "SessionRenew", &SessionRenewRequest{ID: id}, &resp, s.config.HoldTimeout, s.config.HoldTimeout/3,
		func() error { return fromWire(resp.Error) })
	if err != nil {
		return nil, err
	}
	return resp.Session, nil
}

// FireEventRequest carries a user event to fire in a datacenter's LAN pool.
type FireEventRequest struct {
	Event gossip.UserEvent
}

// FireEventResponse is the event as fired, or the error.
type FireEventResponse struct {
	Error *WireError `json:",omitempty"`
	Event *gossip.UserEvent
}

// FireEvent fires a user event in datacenter dc: a server there gossips it
// in its LAN pool.
func (s *Server) FireEvent(ctx context.Context, dc string, ev gossip.UserEvent) (gossip.UserEvent, error) {
	if !s.remoteDC(dc) {
		if s.config.Gossip == nil {
			return gossip.UserEvent{}, fmt.Errorf("%w: gossip is disabled on this server", catalog.ErrInvalidRequest)
		}
		return s.config.Gossip.FireUserEvent(ev)
	}
	var resp FireEventResponse
	err := s.forwardDC(WithDatacenter(ctx, dc), dc, "FireEvent", &FireEventRequest{Event: ev}, &resp, s.config.HoldTimeout, s.config.HoldTimeout/3,
		func() error { return fromWire(resp.Error) })
	if err != nil {
		return gossip.UserEvent{}, err
	}
	if resp.Event == nil {
		return gossip.UserEvent{}, fmt.Errorf("datacenter %s fired no event", dc)
	}
	return *resp.Event, nil
}

func (s *Server) rpcFireEvent(ctx context.Context, req *FireEventRequest) (*FireEventResponse, error) {
	if err := s.authorizeWith(ctx, func(c checker) error {
		return c.need(c.authz.EventWrite(req.Event.Name), "event:write", req.Event.Name)
	}); err != nil {
		return &FireEventResponse{Error: toWire(err)}, nil
	}
	ev, err := s.FireEvent(ctx, datacenterOf(incomingDC(ctx)), req.Event)
	if err != nil {
		return &FireEventResponse{Error: toWire(err)}, nil
	}
	return &FireEventResponse{Event: &ev}, nil
}

// FireEvent asks the servers to fire a user event in datacenter dc.
func (c *Client) FireEvent(ctx context.Context, dc string, ev gossip.UserEvent) (gossip.UserEvent, error) {
	var resp FireEventResponse
	err := c.invoke(WithDatacenter(ctx, dc), "FireEvent", &FireEventRequest{Event: ev}, &resp, func() error { return fromWire(resp.Error) })
	if err != nil {
		return gossip.UserEvent{}, err
	}
	if resp.Event == nil {
		return gossip.UserEvent{}, fmt.Errorf("datacenter %s fired no event", dc)
	}
	return *resp.Event, nil
}

// DatacentersRequest asks a server for the datacenters it knows.
type DatacentersRequest struct{}

// DatacentersResponse lists datacenters, nearest first, and their servers'
// WAN coordinates.
type DatacentersResponse struct {
	Datacenters []string
	Coordinates []federation.DatacenterCoordinates
}

func (s *Server) rpcDatacenters(ctx context.Context, _ *DatacentersRequest) (*DatacentersResponse, error) {
	dcs, _ := s.Datacenters(ctx)
	coords, _ := s.WANCoordinates(ctx)
	return &DatacentersResponse{Datacenters: dcs, Coordinates: coords}, nil
}

// wanLoop drains the WAN pool's membership events until shutdown; a server
// of another datacenter joining wakes the replication loops, so that they
// run within a second of a WAN join.
func (s *Server) wanLoop() {
	defer s.wg.Done()
	t := s.clock.NewTicker(floodInterval)
	defer t.Stop()
	s.floodWAN()
	for {
		select {
		case <-s.shutdownCh:
			return
		case <-t.C():
			s.floodWAN()
			s.reconnectWAN()
		case ev := <-s.config.WAN.Events():
			if ev.Type == gossip.EventJoin || ev.Type == gossip.EventUpdate {
				s.logger.Debug("WAN member", "member", ev.Member.Name, "dc", ev.Member.Tags["dc"])
				s.wakeReplication()
			}
		}
	}
}

// Datacenters asks a server for the datacenters it knows, nearest first.
func (c *Client) Datacenters(ctx context.Context) ([]string, error) {
	resp, err := c.datacenters(ctx)
	if err != nil {
		return nil, err
	}
	return resp.Datacenters, nil
}

// WANCoordinates asks a server for every datacenter's servers' WAN
// coordinates.
func (c *Client) WANCoordinates(ctx context.Context) ([]federation.DatacenterCoordinates, error) {
	resp, err := c.datacenters(ctx)
	if err != nil {
		return nil, err
	}
	return resp.Coordinates, nil
}

func (c *Client) datacenters(ctx context.Context) (*DatacentersResponse, error) {
	var resp DatacentersResponse
	if err := c.invoke(ctx, "Datacenters", &DatacentersRequest{}, &resp, func() error { return nil }); err != nil {
		return nil, err
	}
	return &resp, nil
}

// floodInterval is how often a server checks that every server of its
// datacenter is in the WAN pool.
const floodInterval = time.Second

// floodWAN joins the WAN members of this datacenter's servers that the LAN
// pool knows and the WAN pool does not (Consul's flood join), so that one
// WAN join per datacenter federates all its servers.
func (s *Server) floodWAN() {
	if s.config.Gossip == nil {
		return
	}
	inWAN := map[string]bool{}
	for _, m := range s.config.WAN.Members() {
		if m.Status == gossip.StatusAlive {
			inWAN[m.Name] = true
		}
	}
	var addrs []string
	for _, m := range s.config.Gossip.Members() {
		port := m.Tags["wan_join_port"]
		if !m.IsServer() || m.Status != gossip.StatusAlive || m.Tags["dc"] != s.config.Datacenter || port == "" {
			continue
		}
		if !inWAN[federation.MemberName(m.Name, s.config.Datacenter)] {
			addrs = append(addrs, net.JoinHostPort(m.Addr.String(), port))
		}
	}
	if len(addrs) == 0 {
		return
	}
	if _, err := s.config.WAN.Join(addrs); err != nil {
		s.logger.Debug("WAN flood join", "servers", addrs, "error", err)
	}
}

// Reconnecting the WAN pool after a partition. Memberlist forgets a server
// it marked failed: once the notices of its failure have been sent (into
// the partition), nothing tells that server it is thought dead, so it never
// refutes, and only a push/pull (a minute apart on the WAN, and only with
// members thought alive) can bring it back. Until then every ?dc= request
// and the replication loops find "no alive server". The fault tests saw
// replication stay down 20 s to over a minute after a WAN partition healed.
// Consul's serf rejoins one failed member every 30 s; Tribune probes every
// failed server of the other datacenters each floodInterval and joins the
// ones that answer, so that the pool heals within about a second.
const (
	// reconnectDialTimeout bounds the probe of one failed server.
	reconnectDialTimeout = 300 * time.Millisecond
	// maxReconnectProbes bounds the probes of one round.
	maxReconnectProbes = 16
)

// reconnectWAN joins the failed WAN servers of other datacenters whose
// gossip port accepts a connection again.
func (s *Server) reconnectWAN() {
	var failed []string
	for _, m := range s.config.WAN.Members() {
		if m.Status != gossip.StatusFailed || !m.IsServer() || m.Tags["dc"] == s.config.Datacenter {
			continue
		}
		failed = append(failed, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
		if len(failed) == maxReconnectProbes {
			break
		}
	}
	if len(failed) == 0 {
		return
	}
	answered := make([]bool, len(failed))
	var wg sync.WaitGroup
	for i, addr := range failed {
		wg.Add(1)
		go func() {
			// Owned by this round, which waits for it; each ends
			// within reconnectDialTimeout.
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, reconnectDialTimeout)
			if err == nil {
				conn.Close()
				answered[i] = true
			}
		}()
	}
	wg.Wait()
	var addrs []string
	for i, ok := range answered {
		if ok {
			addrs = append(addrs, failed[i])
		}
	}
	if len(addrs) == 0 {
		return
	}
	n, err := s.config.WAN.Join(addrs)
	s.logger.Info("rejoined failed WAN servers that answer again", "servers", addrs, "contacted", n, "error", err)
}
