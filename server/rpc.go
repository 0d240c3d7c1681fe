package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	// segmentio/encoding/json decodes what encoding/json writes, ~3x
	// faster (BenchmarkReadResponseCodec). Its encoder differs (it
	// writes time.Duration as "5s"), so encoding stays with encoding/json.
	sjson "github.com/segmentio/encoding/json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// The first byte of every connection to the server port says what it
// carries, so Raft and the RPC share one port as Consul's do.
const (
	connRaft byte = 0x01
	connRPC  byte = 0x02
)

// rpcStreamWorkers is the number of goroutines that serve the server
// port's RPCs (newRPCServer).
const rpcStreamWorkers = 32

// maxRPCMessage bounds one RPC message (a txn of 64 ops of 512 KiB fits).
const maxRPCMessage = 64 << 20

// jsonCodec carries RPC messages as JSON: the request types are plain Go
// structs shared with the HTTP API, so no generated code is needed.
type jsonCodec struct{}

// rawApply marks an ApplyRequest sent as its raw command bytes: the write
// path's hot message skips JSON and base64. No JSON text starts with it.
const rawApply byte = 0xff

func (jsonCodec) Marshal(v any) ([]byte, error) {
	if a, ok := v.(*ApplyRequest); ok {
		out := make([]byte, 0, len(a.Data)+1)
		return append(append(out, rawApply), a.Data...), nil
	}
	return json.Marshal(v)
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if a, ok := v.(*ApplyRequest); ok && len(data) > 0 && data[0] == rawApply {
		a.Data = append([]byte(nil), data[1:]...)
		return nil
	}
	return sjson.Unmarshal(data, v)
}

func (jsonCodec) Name() string { return "json" }

// chanListener is a net.Listener fed by the port multiplexer.
type chanListener struct {
	addr    net.Addr
	ch      chan net.Conn
	closeCh chan struct{}
	once    sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closeCh: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closeCh:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closeCh) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// push hands a connection to the listener's Accept, or closes it when the
// listener is closed.
func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closeCh:
		c.Close()
	}
}

// serveMux accepts connections on the server port and routes them by their
// first byte until the listener closes. ln retries failed Accepts itself
// (listen.Retry), so an error here means the port was closed.
//
// A source IP holds at most RPCMaxConnsPerClient connections; one more is
// closed at once. A connection must send its type byte and at least one
// byte of its protocol within RPCHandshakeTimeout, or it is closed: a peer
// that connects and stays silent cannot hold a descriptor.
func (s *Server) serveMux(ln net.Listener, raftL, rpcL *chanListener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.shutdownCh:
			default:
				if !errors.Is(err, net.ErrClosed) {
					s.logger.Error("server port accept failed", "error", err)
				}
			}
			return
		}
		ip := remoteIP(c)
		if !s.rpcConns.acquire(ip) {
			s.rpcConns.logRefusal(s.logger, ip)
			c.Close()
			continue
		}
		c = &limitedConn{Conn: c, release: func() { s.rpcConns.release(ip) }}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.routeConn(c, raftL, rpcL)
		}()
	}
}

// routeConn reads a connection's type byte and the first bytes of its
// protocol within the handshake timeout and hands it to Raft or the RPC. A
// TLS connection (connTLS) is unwrapped first and routed by the type byte
// inside; with verify_incoming, plaintext Raft and RPC are refused.
func (s *Server) routeConn(c net.Conn, raftL, rpcL *chanListener) {
	_ = c.SetDeadline(time.Now().Add(s.config.RPCHandshakeTimeout))
	kind, pc, ok := readKind(c)
	secure := false
	if ok && kind == connTLSInsecure {
		s.routeInsecure(pc)
		return
	}
	if ok && kind == connTLS {
		var tc net.Conn
		if tc, ok = s.acceptTLS(pc); !ok {
			return
		}
		kind, pc, ok = readKind(tc)
		secure = true
	}
	if !ok {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	switch {
	case kind == connRaft && secure && !s.peerIsServer(pc):
		s.logger.Warn("refusing Raft connection: its certificate does not name "+s.config.TLS.ServerName()+
			" (tls.internal_rpc.verify_server_hostname); only servers speak Raft", "remote", c.RemoteAddr())
		c.Close()
	case (kind == connRaft || kind == connRPC) && !secure && s.tlsRequired():
		s.logger.Warn("refusing plaintext connection on server port: tls.internal_rpc.verify_incoming requires TLS",
			"remote", c.RemoteAddr(), "type", kind)
		c.Close()
	case kind == connRaft:
		raftL.push(pc)
	case kind == connRPC:
		rpcL.push(pc)
	default:
		s.logger.Warn("unknown connection type on server port", "byte", kind, "remote", c.RemoteAddr(), "tls", secure)
		c.Close()
	}
}

// readKind reads a connection's type byte and at least one more byte; it
// returns the type and the connection with the bytes after the type still
// to read.
func readKind(c net.Conn) (byte, net.Conn, bool) {
	var buf [64]byte
	n := 0
	for n < 2 {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil && n < 2 {
			return 0, nil, false
		}
	}
	return buf[0], &prefixConn{Conn: c, prefix: append([]byte(nil), buf[1:n]...)}, true
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// limitedConn gives its slot back to the per-client limit when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// connLimiter counts the open connections of each source IP
// (limits.rpc_max_conns_per_client). An IP with no connection has no entry,
// so the map is bounded by the open connections.
type connLimiter struct {
	max int // 0: unlimited

	mu       sync.Mutex
	perIP    map[string]int
	lastWarn time.Time
}

func newConnLimiter(max int) *connLimiter {
	return &connLimiter{max: max, perIP: map[string]int{}}
}

func (l *connLimiter) acquire(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.perIP[ip] >= l.max {
		return false
	}
	l.perIP[ip]++
	return true
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[ip] <= 1 {
		delete(l.perIP, ip)
		return
	}
	l.perIP[ip]--
}

// open returns the connections ip holds.
func (l *connLimiter) open(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perIP[ip]
}

// logRefusal logs a refused connection, at most once every 10 seconds so
// that a flood does not become a log flood.
func (l *connLimiter) logRefusal(logger hclog.Logger, ip string) {
	l.mu.Lock()
	now := time.Now()
	quiet := now.Sub(l.lastWarn) < 10*time.Second
	if !quiet {
		l.lastWarn = now
	}
	l.mu.Unlock()
	if !quiet {
		logger.Warn("refusing server port connection: rpc_max_conns_per_client reached", "remote", ip, "limit", l.max)
	}
}

// ---- wire types ----

// WireError carries an error across the RPC with the kind callers branch on.
type WireError struct {
	Kind string
	Msg  string
}

// Error kinds.
const (
	kindNoLeader  = "no_leader"
	kindNotLeader = "not_leader"
	kindInvalid   = "invalid"
	kindSession   = "session"
	kindNode      = "missing_node"
	kindService   = "missing_service"
	kindBadSnap   = "bad_snapshot"
	kindSnapLarge = "snapshot_too_large"
	kindRestoring = "restore_in_progress"
	kindNoConnect = "connect_disabled"
	kindNoPathDC  = "no_path_to_dc"
)

var kindErrors = map[string]error{
	kindNoLeader:  ErrNoLeader,
	kindNotLeader: ErrNotLeader,
	kindInvalid:   catalog.ErrInvalidRequest,
	kindSession:   catalog.ErrSessionNotFound,
	kindNode:      catalog.ErrMissingNode,
	kindService:   catalog.ErrMissingService,
	kindBadSnap:   catalog.ErrBadSnapshot,
	kindSnapLarge: ErrSnapshotTooLarge,
	kindRestoring: ErrRestoreInProgress,

	kindACLBootstrapped: catalog.ErrACLBootstrapped,
	kindNoConnect:       ErrConnectDisabled,

	kindPermissionDenied: acl.ErrPermissionDenied,
	kindACLNotFound:      acl.ErrNotFound,
	kindLoginRefused:     acl.ErrLoginRefused,
	kindLoginUnsupported: acl.ErrLoginUnsupported,
	kindNoPathDC:         ErrNoPathToDC,
}

func toWire(err error) *WireError {
	if err == nil {
		return nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		return &WireError{Kind: re.kind, Msg: re.msg}
	}
	for k, target := range kindErrors {
		if errors.Is(err, target) {
			return &WireError{Kind: k, Msg: err.Error()}
		}
	}
	return &WireError{Msg: err.Error()}
}

func fromWire(w *WireError) error {
	if w == nil {
		return nil
	}
	return &remoteError{kind: w.Kind, msg: w.Msg}
}

// remoteError is an error returned by another server.
type remoteError struct {
	kind string
	msg  string
}

func (e *remoteError) Error() string { return e.msg }

// Is lets errors.Is match the sentinel of the error's kind.
func (e *remoteError) Is(target error) bool {
	t, ok := kindErrors[e.kind]
	return ok && t == target
}

// ApplyRequest carries an encoded command to the leader.
type ApplyRequest struct {
	Data []byte
}

// ApplyResponse is the FSM's answer to an ApplyRequest.
type ApplyResponse struct {
	// Leader is the leader's address as the answering server knows it, so
	// that a client agent can send its next request there directly.
	Leader  string               `json:",omitempty"`
	Error   *WireError           `json:",omitempty"`
	Result  *WireError           `json:",omitempty"` // an FSM error result
	KV      *kvWire              `json:",omitempty"`
	Txn     *catalog.TxnResponse `json:",omitempty"`
	Applied bool

	// VIP answers a manual virtual IP assignment.
	VIP *catalog.VirtualIPResult `json:",omitempty"`
}

type kvWire struct {
	OK    bool
	Error *WireError `json:",omitempty"`
}

func encodeApplyResult(res any) *ApplyResponse {
	out := &ApplyResponse{Applied: true}
	switch v := res.(type) {
	case nil:
	case error:
		out.Result = toWire(v)
	case catalog.KVResult:
		out.KV = &kvWire{OK: v.OK, Error: toWire(v.Err)}
	case catalog.TxnResponse:
		out.Txn = &v
	case catalog.VirtualIPResult:
		if v.Err != nil {
			out.Result = toWire(v.Err)
		} else {
			out.VIP = &v
		}
	}
	return out
}

func decodeApplyResult(r *ApplyResponse) (any, error) {
	if r.Error != nil {
		return nil, fromWire(r.Error)
	}
	switch {
	case r.Result != nil:
		return fromWire(r.Result), nil
	case r.KV != nil:
		return catalog.KVResult{OK: r.KV.OK, Err: fromWire(r.KV.Error)}, nil
	case r.Txn != nil:
		return *r.Txn, nil
	case r.VIP != nil:
		return *r.VIP, nil
	}
	return nil, nil
}

// ReadResponseWire carries a read's result or error.
type ReadResponseWire struct {
	// Leader is as in ApplyResponse.
	Leader string                `json:",omitempty"`
	Error  *WireError            `json:",omitempty"`
	Resp   *catalog.ReadResponse `json:",omitempty"`
}

// StatusRequest asks a server about its Raft state.
type StatusRequest struct{}

// StatusResponse describes a server's view of the cluster.
type StatusResponse struct {
	NodeName string
	Leader   string
	Peers    []string
	// LastIndex is the server's last Raft index: non-zero means it has
	// state and must not take part in a fresh bootstrap.
	LastIndex uint64
}

// SessionRenewRequest asks the leader to restart a session's TTL timer.
type SessionRenewRequest struct {
	ID string
}

// SessionRenewResponse carries the renewed session (nil when there is no
// session with that ID) or an error.
type SessionRenewResponse struct {
	Error   *WireError       `json:",omitempty"`
	Session *catalog.Session `json:",omitempty"`
}

// rpcHandler is the set of RPC methods a server serves.
type rpcHandler interface {
	rpcApply(ctx context.Context, req *ApplyRequest) (*ApplyResponse, error)
	rpcRead(ctx context.Context, req *catalog.ReadRequest) (*ReadResponseWire, error)
	rpcStatus(ctx context.Context, req *StatusRequest) (*StatusResponse, error)
	rpcSessionRenew(ctx context.Context, req *SessionRenewRequest) (*SessionRenewResponse, error)
	rpcSnapshotSave(ctx context.Context, req *SnapshotWire) (*SnapshotWire, error)
	rpcSnapshotRestore(ctx context.Context, req *SnapshotWire) (*SnapshotWire, error)
	rpcOperator(ctx context.Context, req *OperatorRequest) (*OperatorResponse, error)
	rpcDatacenters(ctx context.Context, req *DatacentersRequest) (*DatacentersResponse, error)
	rpcReplicationStatus(ctx context.Context, req *ReplicationStatusRequest) (*ReplicationStatus, error)
	rpcFireEvent(ctx context.Context, req *FireEventRequest) (*FireEventResponse, error)
	rpcSignIntermediate(ctx context.Context, req *SignIntermediateRequest) (*SignIntermediateResponse, error)
}

func unary[Req any, Resp any](call func(rpcHandler, context.Context, *Req) (*Resp, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		return call(srv.(rpcHandler), withIncomingToken(ctx), in)
	}
}

var rpcServiceDesc = grpc.ServiceDesc{
	ServiceName: "tribune.Server",
	HandlerType: (*rpcHandler)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Apply", Handler: unary(rpcHandler.rpcApply)},
		{MethodName: "Read", Handler: unary(rpcHandler.rpcRead)},
		{MethodName: "Status", Handler: unary(rpcHandler.rpcStatus)},
		{MethodName: "SessionRenew", Handler: unary(rpcHandler.rpcSessionRenew)},
		{MethodName: "SnapshotSave", Handler: unary(rpcHandler.rpcSnapshotSave)},
		{MethodName: "SnapshotRestore", Handler: unary(rpcHandler.rpcSnapshotRestore)},
		{MethodName: "Operator", Handler: unary(rpcHandler.rpcOperator)},
		{MethodName: "Datacenters", Handler: unary(rpcHandler.rpcDatacenters)},
		{MethodName: "ReplicationStatus", Handler: unary(rpcHandler.rpcReplicationStatus)},
		{MethodName: "FireEvent", Handler: unary(rpcHandler.rpcFireEvent)},
		{MethodName: "ConnectSignIntermediate", Handler: unary(rpcHandler.rpcSignIntermediate)},
	},
	Streams: []grpc.StreamDesc{},
}

func (s *Server) rpcApply(ctx context.Context, req *ApplyRequest) (*ApplyResponse, error) {
	ctx = incomingDC(ctx)
	res, err := s.ApplyRaw(ctx, req.Data)
	countRPC(false, responseErr(res, err))
	if err != nil {
		return &ApplyResponse{Error: toWire(err), Leader: s.Leader()}, nil
	}
	out := encodeApplyResult(res)
	out.Leader = s.Leader()
	return out, nil
}

func (s *Server) rpcRead(ctx context.Context, req *catalog.ReadRequest) (*ReadResponseWire, error) {
	resp, err := s.Read(ctx, req)
	if err != nil {
		return &ReadResponseWire{Error: toWire(err), Leader: s.Leader()}, nil
	}
	return &ReadResponseWire{Resp: resp, Leader: s.Leader()}, nil
}

func (s *Server) rpcStatus(ctx context.Context, req *StatusRequest) (*StatusResponse, error) {
	if ctx = incomingDC(ctx); s.remoteDC(datacenterOf(ctx)) {
		leader, peers, err := s.Status(ctx)
		if err != nil {
			return nil, err
		}
		return &StatusResponse{Leader: leader, Peers: peers}, nil
	}
	peers, _ := s.Peers()
	return &StatusResponse{NodeName: s.config.NodeName, Leader: s.Leader(), Peers: peers, LastIndex: s.raft.LastIndex()}, nil
}

// ---- client side ----

// newRPCServer returns the gRPC server for the server port.
func (s *Server) newRPCServer() *grpc.Server {
	// ConnectionTimeout bounds the HTTP/2 handshake that follows the
	// connection's first bytes.
	g := grpc.NewServer(grpc.ForceServerCodec(jsonCodec{}), grpc.MaxRecvMsgSize(maxRPCMessage), grpc.MaxSendMsgSize(maxRPCMessage),
		grpc.ConnectionTimeout(s.config.RPCHandshakeTimeout),
		// The pool's keepalive pings (net.go), not too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: rpcKeepaliveMinTime}),
		// Requests run on long-lived workers, whose stacks have grown
		// already: a goroutine per request spent ~20% of a leader's CPU
		// serving stale reads growing its stack (runtime.newstack). A
		// request that finds every worker busy (blocking queries park
		// there) gets a goroutine of its own, as before.
		grpc.NumStreamWorkers(rpcStreamWorkers))
	desc := rpcServiceDesc
	desc.Methods = append(append(append([]grpc.MethodDesc(nil), rpcServiceDesc.Methods...), connectMethods...), autoEncryptMethods...)
	g.RegisterService(&desc, s)
	return g
}
