package agent

import (
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// This file owns the gRPC TLS port (ports.grpc_tls, 8503): its listeners,
// its TLS credentials (tls.grpc) and the gRPC server on it. Services are
// put on the server by mountGRPC, the one place that says what the gRPC
// ports serve.

// mountGRPC registers the agent's gRPC services on g: the standard health
// service (grpc.health.v1), and whatever else the gRPC ports serve.
func (a *Agent) mountGRPC(g *grpc.Server) {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	if a.xds != nil {
		// ADS over TLS: the same server as the plaintext port, its
		// streams checked by the same interceptor (grpcTLSOptions).
		a.xds.srv.Register(g)
	}
}

// grpcTLSOptions are the options of the gRPC TLS server beyond its
// credentials: those of xDS when it runs (stream limits, the token
// interceptor).
func (a *Agent) grpcTLSOptions() []grpc.ServerOption {
	if a.xds == nil {
		return nil
	}
	return a.xds.serverOptions()
}

// GRPCTLSCredentials returns the server-side TLS credentials of the gRPC
// TLS port: tls.grpc's certificate, and with its verify_incoming a client
// certificate signed by its CA is required. nil when tls.grpc has none.
func (a *Agent) GRPCTLSCredentials() credentials.TransportCredentials {
	if a.tls == nil || a.tls.grpc == nil || !(a.tls.grpc.Settings().Enabled() || a.tls.grpc.Settings().AutoCert) {
		return nil
	}
	return credentials.NewTLS(a.tls.grpc.IncomingConfig())
}

// grpcTLSListeners listens on ports.grpc_tls at every gRPC address
// (addresses.grpc, else client_addr); none when the port is off.
func (a *Agent) grpcTLSListeners() ([]net.Listener, error) {
	if a.cfg.Ports.GRPCTLS <= 0 {
		return nil, nil
	}
	var out []net.Listener
	for _, host := range orDefaultHosts(a.cfg.Addresses.GRPC, a.cfg.ClientAddrs) {
		ln, addr, err := listenHTTP(host, a.cfg.Ports.GRPCTLS)
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, fmt.Errorf("gRPC TLS listener on %s: %w", addr, err)
		}
		out = append(out, ln)
	}
	return out, nil
}

// startGRPCTLS serves the gRPC services over TLS on ports.grpc_tls. The
// TLS handshake and the HTTP/2 preface must arrive within
// limits.rpc_handshake_timeout, so a silent or plaintext client is dropped.
func (a *Agent) startGRPCTLS() error {
	creds := a.GRPCTLSCredentials()
	if creds == nil || a.cfg.Ports.GRPCTLS <= 0 {
		return nil
	}
	lns, err := a.grpcTLSListeners()
	if err != nil {
		return err
	}
	timeout := a.cfg.Limits.RPCHandshakeTimeout
	if timeout <= 0 {
		timeout = defaultGRPCHandshakeTimeout
	}
	g := grpc.NewServer(append(a.grpcTLSOptions(), grpc.Creds(creds), grpc.ConnectionTimeout(timeout))...)
	a.mountGRPC(g)
	a.httpMu.Lock()
	a.grpcTLS = g
	for _, ln := range lns {
		a.grpcTLSAddrs = append(a.grpcTLSAddrs, ln.Addr())
	}
	a.httpMu.Unlock()
	for _, ln := range lns {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				a.logger.Error("gRPC TLS server stopped", "addr", ln.Addr(), "error", err)
			}
		}()
		a.logger.Info("gRPC TLS listening", "addr", ln.Addr().String())
	}
	return nil
}

// defaultGRPCHandshakeTimeout bounds a gRPC TLS handshake when
// limits.rpc_handshake_timeout is unset.
const defaultGRPCHandshakeTimeout = 5 * time.Second

// stopGRPCTLS stops the gRPC TLS server, closing its streams.
func (a *Agent) stopGRPCTLS() {
	a.httpMu.Lock()
	g := a.grpcTLS
	a.grpcTLS = nil
	a.httpMu.Unlock()
	if g != nil {
		g.Stop()
	}
}

// GRPCTLSAddr returns the address of the first gRPC TLS listener, empty
// when the port is off.
func (a *Agent) GRPCTLSAddr() string {
	a.httpMu.Lock()
	defer a.httpMu.Unlock()
	if len(a.grpcTLSAddrs) == 0 {
		return ""
	}
	return a.grpcTLSAddrs[0].String()
}
