package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/tlsconfig"
)

// connTLSInsecure is the first byte of a TLS connection that carries no
// client certificate (Consul gives it the same byte): a client agent with
// auto_encrypt uses it once, to have its certificate signed. Only the
// AutoEncryptSign method is served on it, and only with
// auto_encrypt.allow_tls.
const connTLSInsecure byte = 0x07

// AutoEncryptSignRequest asks a server to sign a client agent's CSR for
// the agent's identity spiffe://<trust-domain>/agent/client/dc/<dc>/id/<node>
// with the Connect CA (auto_encrypt). Token is the agent's ACL token.
type AutoEncryptSignRequest struct {
	Datacenter string
	Node       string
	CSR        string
	Token      string `json:",omitempty"`
}

// AutoEncryptSignResponse is the signed certificate and the CAs the agent
// needs: ConnectCARoots (which sign its certificate) and ManualCARoots
// (tls.internal_rpc's CA, which signs the servers' certificates).
type AutoEncryptSignResponse struct {
	Error *WireError `json:",omitempty"`
	// IssuedCert is the agent's certificate; CertChain it followed by the
	// signing root's intermediates, as the agent presents it.
	IssuedCert           *connect.Leaf `json:",omitempty"`
	CertChain            string        `json:",omitempty"`
	ConnectCARoots       []string      `json:",omitempty"`
	ManualCARoots        []string      `json:",omitempty"`
	VerifyServerHostname bool
}

// autoEncryptMethods is the one method served on connTLSInsecure
// connections; the main RPC service serves it too (forwarding to the
// leader).
var autoEncryptMethods = []grpc.MethodDesc{
	{MethodName: "AutoEncryptSign", Handler: serverUnary((*Server).rpcAutoEncryptSign)},
}

func (s *Server) rpcAutoEncryptSign(ctx context.Context, req *AutoEncryptSignRequest) (*AutoEncryptSignResponse, error) {
	// The agent proves its identity with its token (sent in the body, as
	// the connection carries no certificate yet): with ACLs on, signing a
	// certificate for a node needs node:write on it, as in Consul.
	if req.Token != "" {
		ctx = WithToken(ctx, req.Token)
	}
	if err := s.authorizeWith(ctx, func(c checker) error {
		return c.need(c.authz.NodeWrite(req.Node), "node:write", req.Node)
	}); err != nil {
		return &AutoEncryptSignResponse{Error: toWire(err)}, nil
	}
	resp, err := s.AutoEncryptSign(ctx, req)
	if err != nil {
		return &AutoEncryptSignResponse{Error: toWire(err)}, nil
	}
	return resp, nil
}

// AutoEncryptSign signs a client agent's CSR with the Connect CA's active
// root. It runs on the leader, like SignLeaf.
func (s *Server) AutoEncryptSign(ctx context.Context, req *AutoEncryptSignRequest) (*AutoEncryptSignResponse, error) {
	if !s.config.AutoEncryptAllowTLS {
		return nil, fmt.Errorf("%w: auto_encrypt.allow_tls is off on this server", catalog.ErrInvalidRequest)
	}
	if req.Datacenter != s.config.Datacenter {
		return nil, fmt.Errorf("%w: datacenter %q, this server is in %q", catalog.ErrInvalidRequest, req.Datacenter, s.config.Datacenter)
	}
	if req.Node == "" || len(req.Node) > 256 || strings.ContainsAny(req.Node, "/?#") {
		return nil, fmt.Errorf("%w: node name %q", catalog.ErrInvalidRequest, req.Node)
	}
	return leaderCall(s, ctx, "AutoEncryptSign", req, func(r *AutoEncryptSignResponse) **WireError { return &r.Error },
		func() (*AutoEncryptSignResponse, error) { return s.autoEncryptSignLocal(req) })
}

func (s *Server) autoEncryptSignLocal(req *AutoEncryptSignRequest) (*AutoEncryptSignResponse, error) {
	_, roots, cfg, err := s.store.CARootsWithKeys(memdb.NewWatchSet())
	if err != nil {
		return nil, err
	}
	root := activeRoot(roots)
	if root == nil || cfg == nil {
		return nil, ErrConnectDisabled
	}
	id := connect.ID{Kind: connect.KindAgent, TrustDomain: connect.TrustDomain(cfg.ClusterID), Datacenter: s.config.Datacenter, Node: req.Node}
	leaf, err := connect.SignLeaf(root, req.CSR, id, caConfigOf(cfg).LeafCertTTL, s.caNow())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", catalog.ErrInvalidRequest, err)
	}
	out := &AutoEncryptSignResponse{IssuedCert: leaf, CertChain: leaf.CertPEM}
	for _, ic := range root.IntermediateCerts {
		out.CertChain += ic
	}
	for _, r := range roots {
		out.ConnectCARoots = append(out.ConnectCARoots, r.RootCert)
	}
	if s.config.TLS != nil {
		out.ManualCARoots = s.config.TLS.CAPEMs()
		out.VerifyServerHostname = s.config.TLS.Settings().VerifyServerHostname
	}
	return out, nil
}

// autoEncrypt is the server side of auto_encrypt.allow_tls: the listener of
// connTLSInsecure connections and the roots index its client CAs follow.
type autoEncrypt struct {
	ln *chanListener
	// rootsIndex is the CA roots' index last given to the TLS
	// configurator as client CAs.
	rootsIndex atomic.Uint64
}

// newAutoEncrypt returns the auto_encrypt state of a server with
// allow_tls, else nil.
func (s *Server) newAutoEncrypt(addr net.Addr) *autoEncrypt {
	if !s.config.AutoEncryptAllowTLS || s.config.TLS == nil {
		return nil
	}
	ae := &autoEncrypt{ln: newChanListener(addr)}
	s.closers = append(s.closers, ae.ln.Close)
	return ae
}

// serveAutoEncrypt serves AutoEncryptSign alone on connTLSInsecure
// connections. It is called once Raft exists.
func (s *Server) serveAutoEncrypt() {
	if s.autoEncrypt == nil {
		return
	}
	g := grpc.NewServer(grpc.ForceServerCodec(jsonCodec{}), grpc.MaxRecvMsgSize(1<<20), grpc.ConnectionTimeout(s.config.RPCHandshakeTimeout))
	desc := rpcServiceDesc
	desc.Methods = autoEncryptMethods
	g.RegisterService(&desc, s)
	s.closers = append(s.closers, func() error { g.Stop(); return nil })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = g.Serve(s.autoEncrypt.ln)
	}()
}

// trustConnectRoots makes client certificates signed by the Connect CA
// acceptable on the server port (auto_encrypt.allow_tls), following root
// rotations. It is called before each TLS handshake; the store read is
// cheap and handshakes are rare (connections are pooled).
func (s *Server) trustConnectRoots() {
	ae := s.autoEncrypt
	if ae == nil {
		return
	}
	idx, roots, _, err := s.store.CARoots(memdb.NewWatchSet())
	if err != nil || idx == ae.rootsIndex.Load() {
		return
	}
	pems := make([]string, 0, len(roots))
	for _, r := range roots {
		pems = append(pems, r.RootCert)
		pems = append(pems, r.IntermediateCerts...)
	}
	s.config.TLS.SetExtraClientCAs(pems)
	ae.rootsIndex.Store(idx)
}

// routeInsecure hands a connTLSInsecure connection, after its handshake
// without a client certificate, to the AutoEncryptSign server.
func (s *Server) routeInsecure(c net.Conn) {
	if s.autoEncrypt == nil {
		s.logger.Warn("refusing auto_encrypt connection on server port: auto_encrypt.allow_tls is off", "remote", c.RemoteAddr())
		c.Close()
		return
	}
	tc := tls.Server(c, noClientCert(s.config.TLS.IncomingConfig()))
	ctx, cancel := context.WithTimeout(context.Background(), s.config.RPCHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.logger.Warn("TLS handshake on server port failed; connection refused", "remote", c.RemoteAddr(), "error", err, "auto_encrypt", true)
		c.Close()
		return
	}
	kind, pc, ok := readKind(tc)
	if !ok || kind != connRPC {
		if ok {
			s.logger.Warn("refusing auto_encrypt connection: only the RPC is served on it", "remote", c.RemoteAddr(), "type", kind)
		}
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.autoEncrypt.ln.push(pc)
}

// noClientCert returns cfg asking for no client certificate.
func noClientCert(cfg *tls.Config) *tls.Config {
	get := cfg.GetConfigForClient
	out := cfg.Clone()
	out.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := get(h)
		if err != nil {
			return nil, err
		}
		c.ClientAuth = tls.NoClientCert
		return c, nil
	}
	return out
}

// AutoEncryptSign asks the server at addr to sign a client agent's CSR,
// over a TLS connection without a client certificate (connTLSInsecure)
// that checks the server's certificate with conf (the agent's CA, and
// server.<dc>.<domain> with verify_server_hostname). dial nil dials TCP.
func AutoEncryptSign(ctx context.Context, dial DialFunc, conf *tlsconfig.Configurator, logger hclog.Logger, addr string, req *AutoEncryptSignRequest) (*AutoEncryptSignResponse, error) {
	if dial == nil {
		dial = dialTCP
	}
	sec := portTLS{conf: conf, logger: logger, first: connTLSInsecure}
	c, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return dialPort(ctx, dial, sec, a, connRPC)
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{})),
	)
	if err != nil {
		return nil, fmt.Errorf("auto_encrypt client for %s: %w", addr, err)
	}
	defer c.Close()
	var resp AutoEncryptSignResponse
	if err := c.Invoke(ctx, "/tribune.Server/AutoEncryptSign", req, &resp); err != nil {
		return nil, fmt.Errorf("auto_encrypt sign at %s: %w", addr, err)
	}
	if err := fromWire(resp.Error); err != nil {
		return nil, fmt.Errorf("auto_encrypt sign at %s: %w", addr, err)
	}
	return &resp, nil
}
