package agent

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"time"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/server"
)

// This file is the client side of auto_encrypt { tls = true }: a client
// agent that has only the CA file asks the servers to sign its certificate
// (for spiffe://<trust-domain>/agent/client/dc/<dc>/id/<node>, by the
// Connect CA) and uses it for RPC and HTTPS. It renews the certificate
// between half and three quarters of its lifetime.

// Bounds of the wait between attempts to get a certificate.
const (
	autoEncryptMinBackoff = 250 * time.Millisecond
	autoEncryptMaxBackoff = 10 * time.Second
	autoEncryptCallLimit  = 10 * time.Second
)

// autoEncryptOn reports whether this agent gets its certificate from the
// servers.
func (a *Agent) autoEncryptOn() bool {
	return a.cfg.AutoEncrypt.TLS && !a.cfg.Server && a.tls.rpc != nil
}

// startAutoEncrypt starts the loop that gets and renews the certificate;
// ready is closed once the first one is in use.
func (a *Agent) startAutoEncrypt() {
	a.autoCertReady = make(chan struct{})
	if !a.autoEncryptOn() {
		close(a.autoCertReady)
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runAutoEncrypt(a.ctx)
	}()
}

// waitAutoCert blocks until the agent has its certificate (at once
// without auto_encrypt) and reports false if the agent stopped first.
func (a *Agent) waitAutoCert() bool {
	select {
	case <-a.autoCertReady:
		return true
	case <-a.shutdownCh:
		return false
	}
}

func (a *Agent) runAutoEncrypt(ctx context.Context) {
	logger := a.logger.Named("auto_encrypt")
	key, keyPEM, err := connect.GenerateKey("ec", 256)
	if err != nil {
		logger.Error("cannot make a key; the agent cannot reach the servers", "error", err)
		return
	}
	csr, err := a.autoEncryptCSR(key)
	if err != nil {
		logger.Error("cannot make a CSR; the agent cannot reach the servers", "error", err)
		return
	}
	first := true
	for {
		resp := a.autoEncryptSign(ctx, csr)
		if resp == nil {
			return // stopped
		}
		cert, err := tls.X509KeyPair([]byte(resp.CertChain), []byte(keyPEM))
		if err != nil {
			logger.Error("the servers' certificate does not match the key", "error", err)
			return
		}
		a.tls.rpc.SetAutoCertificate(cert)
		if a.tls.https != nil {
			a.tls.https.SetAutoCertificate(cert)
		}
		if a.tls.grpc != nil && a.tls.grpc.Settings().AutoCert {
			a.tls.grpc.SetAutoCertificate(cert)
		}
		if a.client != nil {
			// Connections that failed without a certificate may be
			// backing off: start afresh, letting the requests in
			// flight finish (closing would fail them, writes included).
			a.client.Renew()
		}
		leaf := resp.IssuedCert
		logger.Info("agent certificate obtained from the servers", "valid_before", leaf.ValidBefore)
		if first {
			close(a.autoCertReady)
			first = false
		}
		renew := connect.RenewAt(leaf.ValidAfter, leaf.ValidBefore, 0.5+rand.Float64()/4)
		t := time.NewTimer(time.Until(renew))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// autoEncryptCSR makes the CSR of this agent's identity; the servers fill
// in the trust domain.
func (a *Agent) autoEncryptCSR(key any) (string, error) {
	id := connect.ID{Kind: connect.KindAgent, TrustDomain: connect.AgentCSRTrustDomain, Datacenter: a.cfg.Datacenter, Node: a.cfg.NodeName}
	tmpl := &x509.CertificateRequest{
		URIs:        []*url.URL{id.URI()},
		DNSNames:    append([]string{"localhost"}, a.cfg.AutoEncrypt.DNSSAN...),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	for _, ip := range a.cfg.AutoEncrypt.IPSAN {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(crand.Reader, tmpl, key)
	if err != nil {
		return "", fmt.Errorf("auto_encrypt CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// autoEncryptSign asks the known servers in turn until one signs csr,
// backing off between rounds; nil when ctx ends first.
func (a *Agent) autoEncryptSign(ctx context.Context, csr string) *server.AutoEncryptSignResponse {
	logger := a.logger.Named("auto_encrypt")
	req := &server.AutoEncryptSignRequest{Datacenter: a.cfg.Datacenter, Node: a.cfg.NodeName, CSR: csr, Token: a.agentToken()}
	backoff := autoEncryptMinBackoff
	for {
		servers := a.serverAddrs()
		rand.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })
		for _, addr := range servers {
			cctx, cancel := context.WithTimeout(ctx, autoEncryptCallLimit)
			resp, err := server.AutoEncryptSign(cctx, nil, a.tls.rpc, logger, addr, req)
			cancel()
			if err == nil && resp.IssuedCert != nil {
				return resp
			}
			if ctx.Err() != nil {
				return nil
			}
			logger.Warn("server did not sign the agent certificate; trying another", "server", addr, "error", err)
		}
		if len(servers) == 0 {
			logger.Debug("no server known yet to sign the agent certificate")
		}
		clock.Sleep(ctx, backoff)
		if ctx.Err() != nil {
			return nil
		}
		backoff = min(2*backoff, autoEncryptMaxBackoff)
	}
}
