// Package server runs a Tribune server: the Raft log (hashicorp/raft with
// raft-boltdb or raft-wal on disk), the FSM over the catalog state store, the write path
// with leader forwarding, and the three read modes (default, consistent,
// stale) with blocking queries.
//
// The package owns every goroutine it starts; Shutdown stops and waits for
// them. It must not import agent.
package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/federation"
	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/listen"
	"github.com/tribune-mesh/tribune/tlsconfig"
)

// Errors callers branch on.
var (
	// ErrNoLeader is returned when no leader could be found within the
	// hold timeout. Its text is Consul's.
	ErrNoLeader = errors.New("No cluster leader")
	// ErrNotLeader is returned when a leader-only operation reaches a
	// follower.
	ErrNotLeader = errors.New("node is not the leader")
	// ErrShutdown is returned after Shutdown.
	ErrShutdown = errors.New("server shut down")
)

// Blocking-query limits, as Consul documents them.
const (
	DefaultQueryTime = 5 * time.Minute
	MaxQueryTime     = 10 * time.Minute
)

// Defaults of the server's timeouts, each defined here only.
const (
	// DefaultHoldTimeout is rpc_hold_timeout: how long a request waits,
	// retrying, for a leader.
	DefaultHoldTimeout = 7 * time.Second
	// DefaultReconnectTimeout is reconnect_timeout: how long a failed
	// member stays in the catalog before it is reaped; gossip remembers
	// it as long.
	DefaultReconnectTimeout = gossip.DefaultReconnectTimeout
)

// Config is the configuration of a server. Use DefaultConfig and override.
type Config struct {
	// NodeName is this server's node name; NodeID its Raft ID.
	NodeName string
	NodeID   string
	// Datacenter is the server's datacenter.
	Datacenter string
	// DataDir holds raft/raft.db and snapshots. Empty with InMemory set.
	DataDir string
	// InMemory keeps the Raft log and snapshots in memory (-dev).
	InMemory bool
	// Bootstrap makes this server bootstrap a single-server cluster.
	Bootstrap bool
	// RPCAddr is the address Raft listens on (the server port).
	RPCAddr string
	// Listener, when set, is the server port, used instead of listening
	// on RPCAddr; the server closes it on Shutdown. With Dial, it puts a
	// server on an in-process network (servertest).
	Listener net.Listener
	// Dial opens connections to other servers' ports, for Raft and the
	// RPC; nil dials TCP.
	Dial DialFunc
	// AdvertiseAddr is the host:port other servers reach this one at.
	AdvertiseAddr string
	// RaftMultiplier scales Raft's timings (performance.raft_multiplier).
	RaftMultiplier int
	// SnapshotThreshold and SnapshotInterval control Raft snapshots;
	// TrailingLogs how many entries survive compaction.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// LogStore is the Raft log's backend on disk (raft_logstore.backend):
	// LogStoreBoltDB, LogStoreWAL, or "" for DefaultLogStore. A data
	// directory that already holds a log keeps the backend that wrote it
	// (logstore.go). DisableLogCache is raft_logstore.disable_log_cache;
	// WALSegmentSize the size of a WAL segment in bytes
	// (raft_logstore.wal.segment_size_mb), 0 for raft-wal's 64 MiB.
	LogStore        string
	DisableLogCache bool
	WALSegmentSize  int
	// HoldTimeout bounds how long a request waits for a leader
	// (rpc_hold_timeout).
	HoldTimeout time.Duration
	// RPCHandshakeTimeout bounds how long a new connection to the server
	// port may take to send its type byte and first protocol bytes
	// (limits.rpc_handshake_timeout); 0 means the default, 5s.
	RPCHandshakeTimeout time.Duration
	// RestoreMinLimit and RestoreLimitFactor bound what an uploaded
	// snapshot may decompress to: max(RestoreMinLimit, RestoreLimitFactor
	// x the current state's size), in bytes.
	RestoreMinLimit    int64
	RestoreLimitFactor int64
	// RPCMaxConnsPerClient bounds the connections one source IP holds to
	// the server port (limits.rpc_max_conns_per_client); 0 is unlimited.
	RPCMaxConnsPerClient int
	// Gossip is the LAN pool; nil runs without membership (a lone
	// server registers only itself).
	Gossip *gossip.Pool
	// BootstrapExpect is how many servers to wait for before
	// bootstrapping (bootstrap_expect); 0 disables.
	BootstrapExpect int
	// ReconnectTimeout is how long a failed member stays in the catalog.
	ReconnectTimeout time.Duration
	// ReconcileInterval is how often the leader reconciles every member
	// (reaping, autopilot); 0 means DefaultReconcileInterval.
	ReconcileInterval time.Duration
	// CleanupDeadServers, ServerStabilizationTime and MinQuorum are
	// autopilot's settings.
	CleanupDeadServers      bool
	ServerStabilizationTime time.Duration
	MinQuorum               int
	// ACL configures ACLs (the leader creates the built-ins).
	ACL ACLConfig
	// Logger is the server's logger; nil discards.
	Logger hclog.Logger
	// Clock decides every timer of the server's own logic (staleness,
	// member reaping, session TTLs, the state store's timestamps); nil
	// means clock.New(). Raft keeps its own real-time timers.
	Clock clock.Clock
	// ConnectEnabled (connect.enabled) makes the leader create the CA's
	// first root; CAConfig is the configuration it uses for it.
	ConnectEnabled bool
	CAConfig       connect.Config
	// ClusterID is the cluster ID the first leader stores; empty makes
	// it a random UUID.
	ClusterID string
	// TLS is tls.internal_rpc: with a certificate the server port accepts
	// TLS connections, and with VerifyIncoming it accepts only those.
	// nil: plaintext only.
	TLS *tlsconfig.Configurator
	// TLSOutgoing makes the server dial other servers (Raft and the RPC)
	// inside TLS, with TLS's certificate and checks.
	TLSOutgoing bool
	// AutoEncryptAllowTLS (auto_encrypt.allow_tls) makes the server sign
	// client agents' certificates with the Connect CA and accept them.
	AutoEncryptAllowTLS bool

	// Federation (federation.go, replication.go). WAN is the WAN pool of
	// the servers of every datacenter; nil runs without federation.
	WAN *gossip.Pool
	// PrimaryDatacenter is the one writer of global state (ACL policies,
	// roles, global tokens, config entries); empty means Datacenter.
	PrimaryDatacenter string
	// ACLTokenReplication replicates global tokens to a secondary
	// (acl.enable_token_replication).
	ACLTokenReplication bool
	// ACLReplicationToken is the token replication reads the primary with
	// (acl.tokens.replication).
	ACLReplicationToken string
	// ReplicationMinInterval bounds how often a replication loop asks the
	// primary (its rate); 0 means DefaultReplicationMinInterval.
	ReplicationMinInterval time.Duration
}

// DefaultConfig returns the defaults of a server.
func DefaultConfig() *Config {
	return &Config{
		Datacenter:        "dc1",
		RaftMultiplier:    5,
		SnapshotThreshold: 16384,
		SnapshotInterval:  120 * time.Second,
		TrailingLogs:      10240,
		HoldTimeout:       DefaultHoldTimeout,
		ReconnectTimeout:  DefaultReconnectTimeout,
		ReconcileInterval: DefaultReconcileInterval,

		RPCHandshakeTimeout:  5 * time.Second,
		RPCMaxConnsPerClient: 100,
		RestoreMinLimit:      defaultRestoreMinLimit,
		RestoreLimitFactor:   defaultRestoreLimitFactor,

		CleanupDeadServers:      true,
		ServerStabilizationTime: 10 * time.Second,

		ConnectEnabled: true,
	}
}

// Server is one Tribune server.
type Server struct {
	config *Config
	logger hclog.Logger
	clock  clock.Clock
	store  *catalog.Store
	fsm    *notifyFSM

	raft *raft.Raft
	logs raft.LogStore
	// logStore is the backend of the log on disk; "" in memory.
	logStore  string
	transport raft.Transport

	// leaderReady is set once this leader's FSM holds every entry of the
	// log as it was when leadership began; until then it serves no reads,
	// which could be as stale as the entries it has yet to apply.
	leaderReady atomic.Bool
	grpc        *grpc.Server
	pool        *connPool
	closers     []func() error
	// autoEncrypt serves auto_encrypt.allow_tls; nil when it is off.
	autoEncrypt *autoEncrypt
	// rpcConns counts the server port's connections per source IP.
	rpcConns *connLimiter
	// restoreMu lets one snapshot restore run at a time.
	restoreMu sync.Mutex

	verifyCh chan *verifyReq
	// readIndexRounds and readIndexReads count the leadership rounds of
	// consistent reads and the reads they took.
	readIndexRounds atomic.Uint64
	readIndexReads  atomic.Uint64

	// acls resolves the tokens of RPCs from the local store (aclcheck.go);
	// nil with ACLs off.
	acls *acl.CachingResolver

	// sessionTTL expires sessions whose TTL ran out; it runs on the leader.
	sessionTTL *sessionTimers

	reconcileCh  chan gossip.Member
	bootstrapped atomic.Bool
	// failed remembers since when each failed member has been failed.
	failed *failedMembers

	// router knows the other datacenters (nil without a WAN pool);
	// replication is the secondary leader's replication state.
	router      *federation.Router
	replication *replicationState

	started time.Time
	// commits tracks the commit indexes the leader announced that the
	// FSM has yet to apply (staleness.go).
	commits    commitTracker
	shutdownCh chan struct{}
	// leaderStopped is closed when monitorLeadership returned: the
	// leader's routines no longer wait on Raft futures.
	leaderStopped chan struct{}
	wg            sync.WaitGroup
	closeOnce     sync.Once
}

// New starts a server: it opens the Raft stores, starts Raft and, when
// configured, bootstraps a single-server cluster.
func New(cfg *Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.NodeID == "" {
		cfg.NodeID = cfg.NodeName
	}
	if cfg.RaftMultiplier <= 0 {
		cfg.RaftMultiplier = 1
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = DefaultReconnectTimeout
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.RPCHandshakeTimeout <= 0 {
		cfg.RPCHandshakeTimeout = 5 * time.Second
	}
	if cfg.RestoreMinLimit <= 0 {
		cfg.RestoreMinLimit = defaultRestoreMinLimit
	}
	if cfg.RestoreLimitFactor <= 0 {
		cfg.RestoreLimitFactor = defaultRestoreLimitFactor
	}
	s := &Server{
		config:      cfg,
		logger:      cfg.Logger.Named("server"),
		clock:       cfg.Clock,
		store:       catalog.NewStore(cfg.Clock),
		verifyCh:    make(chan *verifyReq, 4096),
		pool:        newConnPool(cfg.Dial),
		reconcileCh: make(chan gossip.Member, 1024),
		failed:      newFailedMembers(cfg.Clock),
		started:     cfg.Clock.Now(),
		shutdownCh:  make(chan struct{}),
		rpcConns:    newConnLimiter(cfg.RPCMaxConnsPerClient),
	}
	if cfg.TLSOutgoing && cfg.TLS != nil {
		s.pool.tls = portTLS{conf: cfg.TLS, logger: s.logger.Named("rpc")}
	}
	s.fsm = newNotifyFSM(catalog.NewFSM(s.store, s.logger.Named("fsm")))
	s.fsm.onRestored = func() {
		// A snapshot from the leader holds everything up to its index.
		if idx := s.commits.restored(s.clock.Now()); idx > 0 {
			s.fsm.last.Store(idx)
		}
	}
	s.sessionTTL = newSessionTimers(s)
	s.pool.token = cfg.ACL.AgentToken
	s.startACLResolver()
	s.setupFederation()
	if err := s.setupRaft(); err != nil {
		s.closeAll()
		close(s.shutdownCh)
		s.wg.Wait()
		return nil, err
	}
	s.wg.Add(2)
	go s.verifyLoop()
	s.leaderStopped = make(chan struct{})
	go s.monitorLeadership()
	if cfg.SnapshotThreshold > 0 {
		s.wg.Add(1)
		go s.snapshotTrigger()
	}
	if cfg.Gossip != nil {
		s.wg.Add(1)
		go s.memberLoop()
	}
	if cfg.WAN != nil {
		s.wg.Add(1)
		go s.wanLoop()
	}
	return s, nil
}

func (s *Server) setupRaft() error {
	cfg := s.config
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = s.logger.Named("raft")
	m := time.Duration(cfg.RaftMultiplier)
	// Consul's per-multiplier baseline: 1s heartbeat/election, 500ms lease
	// (then scaled). We scale a tighter base so that failover is fast.
	rc.HeartbeatTimeout = 200 * time.Millisecond * m
	rc.ElectionTimeout = 200 * time.Millisecond * m
	rc.LeaderLeaseTimeout = 100 * time.Millisecond * m
	rc.CommitTimeout = 5 * time.Millisecond
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = false

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		st := raft.NewInmemStore()
		logs, stable = st, st
		snaps = raft.NewInmemSnapshotStore()
	} else {
		dir := filepath.Join(cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create raft dir: %w", err)
		}
		ls, err := openLogStore(dir, cfg.LogStore, cfg.WALSegmentSize, s.logger.Named("raft"))
		if err != nil {
			return err
		}
		s.closers = append(s.closers, ls.close)
		s.logStore = ls.backend
		logs, stable = ls.logs, ls.stable
		if !cfg.DisableLogCache {
			cache, err := raft.NewLogCache(512, ls.logs)
			if err != nil {
				return fmt.Errorf("raft log cache: %w", err)
			}
			logs = cache
		}
		fss, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, s.logger.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("open snapshot store: %w", err)
		}
		snaps = fss
	}

	advertise, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
	if err != nil {
		return fmt.Errorf("resolve advertise address %q: %w", cfg.AdvertiseAddr, err)
	}
	ln := cfg.Listener
	if ln == nil {
		tcpLn, err := net.Listen("tcp", cfg.RPCAddr)
		if err != nil {
			return fmt.Errorf("server port %s: %w", cfg.RPCAddr, err)
		}
		// A failed Accept (EMFILE) is retried with backoff: it must not end
		// the port (Raft and the RPC) for good.
		ln = listen.Retry(tcpLn, nil, s.logger.Named("rpc"))
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && advertise.Port == 0 {
		advertise.Port = tcp.Port
		cfg.AdvertiseAddr = advertise.String()
	}
	dial := cfg.Dial
	if dial == nil {
		dial = dialTCP
	}
	raftL := &raftLayer{chanListener: newChanListener(ln.Addr()), advertise: advertise, dial: dial, tls: s.pool.tls}
	rpcL := newChanListener(ln.Addr())
	s.closers = append(s.closers, ln.Close, raftL.Close, rpcL.Close)
	s.autoEncrypt = s.newAutoEncrypt(ln.Addr())
	s.wg.Add(1)
	go s.serveMux(ln, raftL.chanListener, rpcL)
	// The RPC is served only once Raft exists (below): a peer's Status
	// call must never see a half-built server.
	s.grpc = s.newRPCServer()
	netTrans := raft.NewNetworkTransportWithLogger(raftL, 5, 10*time.Second, s.logger.Named("raft.transport"))
	s.closers = append(s.closers, netTrans.Close)
	s.wg.Add(1)
	trans := newObservedTransport(netTrans, s.observeRPC, s.shutdownCh, s.wg.Done)
	s.transport = trans

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			return fmt.Errorf("check raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter,
			}}}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, conf); err != nil {
				return fmt.Errorf("bootstrap raft: %w", err)
			}
		}
	}
	s.logs = logs
	r, err := raft.NewRaft(rc, s.fsm, logs, stable, snaps, trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	// A snapshot restored at start holds everything up to its index.
	for {
		last, applied := s.fsm.last.Load(), r.AppliedIndex()
		if applied <= last || s.fsm.last.CompareAndSwap(last, applied) {
			break
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.grpc.Serve(rpcL)
	}()
	s.serveAutoEncrypt()
	return nil
}

// Store returns the server's state store (reads only).
func (s *Server) Store() *catalog.Store { return s.store }

// AppliedIndex returns the index of the last entry the FSM has applied.
func (s *Server) AppliedIndex() uint64 { return s.fsm.last.Load() }

// Raft returns the server's Raft instance.
func (s *Server) Raft() *raft.Raft { return s.raft }

// IsLeader reports whether this server is the Raft leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's Raft address, or "" when none is known.
func (s *Server) Leader() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// Peers returns the Raft addresses of the voting servers.
func (s *Server) Peers() ([]string, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, string(srv.Address))
		}
	}
	return out, nil
}

// WaitForLeader blocks until a leader is known or ctx ends.
func (s *Server) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if s.Leader() != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w", ErrNoLeader)
		case <-s.shutdownCh:
			return ErrShutdown
		case <-t.C:
		}
	}
}

// Apply commits one command through Raft and returns the FSM's response:
// error for catalog and session writes, catalog.KVResult for KV writes,
// catalog.TxnResponse for transactions. Concurrent calls are batched into
// Raft appends by the Raft library (BatchApplyCh).
func (s *Server) Apply(ctx context.Context, t catalog.CommandType, body any) (res any, err error) {
	defer func() { countRPC(false, responseErr(res, err)) }()
	buf, err := catalog.Encode(t, body)
	if err != nil {
		return nil, err
	}
	return s.ApplyRaw(ctx, buf)
}

// ApplyRaw commits an already encoded command. While there is no leader it
// waits up to the hold timeout for one; a forwarded write is sent again
// only when it provably never left (retryableWrite). The command is decoded
// and validated first (catalog.ValidateCommand): a malformed one is refused
// with an error wrapping catalog.ErrBadCommand and never reaches Raft.
func (s *Server) ApplyRaw(ctx context.Context, buf []byte) (any, error) {
	cmd, err := catalog.ValidateCommand(buf)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	// A write for another datacenter, or of global state in a secondary,
	// is checked where it is applied.
	if dc := s.applyTarget(ctx, cmd); dc != "" {
		return s.applyElsewhere(ctx, dc, buf, cmd)
	}
	deadline := s.clock.Now().Add(s.config.HoldTimeout)
	// gRPC deadlines are in real time.
	rpcDeadline := time.Now().Add(s.config.HoldTimeout)
	var res any
	err = holdRetry(ctx, s.clock, s.config.HoldTimeout, s.shutdownCh, retryableWrite, func() error {
		var err error
		if s.IsLeader() {
			// Checked where it is applied, against the leader's state:
			// a follower's may not hold yet the token that was just
			// created (a forwarded write is checked by the leader).
			if err := s.authorizeCommand(ctx, cmd); err != nil {
				return err
			}
			res, err = s.applyLocal(ctx, buf, cmd, deadline)
			return err
		}
		leader := s.Leader()
		if leader == "" {
			return ErrNoLeader
		}
		// A request held by a broken link must not outlive the hold.
		fctx, cancel := context.WithDeadline(ctx, rpcDeadline)
		defer cancel()
		res, err = s.forwardApply(fctx, leader, buf)
		if err != nil && retryableWrite(err) {
			s.logger.Debug("forward to leader failed, retrying", "leader", leader, "error", err)
		}
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		return nil, noLeaderOnExpiry(err)
	}
	return res, nil
}

// applyLocal proposes buf to Raft on the leader, waiting at most until
// deadline (or ctx's deadline) for it to commit.
func (s *Server) applyLocal(ctx context.Context, buf []byte, cmd *catalog.Command, deadline time.Time) (any, error) {
	if s.lockDelayed(cmd) {
		return catalog.KVResult{OK: false}, nil
	}
	// Only the leader decides a login and a bootstrap reset, and proposes
	// what they amount to (server/acl_login.go).
	switch cmd.Type {
	case catalog.CmdACLLogin:
		var err error
		if buf, err = s.resolveLogin(cmd.ACLLogin); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
	case catalog.CmdACLBootstrap:
		var err error
		if buf, err = s.withBootstrapReset(cmd.ACLBootstrap); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
	}
	timeout := deadline.Sub(s.clock.Now())
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	start := time.Now()
	// The FSM applies cmd as decoded here instead of decoding buf again
	// (not when buf was replaced above: it decodes the new one itself).
	if cmd.Type != catalog.CmdACLLogin && cmd.Type != catalog.CmdACLBootstrap {
		defer s.fsm.inner.Prepared(buf, cmd)()
	}
	f := s.raft.Apply(buf, max(timeout, time.Millisecond))
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, fmt.Errorf("apply: timed out: %w", err)
		}
		// raft.ErrNotLeader and ErrLeadershipLost included: the entry
		// may or may not commit, so the caller must treat the outcome
		// as unknown, as Consul does; it is never retried.
		return nil, fmt.Errorf("apply: %w", err)
	}
	measureApply(buf, start)
	return f.Response(), nil
}

// Read runs a catalog read in its consistency mode, blocking when
// MinQueryIndex is set until the result's index passes it or the wait ends.
func (s *Server) Read(ctx context.Context, req *catalog.ReadRequest) (resp *catalog.ReadResponse, err error) {
	defer func() { countRPC(req.Options.MinQueryIndex > 0, err) }()
	ctx = withReadToken(ctx, req)
	// A read of another datacenter is checked there.
	if s.remoteDC(req.Options.Datacenter) {
		return s.readDC(ctx, req)
	}
	if s.resolveInPrimary(req) {
		inPrimary := *req
		inPrimary.Options.Datacenter = s.PrimaryDatacenter()
		return s.readDC(ctx, &inPrimary)
	}
	// A read only the leader may answer is checked and filtered there,
	// against the leader's state: this follower's may not hold yet what
	// the check depends on (a token, or the prepared query whose token
	// the read runs with, written a moment ago).
	if s.needLeader(&req.Options) && !s.IsLeader() {
		return s.forwardRead(ctx, req)
	}
	// A read made with a token (WithToken; every RPC) is checked and its
	// result filtered for it (aclcheck.go).
	authz, err := s.authorizeRead(ctx, req)
	if err != nil {
		return nil, err
	}
	resp, err = s.read(ctx, req)
	if err == nil {
		filterRead(authz, req, resp)
	}
	return resp, err
}

func (s *Server) read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	opts := &req.Options
	needLeader := s.needLeader(opts)
	if needLeader && !s.IsLeader() {
		// Leadership moved since Read checked.
		return s.forwardRead(ctx, req)
	}
	if needLeader || s.IsLeader() {
		// A leader answers every read as fresh (LastContact 0): it must
		// first hold the log it inherited.
		if err := s.waitLeaderReady(ctx); err != nil {
			return nil, err
		}
	}
	if opts.RequireConsistent {
		if err := s.consistentRead(ctx); err != nil {
			return nil, err
		}
	}
	return s.blockingRead(ctx, req)
}

// needLeader reports whether a read with opts must be answered by the
// leader: every read but a stale one, and a stale one this server is too
// far behind for (max_stale).
func (s *Server) needLeader(opts *catalog.QueryOptions) bool {
	if !opts.AllowStale || opts.RequireConsistent {
		return true
	}
	return opts.MaxStaleDuration > 0 && !s.IsLeader() && s.staleness() > opts.MaxStaleDuration
}

func (s *Server) blockingRead(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	opts := &req.Options
	var cancel context.CancelFunc
	if opts.MinQueryIndex > 0 {
		wait := opts.MaxQueryTime
		if wait <= 0 {
			wait = DefaultQueryTime
		}
		if wait > MaxQueryTime {
			wait = MaxQueryTime
		}
		// Jitter spreads the wake-ups of many watchers that started
		// together, as Consul does (up to wait/16).
		wait += time.Duration(rand.Int64N(int64(wait/16) + 1))
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	for {
		// The staleness is measured before the read: the data read after
		// it can only be fresher.
		meta := s.queryMeta()
		// A read that does not block watches nothing (a nil WatchSet
		// takes no channels).
		var ws memdb.WatchSet
		if opts.MinQueryIndex > 0 {
			ws = memdb.NewWatchSet()
			ws.Add(s.store.AbandonCh())
		}
		idx, resp, err := s.store.Execute(ws, req)
		if err != nil {
			return nil, err
		}
		meta.Index = idx
		if opts.MinQueryIndex == 0 || idx > opts.MinQueryIndex {
			resp.Meta = meta
			return resp, nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			// The wait ended: answer with what is there now.
			select {
			case <-s.shutdownCh:
				return nil, ErrShutdown
			default:
			}
			// Nothing the query read has changed since: its data is the
			// store's now, as stale as the store is now.
			resp.Meta = s.queryMeta()
			resp.Meta.Index = idx
			return resp, nil
		}
	}
}

// queryMeta returns the meta of a read served now, without its index.
func (s *Server) queryMeta() catalog.QueryMeta {
	if s.IsLeader() {
		return catalog.QueryMeta{KnownLeader: true}
	}
	return catalog.QueryMeta{KnownLeader: s.Leader() != "", LastContact: s.staleness()}
}

// Shutdown stops Raft and every goroutine of the server and closes its
// stores. It is safe to call more than once.
func (s *Server) Shutdown() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.shutdownCh)
		if s.leaderStopped != nil {
			// The leader's routines first, while Raft still answers
			// their futures: hashicorp/raft never answers an apply still
			// queued when it shuts down, and a routine waiting on one
			// would hang this Shutdown. Bounded: a leader that cannot
			// commit steps down within its lease and fails the future.
			select {
			case <-s.leaderStopped:
			case <-time.After(s.config.HoldTimeout + 5*time.Second):
				s.logger.Warn("leader routines did not stop before Raft shutdown")
			}
		}
		if s.raft != nil {
			if e := s.raft.Shutdown().Error(); e != nil {
				err = fmt.Errorf("raft shutdown: %w", e)
			}
		}
		if s.grpc != nil {
			s.grpc.Stop()
		}
		s.closeAll()
		s.pool.close()
		s.wg.Wait()
	})
	return err
}

// lockDelayed reports whether cmd is a lock acquire on a key in its lock
// delay. Only the leader decides this, before proposing, so that the FSM
// stays independent of the servers' clocks.
func (s *Server) lockDelayed(cmd *catalog.Command) bool {
	key, ok := cmd.IsLockAcquire()
	return ok && s.store.LockDelayed(key)
}

// SkippedEntries returns how many Raft log entries this server's FSM could
// not decode and skipped (a metric; see catalog.FSM.Skipped).
func (s *Server) SkippedEntries() uint64 { return s.fsm.inner.Skipped() }

func splitHostPort(addr string) (string, string, error) { return net.SplitHostPort(addr) }

func (s *Server) closeAll() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			s.logger.Warn("close", "error", err)
		}
	}
	s.closers = nil
}
