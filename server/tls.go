package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/tlsconfig"
)

// connTLS is the first byte of a connection that speaks TLS to the server
// port; after the handshake, the first byte of the encrypted stream is the
// inner type (connRaft, connRPC). Consul gives TLS the same byte.
const connTLS byte = 0x03

// portTLS is how one side dials the server port: in plaintext, or, with
// conf set, wrapped in TLS.
type portTLS struct {
	// conf is tls.internal_rpc; nil dials in plaintext.
	conf *tlsconfig.Configurator
	// logger gets one line per failed handshake, saying why.
	logger hclog.Logger
	// first is the connection's first byte; 0 means connTLS.
	first byte
}

// wrap sends connTLS on c and does the client handshake, bounded by ctx.
// A failed handshake (wrong CA, expired, wrong server name) is logged with
// its cause and c is closed.
func (p portTLS) wrap(ctx context.Context, c net.Conn, addr string) (net.Conn, error) {
	if p.conf == nil {
		return c, nil
	}
	first := p.first
	if first == 0 {
		first = connTLS
	}
	if _, err := c.Write([]byte{first}); err != nil {
		c.Close()
		return nil, fmt.Errorf("server port handshake: %w", err)
	}
	tc := tls.Client(c, p.conf.OutgoingRPCConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		if p.logger != nil {
			p.logger.Warn("TLS handshake with server failed; connection refused", "server", addr, "error", err)
		}
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// tlsRequired reports whether the server port refuses plaintext Raft and
// RPC connections (tls.internal_rpc.verify_incoming).
func (s *Server) tlsRequired() bool {
	return s.config.TLS != nil && s.config.TLS.Settings().VerifyIncoming
}

// acceptTLS does the server side of a connection that sent connTLS; on
// failure it logs why and closes c. The caller set c's deadline.
func (s *Server) acceptTLS(c net.Conn) (net.Conn, bool) {
	if s.config.TLS == nil || !s.config.TLS.Settings().Enabled() {
		s.logger.Warn("refusing TLS connection on server port: tls.internal_rpc has no cert_file and key_file", "remote", c.RemoteAddr())
		c.Close()
		return nil, false
	}
	s.trustConnectRoots()
	tc := tls.Server(c, s.config.TLS.IncomingConfig())
	ctx, cancel := context.WithTimeout(context.Background(), s.config.RPCHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.logger.Warn("TLS handshake on server port failed; connection refused", "remote", c.RemoteAddr(), "error", err)
		c.Close()
		return nil, false
	}
	return tc, true
}

// peerIsServer reports whether a TLS connection may speak Raft: with
// verify_server_hostname its client certificate must be a server's
// (server.<dc>.<domain>), so that a client agent's certificate cannot
// join the Raft group. Without that setting every verified peer may.
func (s *Server) peerIsServer(c net.Conn) bool {
	if s.config.TLS == nil || !s.config.TLS.Settings().VerifyServerHostname {
		return true
	}
	pc, ok := c.(*prefixConn)
	if !ok {
		return false
	}
	tc, ok := pc.Conn.(*tls.Conn)
	if !ok {
		return false
	}
	certs := tc.ConnectionState().PeerCertificates
	return len(certs) > 0 && certs[0].VerifyHostname(s.config.TLS.ServerName()) == nil
}
