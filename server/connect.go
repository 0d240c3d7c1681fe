package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
)

// ErrConnectDisabled is returned by the CA calls when Connect is off or its
// CA has no active root yet. Its text is Consul's.
var ErrConnectDisabled = errors.New("Connect must be enabled in order to use this endpoint")

// CASetConfigRequest changes the CA configuration
// (PUT /v1/connect/ca/configuration). A new key type or size rotates the
// root: a new root is made and, unless ForceWithoutCrossSigning, the old
// root cross-signs it so that leaves of either verify during the switch.
type CASetConfigRequest struct {
	Config                   catalog.CAConfiguration
	ForceWithoutCrossSigning bool
	// RootCert and PrivateKey, both or neither, are an operator's own CA
	// (the built-in provider's settings of those names): it becomes the
	// active root unless it already is.
	RootCert   string `json:",omitempty"`
	PrivateKey string `json:",omitempty"`
}

// SignLeafRequest asks a server to sign a leaf certificate for a service of
// this datacenter from the agent's CSR. The caller has authorized
// service:write on Service.
type SignLeafRequest struct {
	Service string
	CSR     string
}

// SignLeafResponse is a signed leaf and the root that signed it.
type SignLeafResponse struct {
	Error *WireError `json:",omitempty"`
	Leaf  *connect.Leaf
	// ServiceURI is the leaf's SPIFFE ID; RootID the signing root's ID;
	// RootsIndex the index of the roots it was signed under.
	ServiceURI string
	RootID     string
	RootsIndex uint64
}

// ConnectResponse carries the error of a Connect call without a result.
type ConnectResponse struct {
	Error *WireError `json:",omitempty"`
}

// connectMethods are the Connect RPC methods, served on the server's RPC
// service beside the core ones.
var connectMethods = []grpc.MethodDesc{
	{MethodName: "ConnectCASetConfig", Handler: serverUnary((*Server).rpcCASetConfig)},
	{MethodName: "ConnectSignLeaf", Handler: serverUnary((*Server).rpcSignLeaf)},
}

func serverUnary[Req any, Resp any](call func(*Server, context.Context, *Req) (*Resp, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		return call(srv.(*Server), withIncomingToken(ctx), in)
	}
}

func (s *Server) rpcCASetConfig(ctx context.Context, req *CASetConfigRequest) (*ConnectResponse, error) {
	if err := s.authorizeWith(ctx, func(c checker) error { return c.need(c.authz.OperatorWrite(), "operator:write", "") }); err != nil {
		return &ConnectResponse{Error: toWire(err)}, nil
	}
	return &ConnectResponse{Error: toWire(s.CASetConfig(ctx, req))}, nil
}

func (s *Server) rpcSignLeaf(ctx context.Context, req *SignLeafRequest) (*SignLeafResponse, error) {
	if err := s.authorizeWith(ctx, func(c checker) error {
		return c.need(c.authz.ServiceWrite(req.Service), "service:write", req.Service)
	}); err != nil {
		return &SignLeafResponse{Error: toWire(err)}, nil
	}
	resp, err := s.SignLeaf(ctx, req)
	if err != nil {
		return &SignLeafResponse{Error: toWire(err)}, nil
	}
	return resp, nil
}

// caNow is the time the CA signs at.
func (s *Server) caNow() time.Time { return s.clock.Now() }

// onLeader runs local on this server when it leads, else sends method to
// the leader, waiting up to the hold timeout for one.
func (s *Server) onLeader(ctx context.Context, method string, req, resp any, local func() error) error {
	deadline := time.Now().Add(s.config.HoldTimeout)
	for {
		if s.IsLeader() {
			return local()
		}
		if leader := s.Leader(); leader != "" {
			err := s.pool.call(ctx, leader, method, req, resp)
			if err == nil || !retryableWrite(err) {
				return err
			}
		}
		if time.Now().After(deadline) {
			return ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", method, ctx.Err())
		case <-s.shutdownCh:
			return ErrShutdown
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// caConfigOf turns the stored configuration into the CA's, defaults filled.
func caConfigOf(c *catalog.CAConfiguration) connect.Config {
	return connect.Config{
		PrivateKeyType: c.PrivateKeyType, PrivateKeyBits: c.PrivateKeyBits,
		LeafCertTTL: c.LeafCertTTL, RootCertTTL: c.RootCertTTL, IntermediateCertTTL: c.IntermediateCertTTL,
	}.WithDefaults()
}

// storedCAConfig is the configuration to store for cfg.
func storedCAConfig(clusterID string, cfg connect.Config) *catalog.CAConfiguration {
	return &catalog.CAConfiguration{
		ClusterID: clusterID, Provider: "consul",
		PrivateKeyType: cfg.PrivateKeyType, PrivateKeyBits: cfg.PrivateKeyBits,
		LeafCertTTL: cfg.LeafCertTTL, RootCertTTL: cfg.RootCertTTL, IntermediateCertTTL: cfg.IntermediateCertTTL,
	}
}

func activeRoot(roots []*catalog.CARoot) *catalog.CARoot {
	for _, r := range roots {
		if r.Active {
			return r
		}
	}
	return nil
}

// newClusterID returns a random UUID.
func newClusterID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("cluster ID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// applyCA commits a command whose FSM result is an error or nil.
func (s *Server) applyCA(ctx context.Context, t catalog.CommandType, body any) error {
	res, err := s.Apply(ctx, t, body)
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok && e != nil {
		return e
	}
	return nil
}

// leaderConnect runs at the start of every leadership: it creates the
// cluster ID once and, with Connect enabled, the CA's first root. It
// retries until it succeeds or ctx ends.
func (s *Server) leaderConnect(ctx context.Context) {
	if s.secondary() {
		// A secondary's CA is the primary's roots and an intermediate
		// (replicateCA).
		return
	}
	backoff := 100 * time.Millisecond
	for {
		err := s.initCA(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.logger.Warn("CA initialisation failed, retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Server) initCA(ctx context.Context) error {
	_, cur, err := s.store.CAConfig(memdb.NewWatchSet())
	if err != nil {
		return err
	}
	if cur == nil || cur.ClusterID == "" {
		id := s.config.ClusterID
		if id == "" {
			if id, err = newClusterID(); err != nil {
				return err
			}
		}
		if err := s.applyCA(ctx, catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetClusterID, ClusterID: id}); err != nil {
			return fmt.Errorf("set cluster ID: %w", err)
		}
	}
	if !s.config.ConnectEnabled {
		return nil
	}
	idx, roots, cur, err := s.store.CARootsWithKeys(memdb.NewWatchSet())
	if err != nil {
		return err
	}
	if activeRoot(roots) != nil {
		return nil
	}
	if cur == nil || cur.ClusterID == "" {
		return errors.New("cluster ID not applied yet")
	}
	cfg := s.config.CAConfig.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("connect.ca_config: %w", err)
	}
	root, err := connect.NewRoot(cfg, connect.TrustDomain(cur.ClusterID), s.caNow())
	if err != nil {
		return err
	}
	err = s.applyCA(ctx, catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, RootsIndex: idx,
		Config: storedCAConfig(cur.ClusterID, cfg), Roots: []*catalog.CARoot{root}})
	if err != nil {
		return fmt.Errorf("store the first root: %w", err)
	}
	s.logger.Info("initialized the Connect CA", "root", root.ID, "trust_domain", connect.TrustDomain(cur.ClusterID))
	return nil
}

// CASetConfig changes the CA configuration on the leader (forwarding to it
// from a follower). A new key type or size rotates the root.
func (s *Server) CASetConfig(ctx context.Context, req *CASetConfigRequest) error {
	var resp ConnectResponse
	if s.secondary() {
		// The primary owns the CA configuration and roots.
		return s.forwardDC(ctx, s.PrimaryDatacenter(), "ConnectCASetConfig", req, &resp, s.config.HoldTimeout, s.config.HoldTimeout/3,
			func() error { return fromWire(resp.Error) })
	}
	err := s.onLeader(ctx, "ConnectCASetConfig", req, &resp, func() error {
		resp.Error = toWire(s.caSetConfigLocked(ctx, req))
		return nil
	})
	if err != nil {
		return err
	}
	return fromWire(resp.Error)
}

func (s *Server) caSetConfigLocked(ctx context.Context, req *CASetConfigRequest) error {
	if !s.config.ConnectEnabled {
		return ErrConnectDisabled
	}
	if req.Config.Provider != "" && req.Config.Provider != "consul" {
		return fmt.Errorf("%w: Provider %q: only the built-in provider \"consul\" is supported", catalog.ErrInvalidRequest, req.Config.Provider)
	}
	idx, roots, cur, err := s.store.CARootsWithKeys(memdb.NewWatchSet())
	if err != nil {
		return err
	}
	old := activeRoot(roots)
	if old == nil || cur == nil {
		return ErrConnectDisabled
	}
	cfg := caConfigOf(&req.Config)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", catalog.ErrInvalidRequest, err)
	}
	next := make([]*catalog.CARoot, 0, len(roots)+1)
	now := s.caNow()
	var root *catalog.CARoot
	switch {
	case (req.RootCert == "") != (req.PrivateKey == ""):
		return fmt.Errorf("%w: RootCert and PrivateKey must be given together", catalog.ErrInvalidRequest)
	case req.RootCert != "":
		provided, err := connect.ProvidedRoot(req.RootCert, req.PrivateKey, now)
		if err != nil {
			return fmt.Errorf("%w: %v", catalog.ErrInvalidRequest, err)
		}
		if provided.ID != old.ID {
			root = provided
		}
	case old.PrivateKeyType != cfg.PrivateKeyType || old.PrivateKeyBits != cfg.PrivateKeyBits:
		if root, err = connect.NewRoot(cfg, connect.TrustDomain(cur.ClusterID), now); err != nil {
			return err
		}
	}
	if root != nil {
		if !req.ForceWithoutCrossSigning {
			cross, err := connect.CrossSign(root, old, now)
			if err != nil {
				return err
			}
			root.IntermediateCerts = []string{cross}
		}
		// Keep the most recent inactive roots so the list stays bounded.
		for _, r := range roots {
			if len(next) >= catalog.MaxCARoots-2 {
				break
			}
			c := *r
			if c.Active {
				c.Active = false
				c.RotatedOutAt = now.UTC()
			}
			next = append(next, &c)
		}
		next = append(next, root)
		s.logger.Info("rotating the Connect CA root", "old", old.ID, "new", root.ID, "cross_signed", !req.ForceWithoutCrossSigning)
	} else {
		next = roots
	}
	stored := storedCAConfig(cur.ClusterID, cfg)
	stored.State = req.Config.State
	if active := activeRoot(next); active != nil && req.RootCert != "" {
		// The key of a provided root decides, so that a later update of
		// other settings does not rotate it away.
		stored.PrivateKeyType, stored.PrivateKeyBits = active.PrivateKeyType, active.PrivateKeyBits
	}
	return s.applyCA(ctx, catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, RootsIndex: idx,
		Config: stored, Roots: next})
}

// SignLeaf signs a service's CSR with the active root. It runs on the
// leader, so that a leaf asked for after a rotation is of the new root.
func (s *Server) SignLeaf(ctx context.Context, req *SignLeafRequest) (*SignLeafResponse, error) {
	return leaderCall(s, ctx, "ConnectSignLeaf", req, func(r *SignLeafResponse) **WireError { return &r.Error },
		func() (*SignLeafResponse, error) { return s.signLeafLocal(req) })
}

// leaderCall runs local on the leader, or sends method to it (onLeader),
// and returns the answer or the error it carries; wireErr points at the
// answer's error field.
func leaderCall[R any](s *Server, ctx context.Context, method string, req any, wireErr func(*R) **WireError, local func() (*R, error)) (*R, error) {
	var resp R
	err := s.onLeader(ctx, method, req, &resp, func() error {
		out, err := local()
		if err != nil {
			*wireErr(&resp) = toWire(err)
			return nil
		}
		resp = *out
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := fromWire(*wireErr(&resp)); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (s *Server) signLeafLocal(req *SignLeafRequest) (*SignLeafResponse, error) {
	if req.Service == "" || len(req.Service) > 256 {
		return nil, fmt.Errorf("%w: service name of %d bytes", catalog.ErrInvalidRequest, len(req.Service))
	}
	idx, roots, cfg, err := s.store.CARootsWithKeys(memdb.NewWatchSet())
	if err != nil {
		return nil, err
	}
	root := activeRoot(roots)
	if root == nil || cfg == nil {
		return nil, ErrConnectDisabled
	}
	id := connect.ServiceID(connect.TrustDomain(cfg.ClusterID), s.config.Datacenter, req.Service)
	leaf, err := connect.SignLeaf(root, req.CSR, id, caConfigOf(cfg).LeafCertTTL, s.caNow())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", catalog.ErrInvalidRequest, err)
	}
	return &SignLeafResponse{Leaf: leaf, ServiceURI: id.String(), RootID: root.ID, RootsIndex: idx}, nil
}

// CASetConfig changes the CA configuration through a server.
func (c *Client) CASetConfig(ctx context.Context, req *CASetConfigRequest) error {
	var resp ConnectResponse
	return c.invoke(ctx, "ConnectCASetConfig", req, &resp, func() error { return fromWire(resp.Error) })
}

// SignLeaf has a server sign a leaf certificate.
func (c *Client) SignLeaf(ctx context.Context, req *SignLeafRequest) (*SignLeafResponse, error) {
	var resp SignLeafResponse
	if err := c.invoke(ctx, "ConnectSignLeaf", req, &resp, func() error { return fromWire(resp.Error) }); err != nil {
		return nil, err
	}
	return &resp, nil
}
