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
	rpc, https, grpc := tlsSettings(cfg)
	for _, p := range []struct {
		name string
		s    tlsconfig.Settings
		dst  **tlsconfig.Configurator
	}{
		{"tls.internal_rpc", rpc, &out.rpc},
		{"tls.https", https, &out.https},
		{"tls.grpc", grpc, &out.grpc},
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

// tlsSettings returns the settings of the RPC, HTTPS and gRPC protocols. A
// client agent with auto_encrypt gets its certificate from the servers
// (autoencrypt.go) for RPC, HTTPS and, with use_auto_cert, gRPC.
func tlsSettings(cfg *config.Config) (rpc, https, grpc tlsconfig.Settings) {
	auto := cfg.AutoEncrypt.TLS && !cfg.Server
	rpc, https, grpc = cfg.TLS.InternalRPC, cfg.TLS.HTTPS, cfg.TLS.GRPC
	rpc.AutoCert, https.AutoCert, grpc.AutoCert = auto, auto, auto && cfg.TLS.GRPCUseAutoCert
	return rpc, https, grpc
}

// reloadTLS reads the certificates and settings of cfg again for every
// protocol that has TLS; later handshakes use them. A protocol without TLS
// at start needs a restart to get it. On error nothing changes.
func (a *Agent) reloadTLS(cfg *config.Config) error {
	rpc, https, grpc := tlsSettings(cfg)
	type step struct {
		name string
		c    *tlsconfig.Configurator
		s    tlsconfig.Settings
	}
	var steps []step
	for _, st := range []step{{"tls.internal_rpc", a.tls.rpc, rpc}, {"tls.https", a.tls.https, https}, {"tls.grpc", a.tls.grpc, grpc}} {
		switch {
		case st.c != nil:
			// Check every file before swapping any.
			if _, err := tlsconfig.New(st.s, cfg.Datacenter, cfg.Domain); err != nil {
				return fmt.Errorf("%s: %w", st.name, err)
			}
			steps = append(steps, st)
		case st.s.Enabled() || st.s.CAFile != "" || st.s.CAPath != "":
			a.logger.Warn("reload: TLS for " + st.name + " was off at start; it needs a restart")
		}
	}
	for _, st := range steps {
		if err := st.c.Reload(st.s); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}
	return nil
}

// clientConfig is the configuration of a client agent's way to the
// servers: inside TLS when the agent dials with TLS.
func (a *Agent) clientConfig() server.ClientConfig {
	cc := server.ClientConfig{Servers: a.serverAddrs, HoldTimeout: a.cfg.RPCHoldTimeout, Logger: a.logger.Named("rpc"), Token: a.agentToken}
	if a.cfg.RPCUsesTLS() {
		cc.TLS = a.tls.rpc
	}
	return cc
}
