package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
)

// Connect across datacenters: the primary's CA roots are the only roots.
// A secondary's leader keeps a copy of them (public) and signs its leaves
// with an intermediate that the primary's active root signed for it; when
// the primary's active root changes, it gets a new intermediate.

// SignIntermediateRequest asks the primary's leader to sign a secondary
// datacenter's intermediate CA.
type SignIntermediateRequest struct {
	Datacenter string
	CSR        string
}

// SignIntermediateResponse is the intermediate certificate and the root
// that signed it.
type SignIntermediateResponse struct {
	Error  *WireError `json:",omitempty"`
	Cert   string
	RootID string
}

// ErrNotPrimary is returned for an operation only the primary datacenter
// serves.
var ErrNotPrimary = errors.New("only the primary datacenter signs intermediates")

func (s *Server) rpcSignIntermediate(ctx context.Context, req *SignIntermediateRequest) (*SignIntermediateResponse, error) {
	// An intermediate CA signs any leaf: only a secondary's leader may ask,
	// with its replication token (operator:write, as in Consul).
	if err := s.authorizeWith(ctx, func(c checker) error { return c.need(c.authz.OperatorWrite(), "operator:write", "") }); err != nil {
		return &SignIntermediateResponse{Error: toWire(err)}, nil
	}
	var resp SignIntermediateResponse
	err := s.onLeader(ctx, "ConnectSignIntermediate", req, &resp, func() error {
		cert, rootID, err := s.signIntermediateLocal(req)
		resp = SignIntermediateResponse{Error: toWire(err), Cert: cert, RootID: rootID}
		return nil
	})
	if err != nil {
		return &SignIntermediateResponse{Error: toWire(err)}, nil
	}
	return &resp, nil
}

func (s *Server) signIntermediateLocal(req *SignIntermediateRequest) (string, string, error) {
	if s.secondary() {
		return "", "", ErrNotPrimary
	}
	_, roots, cfg, err := s.store.CARootsWithKeys(memdb.NewWatchSet())
	if err != nil {
		return "", "", err
	}
	root := activeRoot(roots)
	if root == nil || cfg == nil {
		return "", "", ErrConnectDisabled
	}
	cert, err := connect.SignIntermediate(root, req.CSR, connect.TrustDomain(cfg.ClusterID), caConfigOf(cfg).IntermediateCertTTL, s.caNow())
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", catalog.ErrInvalidRequest, err)
	}
	s.logger.Info("signed an intermediate CA", "datacenter", req.Datacenter, "root", root.ID)
	return cert, root.ID, nil
}

// replicateCA keeps this secondary's CA on the primary's roots until ctx
// ends: a blocking query on the primary's roots, then a new intermediate
// whenever the primary's active root is not the one this datacenter's
// intermediate chains to.
func (s *Server) replicateCA(ctx context.Context) {
	var index uint64
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		wake := s.replication.wakeCh()
		next, err := s.replicateCARound(ctx, index)
		if err == nil {
			index, backoff = next, 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.logger.Debug("CA replication round failed", "error", err)
		index = 0
		backoff = min(max(2*backoff, replicationMinBackoff), replicationMaxBackoff)
		if !s.pauseOrWake(ctx, wake, backoff) {
			return
		}
	}
}

func (s *Server) replicateCARound(ctx context.Context, index uint64) (uint64, error) {
	primary := s.PrimaryDatacenter()
	remote, err := s.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadCARoots, Options: catalog.QueryOptions{
		Datacenter: primary, Token: s.config.ACLReplicationToken, MinQueryIndex: index, MaxQueryTime: replicationWait,
	}})
	if err != nil {
		return 0, fmt.Errorf("read the primary's roots: %w", err)
	}
	pa := activeRoot(remote.CARoots)
	if pa == nil || remote.CAConfig == nil || remote.CAConfig.ClusterID == "" {
		return remote.Meta.Index, nil // the primary has no CA yet
	}
	idx, local, _, err := s.store.CARootsWithKeys(memdb.NewWatchSet())
	if err != nil {
		return 0, err
	}
	la := activeRoot(local)
	keep := la != nil && la.ID == pa.ID && la.PrivateKey != "" && len(la.IntermediateCerts) > 0 && s.intermediateFresh(la.IntermediateCerts[0])
	if keep && sameRootIDs(local, remote.CARoots) {
		return remote.Meta.Index, nil
	}
	key, inter := "", ""
	if keep {
		key, inter = la.PrivateKey, la.IntermediateCerts[0]
	} else {
		td := connect.TrustDomain(remote.CAConfig.ClusterID)
		csr, k, err := connect.NewIntermediateCSR(caConfigOf(remote.CAConfig), td, s.config.Datacenter)
		if err != nil {
			return 0, err
		}
		var resp SignIntermediateResponse
		err = s.forwardDC(WithToken(ctx, s.config.ACLReplicationToken), primary, "ConnectSignIntermediate", &SignIntermediateRequest{Datacenter: s.config.Datacenter, CSR: csr},
			&resp, s.config.HoldTimeout, s.config.HoldTimeout/3, func() error { return fromWire(resp.Error) })
		if err != nil {
			return 0, fmt.Errorf("sign an intermediate in %s: %w", primary, err)
		}
		if resp.RootID != pa.ID {
			return 0, fmt.Errorf("the primary signed the intermediate with root %s, not %s", resp.RootID, pa.ID)
		}
		key, inter = k, resp.Cert
	}
	roots := make([]*catalog.CARoot, 0, len(remote.CARoots))
	for _, r := range remote.CARoots {
		c := r.Public()
		c.RaftIndex = catalog.RaftIndex{}
		if r.ID == pa.ID {
			c.PrivateKey = key
			c.IntermediateCerts = append([]string{inter}, r.IntermediateCerts...)
		}
		roots = append(roots, c)
		if len(roots) == catalog.MaxCARoots {
			break
		}
	}
	cfg := *remote.CAConfig
	cfg.RaftIndex = catalog.RaftIndex{}
	if err := s.applyCA(ctx, catalog.CmdCA, &catalog.CARequest{Op: catalog.CAOpSetRoots, RootsIndex: idx, Config: &cfg, Roots: roots}); err != nil {
		return 0, fmt.Errorf("store the primary's roots: %w", err)
	}
	if !keep {
		s.logger.Info("Connect CA: new intermediate signed by the primary", "primary", primary, "root", pa.ID)
	}
	return remote.Meta.Index, nil
}

// intermediateFresh reports whether an intermediate is short of half its
// lifetime; past it, the secondary asks for a new one (checked at least
// every replicationWait).
func (s *Server) intermediateFresh(certPEM string) bool {
	c, err := connect.ParseCert(certPEM)
	if err != nil {
		return false
	}
	return s.caNow().Before(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2))
}

func sameRootIDs(a, b []*catalog.CARoot) bool {
	if len(a) != len(b) {
		return false
	}
	ids := make(map[string]bool, len(a))
	for _, r := range a {
		ids[r.ID+fmt.Sprint(r.Active)] = true
	}
	for _, r := range b {
		if !ids[r.ID+fmt.Sprint(r.Active)] {
			return false
		}
	}
	return true
}
