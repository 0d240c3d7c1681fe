package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
)

// Keepalive of the connections to the servers: a connection with calls
// open that has been silent for rpcKeepaliveTime (gRPC's minimum) is
// pinged, and closed when the ping is not answered within
// rpcKeepaliveTimeout, so a hung server is left within ~15 s. The servers
// accept pings every rpcKeepaliveMinTime.
const (
	rpcKeepaliveTime    = 10 * time.Second
	rpcKeepaliveTimeout = 5 * time.Second
	rpcKeepaliveMinTime = 5 * time.Second
)

// DialFunc opens a connection to a server port. It is the seam between a
// server and its network: TCP in a running server, an in-process switchboard
// in tests that partition servers (servertest).
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// dialTCP is the DialFunc of a running server.
func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// dialPort opens a connection of kind (connRaft, connRPC) to a server port,
// inside TLS when sec says so.
func dialPort(ctx context.Context, dial DialFunc, sec portTLS, addr string, kind byte) (net.Conn, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if c, err = sec.wrap(ctx, c, addr); err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, fmt.Errorf("server port handshake: %w", err)
	}
	return c, nil
}

// raftLayer is Raft's StreamLayer over the multiplexed port.
type raftLayer struct {
	*chanListener
	advertise net.Addr
	dial      DialFunc
	tls       portTLS
}

func (r *raftLayer) Addr() net.Addr { return r.advertise }

// Dial implements raft.StreamLayer.
func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return dialPort(ctx, r.dial, r.tls, string(address), connRaft)
}

// errNotSent marks an RPC that failed before its request left this
// process: no connection to the server could be used. Only such a write is
// safe to send again.
var errNotSent = errors.New("request not sent")

// sentKey is the context key of the flag that sentTracker sets once an
// RPC's headers are handed to a connection.
type sentKey struct{}

// sentTracker is a gRPC stats handler that records, per call, whether the
// request was handed to a connection. gRPC reports OutHeader only after it
// picked a connection for the call, so a call without it was never sent.
type sentTracker struct{}

func (sentTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (sentTracker) HandleRPC(ctx context.Context, st stats.RPCStats) {
	if _, ok := st.(*stats.OutHeader); !ok {
		return
	}
	if f, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

func (sentTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (sentTracker) HandleConn(context.Context, stats.ConnStats) {}

// connPool keeps one gRPC connection per server address.
type connPool struct {
	dial DialFunc
	// token is the ACL token of a call whose context has none (WithToken):
	// the agent's own; nil sends none.
	token func() string
	// tls says whether connections are made inside TLS; set before the
	// first call.
	tls portTLS

	mu    sync.Mutex
	conns map[string]*pooledConn
}

// pooledConn is one server's connection and the calls using it: a
// connection retired by renew is closed when its last call ends, so a
// renewal never cuts a request short.
type pooledConn struct {
	cc      *grpc.ClientConn
	calls   int  // guarded by connPool.mu
	retired bool // guarded by connPool.mu
}

// newConnPool returns a pool that reaches servers with dial (nil: TCP).
func newConnPool(dial DialFunc) *connPool {
	if dial == nil {
		dial = dialTCP
	}
	return &connPool{dial: dial, conns: map[string]*pooledConn{}}
}

// acquire returns the connection to addr, made on first use, counted as
// used by one more call until release.
func (p *connPool) acquire(addr string) (*pooledConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		c.calls++
		return c, nil
	}
	dialer := func(ctx context.Context, a string) (net.Conn, error) {
		return dialPort(ctx, p.dial, p.tls, a, connRPC)
	}
	c, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer),
		grpc.WithStatsHandler(sentTracker{}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{}), grpc.MaxCallRecvMsgSize(maxRPCMessage), grpc.MaxCallSendMsgSize(maxRPCMessage)),
		// A server that stops answering without closing its connections
		// (SIGSTOP, a paused VM, a silent partition) would hold the
		// blocking queries parked on it for ever: while calls are open,
		// ping it, and fail them (to be retried on another server) when
		// it does not answer.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: rpcKeepaliveTime, Timeout: rpcKeepaliveTimeout}),
	)
	if err != nil {
		return nil, fmt.Errorf("rpc client for %s: %w", addr, err)
	}
	pc := &pooledConn{cc: c, calls: 1}
	p.conns[addr] = pc
	return pc, nil
}

// release ends one call's use of c, closing c if it was retired and this
// was its last call.
func (p *connPool) release(c *pooledConn) {
	p.mu.Lock()
	c.calls--
	last := c.retired && c.calls == 0
	p.mu.Unlock()
	if last {
		_ = c.cc.Close()
	}
}

// close closes every connection, failing the calls in flight.
func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		_ = c.cc.Close()
		delete(p.conns, a)
	}
}

// renew makes the next calls use new connections (with the TLS
// certificate now configured, without the backoff of earlier failures)
// and closes the old ones once the calls in flight on them end.
func (p *connPool) renew() {
	p.mu.Lock()
	var idle []*grpc.ClientConn
	for a, c := range p.conns {
		c.retired = true
		if c.calls == 0 {
			idle = append(idle, c.cc)
		}
		delete(p.conns, a)
	}
	p.mu.Unlock()
	for _, cc := range idle {
		_ = cc.Close()
	}
}

// call invokes one RPC method on the server at addr. An error of a call
// whose request never left wraps errNotSent.
func (p *connPool) call(ctx context.Context, addr, method string, req, resp any) error {
	pc, err := p.acquire(addr)
	if err != nil {
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	defer p.release(pc)
	c := pc.cc
	// A retried call must not see fields left from an earlier answer.
	if v := reflect.ValueOf(resp); v.Kind() == reflect.Pointer && !v.IsNil() {
		v.Elem().Set(reflect.Zero(v.Elem().Type()))
	}
	sent := new(atomic.Bool)
	ctx = withOutgoingToken(ctx, p.token)
	ctx = outgoingDC(ctx)
	if err := c.Invoke(context.WithValue(ctx, sentKey{}, sent), "/tribune.Server/"+method, req, resp); err != nil {
		if !sent.Load() {
			return fmt.Errorf("rpc %s to %s: %w: %w", method, addr, errNotSent, err)
		}
		return fmt.Errorf("rpc %s to %s: %w", method, addr, err)
	}
	return nil
}
