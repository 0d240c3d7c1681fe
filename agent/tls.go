package agent

import (
	"fmt"

	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/tlsconfig"
)

// agentTLS holds the agent's TLS configurators, one per protocol of the tls
// block; a nil one means that protocol has no TLS settings at all.
type agentTLS struct {
	// rpc is tls.internal_rpc: the server port, incoming and outgoing.
	rpc *tlsconfig.Configurator
	// https is tls.https: the HTTPS API listener.
	https *tlsconfig.Configurator
	// grpc is tls.grpc: the gRPC TLS listener.
	grpc *tlsconfig.Configurator
}

// newAgentTLS reads the certificates each protocol names. A protocol whose
// stanza names neither a certificate nor a CA gets no configurator.
func newAgentTLS(cfg *config.Config) (*agentTLS, error) {
	out := &agentTLS{}
	for _, p := range []struct {
		name string
		s    tlsconfig.Settings
		dst  **tlsconfig.Configurator
	}{
		{"tls.internal_rpc", cfg.TLS.InternalRPC, &out.rpc},
		{"tls.https", cfg.TLS.HTTPS, &out.https},
		{"tls.grpc", cfg.TLS.GRPC, &out.grpc},
	} {
		if !p.s.Enabled() && p.s.CAFile == "" && p.s.CAPath == "" {
			continue
		}
		c, err := tlsconfig.New(p.s, cfg.Datacenter, cfg.Domain)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		*p.dst = c
	}
	return out, nil
}

// clientConfig is the configuration of a client agent's way to the
// servers: inside TLS when the agent dials with TLS.
func (a *Agent) clientConfig() server.ClientConfig {
	cc := server.ClientConfig{Servers: a.serverAddrs, HoldTimeout: a.cfg.RPCHoldTimeout, Logger: a.logger.Named("rpc")}
	if a.cfg.RPCUsesTLS() {
		cc.TLS = a.tls.rpc
	}
	return cc
}
