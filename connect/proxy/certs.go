package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
)

// errNotReady is returned by a handshake that starts before the proxy holds
// both its leaf certificate and the CA roots.
var errNotReady = errors.New("the leaf certificate or the CA roots are not loaded yet")

// leafState is one leaf certificate of the proxy's service, ready for TLS.
type leafState struct {
	cert tls.Certificate
	id   connect.ID
}

// rootState is one version of the CA roots.
type rootState struct {
	pool        *x509.CertPool
	trustDomain string
}

// certs holds the TLS material of a proxy: the service's leaf certificate
// and the CA roots, each followed with a blocking query so that a renewed
// leaf or rotated roots serve the next handshake. Handshakes read it
// without a lock; each handshake uses one leaf and one set of roots.
type certs struct {
	service string
	client  *api.Client
	logger  hclog.Logger

	leaf  atomic.Pointer[leafState]
	roots atomic.Pointer[rootState]

	// ready is closed once both a leaf and roots are loaded.
	readyOnce sync.Once
	ready     chan struct{}
}

func newCerts(client *api.Client, service string, logger hclog.Logger) *certs {
	return &certs{service: service, client: client, logger: logger, ready: make(chan struct{})}
}

// run follows the leaf and the roots until ctx ends.
func (c *certs) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		follow(ctx, c.logger, "CA roots", func(q *api.QueryOptions) (*api.CARootList, *api.QueryMeta, error) {
			return c.client.Agent().ConnectCARoots(q)
		}, c.setRoots)
	}()
	go func() {
		defer wg.Done()
		follow(ctx, c.logger, "leaf certificate of "+c.service, func(q *api.QueryOptions) (*api.LeafCert, *api.QueryMeta, error) {
			return c.client.Agent().ConnectCALeaf(c.service, q)
		}, c.setLeaf)
	}()
	wg.Wait()
}

func (c *certs) markReadyIfLoaded() {
	if c.leaf.Load() != nil && c.roots.Load() != nil {
		c.readyOnce.Do(func() {
			c.logger.Info("leaf certificate and CA roots loaded: serving", "service", c.service)
			close(c.ready)
		})
	}
}

func (c *certs) setRoots(list *api.CARootList) error {
	if list == nil {
		return errors.New("empty answer")
	}
	pool := x509.NewCertPool()
	n := 0
	for _, r := range list.Roots {
		if r == nil {
			continue
		}
		if !pool.AppendCertsFromPEM([]byte(r.RootCertPEM)) {
			return fmt.Errorf("root %s: no certificate in its PEM", r.ID)
		}
		n++
	}
	if n == 0 {
		return errors.New("no roots")
	}
	if list.TrustDomain == "" {
		return errors.New("no trust domain")
	}
	c.roots.Store(&rootState{pool: pool, trustDomain: strings.ToLower(list.TrustDomain)})
	c.logger.Debug("CA roots loaded", "roots", n, "trust_domain", list.TrustDomain)
	c.markReadyIfLoaded()
	return nil
}

func (c *certs) setLeaf(leaf *api.LeafCert) error {
	if leaf == nil {
		return errors.New("empty answer")
	}
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		return fmt.Errorf("leaf of %s: %w", c.service, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("leaf of %s: %w", c.service, err)
		}
	}
	id, err := idOf(cert.Leaf)
	if err != nil {
		return fmt.Errorf("leaf of %s: %w", c.service, err)
	}
	if id.Kind != connect.KindService || id.Service != c.service {
		return fmt.Errorf("leaf of %s names %s", c.service, id)
	}
	c.leaf.Store(&leafState{cert: cert, id: id})
	c.logger.Debug("leaf certificate loaded", "service", c.service, "serial", leaf.SerialNumber, "valid_before", leaf.ValidBefore)
	c.markReadyIfLoaded()
	return nil
}

// idOf returns the SPIFFE identity a certificate carries as its only URI.
func idOf(cert *x509.Certificate) (connect.ID, error) {
	if len(cert.URIs) != 1 {
		return connect.ID{}, fmt.Errorf("%w: the certificate names %d URIs, want 1", connect.ErrBadSpiffeID, len(cert.URIs))
	}
	return connect.ParseID(cert.URIs[0].String())
}

// verifyPeer checks that the peer's chain leads to one of roots (through
// the intermediates the peer sent) and that its leaf names a service of
// the roots' trust domain, and returns that identity.
func verifyPeer(roots *rootState, chain []*x509.Certificate) (connect.ID, error) {
	if len(chain) == 0 {
		return connect.ID{}, errors.New("the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots.pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return connect.ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	id, err := idOf(chain[0])
	if err != nil {
		return connect.ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	if id.Kind != connect.KindService {
		return connect.ID{}, fmt.Errorf("peer certificate: %s is not a service identity", id)
	}
	if id.TrustDomain != roots.trustDomain {
		return connect.ID{}, fmt.Errorf("peer certificate: trust domain %s, want %s", id.TrustDomain, roots.trustDomain)
	}
	return id, nil
}

// serverConfig is the TLS configuration of the public listener: each
// handshake takes the leaf and roots current at its start, requires a
// client certificate and verifies it against those roots.
func (c *certs) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			leaf, roots := c.leaf.Load(), c.roots.Load()
			if leaf == nil || roots == nil {
				return nil, errNotReady
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{leaf.cert},
				// The chain is verified in VerifyConnection: the standard
				// check would want a DNS name or IP, a leaf has a URI.
				ClientAuth: tls.RequireAnyClientCert,
				VerifyConnection: func(cs tls.ConnectionState) error {
					_, err := verifyPeer(roots, cs.PeerCertificates)
					return err
				},
			}, nil
		},
	}
}

// clientConfig is the TLS configuration of one connection to an instance
// of service in datacenter dc ("" for the proxy's own): the current leaf as
// the client certificate, and a server certificate that chains to the
// current roots and names exactly that service.
func (c *certs) clientConfig(service, dc string) (*tls.Config, error) {
	leaf, roots := c.leaf.Load(), c.roots.Load()
	if leaf == nil || roots == nil {
		return nil, errNotReady
	}
	if dc == "" {
		dc = leaf.id.Datacenter
	}
	want := connect.ServiceID(roots.trustDomain, dc, service)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{leaf.cert},
		// The SNI Consul's proxies send to an upstream.
		ServerName: fmt.Sprintf("%s.%s.%s.internal.%s", service, connect.DefaultNamespace, dc, roots.trustDomain),
		// The standard check would want a DNS name; VerifyConnection
		// checks the chain and the SPIFFE ID instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := verifyPeer(roots, cs.PeerCertificates)
			if err != nil {
				return err
			}
			if id != want {
				return fmt.Errorf("peer certificate names %s, want %s", id, want)
			}
			return nil
		},
	}, nil
}

// Follow-loop bounds: how long one blocking query waits, and the backoff
// after errors.
const (
	followWait       = 5 * time.Minute
	followMinBackoff = 100 * time.Millisecond
	followMaxBackoff = 10 * time.Second
	// followNoProgress is the pause after an answer whose index did not
	// move: a timed-out wait, or an agent that does not block.
	followNoProgress = 200 * time.Millisecond
)

// follow runs a blocking query until ctx ends: fetch with the last index,
// and hand each answer with a new index to apply. Errors are logged and
// retried with backoff; the last applied value stays in force meanwhile.
func follow[T any](ctx context.Context, logger hclog.Logger, what string,
	fetch func(*api.QueryOptions) (T, *api.QueryMeta, error), apply func(T) error) {
	var index uint64
	backoff := followMinBackoff
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: followWait}).WithContext(ctx)
		v, meta, err := fetch(q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			logger.Warn("watch failed, retrying", "what", what, "error", err, "retry_in", backoff)
			clock.Sleep(ctx, backoff)
			backoff = min(2*backoff, followMaxBackoff)
			continue
		}
		backoff = followMinBackoff
		switch {
		case meta.LastIndex < index:
			// The index went back (a restored snapshot, a new leader's
			// store): start over.
			index = 0
			continue
		case meta.LastIndex == index && index != 0:
			clock.Sleep(ctx, followNoProgress)
			continue
		}
		if err := apply(v); err != nil {
			logger.Error("bad answer ignored; keeping the previous one", "what", what, "error", err)
		}
		if meta.LastIndex == 0 {
			// An answer without an index cannot be waited on.
			clock.Sleep(ctx, followNoProgress)
		}
		index = meta.LastIndex
	}
}
