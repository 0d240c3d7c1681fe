package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/connect/proxy"
	"github.com/tribune-mesh/tribune/test/echo"
	"github.com/tribune-mesh/tribune/test/wait"
)

// Generous deadlines: the machine is shared and slow under load; every wait
// is on a condition.
const (
	waitLong = 30 * time.Second
	ioWait   = 10 * time.Second
)

// mesh is one dev agent with two services, web -> db, each with a sidecar
// registration, a real echo server as db's application, and a built-in
// proxy for each sidecar.
type mesh struct {
	client *api.Client
	apiCfg func() *api.Config
	td, dc string
	// webUp is web's upstream listener for db; probeUp for probe.
	webUp, probeUp string
	web, db        *proxy.Proxy
	dbPublic       string
}

func startMesh(t testing.TB) *mesh {
	t.Helper()
	return newMesh(t, agenttest.Start(t, nil).HTTPAddr(), nil)
}

// newMesh registers web and db on the agent at addr and runs their
// proxies. tokens, when not nil, holds the ACL token of the registrations
// ("admin") and of each proxy ("web", "db"); apiCfg then carries web's.
func newMesh(t testing.TB, addr string, tokens map[string]string) *mesh {
	t.Helper()
	cfgWith := func(token string) func() *api.Config {
		return func() *api.Config { return &api.Config{Address: addr, Token: token} }
	}
	m := &mesh{apiCfg: cfgWith(tokens["web"])}
	var err error
	if m.client, err = api.NewClient(cfgWith(tokens["admin"])()); err != nil {
		t.Fatal(err)
	}
	ports := agenttest.FreePorts(t, 5)
	webApp, webSidecar, dbSidecar, webUp, probeUp := ports[0], ports[1], ports[2], ports[3], ports[4]
	dbApp := echo.Start(t)
	m.webUp = net.JoinHostPort("127.0.0.1", strconv.Itoa(webUp))
	m.probeUp = net.JoinHostPort("127.0.0.1", strconv.Itoa(probeUp))
	listening := func(port int) api.AgentServiceChecks {
		return api.AgentServiceChecks{{Name: "listening", TCP: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Interval: "1s"}}
	}
	register(t, m.client, &api.AgentServiceRegistration{ID: "db", Name: "db", Address: "127.0.0.1", Port: dbApp,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Address: "127.0.0.1", Port: dbSidecar, Checks: listening(dbSidecar)}}})
	register(t, m.client, &api.AgentServiceRegistration{ID: "web", Name: "web", Address: "127.0.0.1", Port: webApp,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Address: "127.0.0.1", Port: webSidecar, Checks: listening(webSidecar),
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{
				{DestinationName: "db", LocalBindPort: webUp},
				{DestinationName: "probe", LocalBindPort: probeUp},
			}}}}})
	m.db = startProxy(t, m.client, cfgWith(tokens["db"]), "db-sidecar-proxy", nil)
	m.web = startProxy(t, m.client, cfgWith(tokens["web"]), "web-sidecar-proxy", nil)
	m.dbPublic = m.db.PublicAddr().String()
	leaf, _, err := m.client.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := connect.ParseID(leaf.ServiceURI)
	if err != nil {
		t.Fatal(err)
	}
	m.td, m.dc = id.TrustDomain, id.Datacenter
	return m
}

func register(t testing.TB, c *api.Client, reg *api.AgentServiceRegistration) {
	t.Helper()
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register %s: %v", reg.Name, err)
	}
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Warn, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startProxy runs the built-in proxy of registration proxyID until the
// test ends, after mod (when not nil) has changed its configuration, and
// waits until it holds its leaf and roots.
func startProxy(t testing.TB, c *api.Client, apiCfg func() *api.Config, proxyID string, mod func(*proxy.Config)) *proxy.Proxy {
	t.Helper()
	svc, _, err := c.Agent().Service(proxyID, nil)
	if err != nil {
		t.Fatalf("read %s: %v", proxyID, err)
	}
	cfg, err := proxy.FromService(svc, proxy.Config{API: apiCfg(), Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("configuration of %s: %v", proxyID, err)
	}
	if mod != nil {
		mod(&cfg)
	}
	return runProxy(t, cfg)
}

func runProxy(t testing.TB, cfg proxy.Config) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy run: %v", err)
			}
		case <-time.After(waitLong):
			t.Errorf("proxy of %s did not stop", cfg.Service)
		}
	})
	select {
	case <-p.Ready():
	case <-time.After(waitLong):
		t.Fatalf("proxy of %s never loaded its leaf and roots", cfg.Service)
	}
	return p
}

// roundTrip sends msg on a new connection to addr and checks the same
// bytes come back.
func roundTrip(addr string, msg []byte) error { return echo.RoundTrip(addr, msg, ioWait) }

func echoOn(c net.Conn, msg []byte) error { return echo.On(c, msg, ioWait) }

// openEchoed returns a connection to addr that echoed once, closed when
// the test ends; it retries while the proxy is not ready or the slots of
// earlier connections are still being released.
func openEchoed(t testing.TB, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	wait.For(t, waitLong, func() error {
		var err error
		if c, err = net.DialTimeout("tcp", addr, ioWait); err != nil {
			return err
		}
		if err := echoOn(c, []byte("open")); err != nil {
			c.Close()
			return err
		}
		return nil
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// refused checks that a new connection to addr carries no bytes back: the
// far side closes it.
func refused(addr string) error {
	err := roundTrip(addr, []byte("ping"))
	if err == nil {
		return errors.New("the connection went through")
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "reset by peer") || strings.Contains(err.Error(), "broken pipe") {
		return nil
	}
	return fmt.Errorf("neither echoed nor closed: %w", err)
}

func leafPair(t testing.TB, c *api.Client, service string) tls.Certificate {
	t.Helper()
	leaf, _, err := c.Agent().ConnectCALeaf(service, nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func uriOf(c *x509.Certificate) string {
	if len(c.URIs) != 1 {
		return fmt.Sprintf("%d URIs", len(c.URIs))
	}
	return c.URIs[0].String()
}

func TestProxyWebToDB(t *testing.T) {
	m := startMesh(t)
	webID := connect.ServiceID(m.td, m.dc, "web").String()
	dbID := connect.ServiceID(m.td, m.dc, "db").String()

	t.Run("bytes reach db's application through both proxies", func(t *testing.T) {
		// Until db's sidecar passes its check, web has no instance.
		wait.For(t, waitLong, func() error { return roundTrip(m.webUp, []byte("hello db")) })
		msg := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16) // larger than a TLS record
		if err := roundTrip(m.webUp, msg); err != nil {
			t.Fatal(err)
		}
		if s := m.db.Stats(); s.InboundAuthorized == 0 {
			t.Fatalf("db proxy authorized no connection: %+v", s)
		}
	})

	t.Run("a prepared-query upstream reaches db", func(t *testing.T) {
		if _, _, err := m.client.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "dbq",
			Service: api.ServiceQuery{Service: "db"}}, nil); err != nil {
			t.Fatal(err)
		}
		up := agenttest.FreePorts(t, 1)[0]
		p := runProxy(t, proxy.Config{API: m.apiCfg(), Service: "web", Logger: testLogger(t),
			Upstreams: []proxy.Upstream{{DestinationName: "dbq", PreparedQuery: true, LocalBindAddress: "127.0.0.1", LocalBindPort: up}}})
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(up))
		wait.For(t, waitLong, func() error { return roundTrip(addr, []byte("through a query")) })
		if p.Stats().OutboundConnected == 0 {
			t.Fatalf("no outbound connection counted: %+v", p.Stats())
		}
	})

	t.Run("a burst of connections at once all get through", func(t *testing.T) {
		const n = 50
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- roundTrip(m.webUp, []byte(fmt.Sprintf("burst %d", i))) }()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("db's proxy presents db's identity and takes web's", func(t *testing.T) {
		roots, _, err := m.client.Agent().ConnectCARoots(nil)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		for _, r := range roots.Roots {
			pool.AppendCertsFromPEM([]byte(r.RootCertPEM))
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioWait}, "tcp", m.dbPublic, &tls.Config{
			Certificates: []tls.Certificate{leafPair(t, m.client, "web")}, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake as web: %v", err)
		}
		defer c.Close()
		peer := c.ConnectionState().PeerCertificates
		if got := uriOf(peer[0]); got != dbID {
			t.Fatalf("db's proxy presents %s, want %s", got, dbID)
		}
		inter := x509.NewCertPool()
		for _, ic := range peer[1:] {
			inter.AddCert(ic)
		}
		if _, err := peer[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("db's certificate does not chain to the roots: %v", err)
		}
		if err := echoOn(c, []byte("as web")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("web's proxy presents web's identity to the upstream", func(t *testing.T) {
		pr := probeServer(t, m, "probe")
		wait.For(t, waitLong, func() error { return roundTrip(m.probeUp, []byte("probe")) })
		if got := pr.seen.Load(); got == nil || *got != webID {
			t.Fatalf("the upstream saw %v, want %s", got, webID)
		}
	})

	t.Run("an upstream with another identity is refused", func(t *testing.T) {
		// A probe instance that presents db's leaf: web's proxy must not
		// take it for probe.
		impostor := probeServer(t, m, "db")
		before := m.web.Stats().OutboundFailed
		wait.For(t, waitLong, func() error {
			if err := refused(m.probeUp); err != nil {
				return err
			}
			if m.web.Stats().OutboundFailed == before || impostor.accepted.Load() == 0 {
				return errors.New("web's proxy has not tried the impostor yet")
			}
			return nil
		})
		if impostor.seen.Load() != nil {
			t.Fatal("the impostor completed a handshake")
		}
	})

	t.Run("a client without a valid leaf is refused at the handshake", func(t *testing.T) {
		before := m.db.Stats().InboundHandshakeFailed
		// No client certificate.
		if err := handshake(m.dbPublic, nil); err == nil {
			t.Fatal("a client without a certificate completed the handshake")
		}
		// web's identity signed by another CA.
		root, err := connect.NewRoot(connect.Config{}.WithDefaults(), m.td, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		id := connect.ServiceID(m.td, m.dc, "web")
		csr, key, err := connect.NewLeafCSR(id, "ec", 256)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := connect.SignLeaf(root, csr, id, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		forged, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		if err := handshake(m.dbPublic, &forged); err == nil {
			t.Fatal("a client with a leaf of another CA completed the handshake")
		}
		wait.For(t, waitLong, func() error {
			if got := m.db.Stats().InboundHandshakeFailed - before; got < 2 {
				return fmt.Errorf("%d failed handshakes counted, want 2", got)
			}
			return nil
		})
	})

	t.Run("intentions deny then allow web -> db", func(t *testing.T) {
		setIntention(t, m.client, "web", "db", api.IntentionActionDeny)
		wait.For(t, waitLong, func() error { return refused(m.webUp) })
		if m.db.Stats().InboundDenied == 0 {
			t.Fatal("db's proxy counted no denied connection")
		}
		setIntention(t, m.client, "web", "db", api.IntentionActionAllow)
		wait.For(t, waitLong, func() error { return roundTrip(m.webUp, []byte("allowed again")) })
	})

	t.Run("after a root rotation new connections use the new root", func(t *testing.T) {
		before, _, err := m.client.Agent().ConnectCARoots(nil)
		if err != nil {
			t.Fatal(err)
		}
		conf, _, err := m.client.Connect().CAGetConfig(nil)
		if err != nil {
			t.Fatal(err)
		}
		conf.Config["PrivateKeyBits"] = 384
		if _, err := m.client.Connect().CASetConfig(conf, nil); err != nil {
			t.Fatal(err)
		}
		newRoot := x509.NewCertPool()
		wait.For(t, waitLong, func() error {
			roots, _, err := m.client.Agent().ConnectCARoots(nil)
			if err != nil {
				return err
			}
			if roots.ActiveRootID == before.ActiveRootID {
				return errors.New("the root has not rotated yet")
			}
			for _, r := range roots.Roots {
				if r.ID == roots.ActiveRootID {
					newRoot.AppendCertsFromPEM([]byte(r.RootCertPEM))
				}
			}
			return nil
		})
		// db's proxy serves a leaf of the new root, and takes web's new
		// leaf, without a restart.
		wait.For(t, waitLong, func() error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioWait}, "tcp", m.dbPublic, &tls.Config{
				Certificates: []tls.Certificate{leafPair(t, m.client, "web")}, InsecureSkipVerify: true})
			if err != nil {
				return err
			}
			defer c.Close()
			peer := c.ConnectionState().PeerCertificates
			inter := x509.NewCertPool()
			for _, ic := range peer[1:] {
				inter.AddCert(ic)
			}
			if _, err := peer[0].Verify(x509.VerifyOptions{Roots: newRoot, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return fmt.Errorf("db's leaf is not of the new root yet: %w", err)
			}
			return echoOn(c, []byte("new root"))
		})
		wait.For(t, waitLong, func() error { return roundTrip(m.webUp, []byte("after rotation")) })
	})
}

// Throughput of one connection through web's and db's proxies to an echo
// application and back (b.SetBytes counts one direction); b.Loop runs the
// setup once.
func BenchmarkThroughputTwoProxies(b *testing.B) {
	m := startMesh(b)
	wait.For(b, waitLong, func() error { return roundTrip(m.webUp, []byte("warm")) })
	benchEcho(b, m.webUp)
}

// New connections through web's and db's proxies: each op dials web's
// upstream listener, sends a byte and reads it back through two mTLS
// handshakes and db's authorization of web, then closes.
func BenchmarkConnectTwoProxies(b *testing.B) {
	m := startMesh(b)
	wait.For(b, waitLong, func() error { return roundTrip(m.webUp, []byte("warm")) })
	for b.Loop() {
		if err := roundTrip(m.webUp, []byte("x")); err != nil {
			b.Fatal(err)
		}
	}
}

// Memory of open, idle connections through web's and db's proxies (both
// in this process, with the agent and the echo application): heap and
// stacks in use per connection, after each carried one round trip.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 200
	m := startMesh(b)
	wait.For(b, waitLong, func() error { return roundTrip(m.webUp, []byte("warm")) })
	inUse := func() uint64 {
		// Two collections empty the buffer pool (and its victim cache),
		// so that buffers taken from it count.
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	var perConn float64
	for b.Loop() {
		before := inUse()
		open := make([]net.Conn, 0, conns)
		for range conns {
			c, err := net.DialTimeout("tcp", m.webUp, ioWait)
			if err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
			if err := echoOn(c, []byte("x")); err != nil {
				b.Fatal(err)
			}
		}
		perConn = float64(inUse()-before) / conns
		for _, c := range open {
			c.Close()
		}
		wait.For(b, waitLong, func() error {
			if n := m.web.Stats().Active + m.db.Stats().Active; n != 0 {
				return fmt.Errorf("%d connections still open", n)
			}
			return nil
		})
	}
	b.ReportMetric(perConn, "B/conn")
}

// The same without the proxies: the echo application dialed directly, the
// baseline of the ratio.
func BenchmarkThroughputDirect(b *testing.B) {
	benchEcho(b, net.JoinHostPort("127.0.0.1", strconv.Itoa(echo.Start(b))))
}

func benchEcho(b *testing.B, addr string) {
	c, err := net.DialTimeout("tcp", addr, ioWait)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const chunk, inFlight = 64 << 10, 4
	b.SetBytes(chunk)
	// The writer sends one chunk per token; inFlight tokens keep the pipe
	// full while the loop reads each chunk back.
	tokens := make(chan struct{}, inFlight)
	werr := make(chan error, 1)
	go func() {
		out := make([]byte, chunk)
		for range tokens {
			if _, err := c.Write(out); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	for range inFlight {
		tokens <- struct{}{}
	}
	in := make([]byte, chunk)
	for b.Loop() {
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
		tokens <- struct{}{}
	}
	close(tokens)
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
}

// With ACLs on (default deny), each proxy runs with a token of its own
// service, and the default decision denies web -> db until an intention
// allows it.
func TestProxyWithACLs(t *testing.T) {
	const root = "c0ffee00-0000-4000-8000-000000000001"
	a, admin := agenttest.StartACL(t, root)
	token := func(rules string) string {
		t.Helper()
		pol, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("p%d", len(rules)), Rules: rules}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok.SecretID
	}
	m := newMesh(t, a.HTTPAddr(), map[string]string{"admin": root,
		"db": token(`service "db" { policy = "write" }`),
		"web": token(`service "web" { policy = "write" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }`)})
	wait.For(t, waitLong, func() error {
		if err := refused(m.webUp); err != nil {
			return err
		}
		if m.db.Stats().InboundDenied == 0 {
			return errors.New("db's proxy has denied nothing yet")
		}
		return nil
	})
	setIntention(t, m.client, "web", "db", api.IntentionActionAllow)
	wait.For(t, waitLong, func() error { return roundTrip(m.webUp, []byte("allowed")) })
}

// handshake completes a TLS handshake with the proxy at addr presenting
// cert (none when nil) and reads, so a TLS 1.3 server's refusal of the
// client certificate is seen.
func handshake(addr string, cert *tls.Certificate) error {
	cfg := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioWait}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioWait))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

func setIntention(t testing.TB, c *api.Client, src, dst string, action api.IntentionAction) {
	t.Helper()
	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: dst,
		Sources: []*api.SourceIntention{{Name: src, Action: action}}}
	if _, _, err := c.ConfigEntries().Set(entry, nil); err != nil {
		t.Fatalf("intention %s -> %s %s: %v", src, dst, action, err)
	}
}

// probe is what a probe server saw: connections accepted, and the SPIFFE
// ID of the last client certificate of a completed handshake.
type probe struct {
	accepted atomic.Int64
	seen     atomic.Pointer[string]
}

// probeServer registers a Connect-native instance of "probe" (replacing
// any before it) served by a TLS server holding the leaf of identity; it
// records the SPIFFE ID of each client certificate it sees and echoes.
func probeServer(t testing.TB, m *mesh, identity string) *probe {
	t.Helper()
	pair := leafPair(t, m.client, identity)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	pr := &probe{}
	echo.Serve(t, ln, func(c net.Conn) {
		pr.accepted.Add(1)
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(ioWait))
		if tc.Handshake() != nil {
			return
		}
		uri := uriOf(tc.ConnectionState().PeerCertificates[0])
		pr.seen.Store(&uri)
		_, _ = io.Copy(tc, tc)
	})
	register(t, m.client, &api.AgentServiceRegistration{ID: "probe", Name: "probe", Address: "127.0.0.1",
		Port: ln.Addr().(*net.TCPAddr).Port, Connect: &api.AgentServiceConnect{Native: true}})
	return pr
}

func TestProxyLimits(t *testing.T) {
	m := startMesh(t)
	wait.For(t, waitLong, func() error { return roundTrip(m.webUp, []byte("up")) })
	// outbound runs an outbound-only proxy for web to db.
	outbound := func(t testing.TB, mod func(*proxy.Config)) string {
		cfg := proxy.Config{API: m.apiCfg(), Service: "web", Logger: testLogger(t),
			Upstreams: []proxy.Upstream{{DestinationName: "db", LocalBindPort: agenttest.FreePorts(t, 1)[0]}}}
		mod(&cfg)
		addr := runProxy(t, cfg).UpstreamAddr("db").String()
		wait.For(t, waitLong, func() error { return roundTrip(addr, []byte("up")) })
		return addr
	}

	t.Run("a connection over MaxConns is closed", func(t *testing.T) {
		addr := outbound(t, func(c *proxy.Config) { c.MaxConns = 1 })
		first := openEchoed(t, addr)
		if err := refused(addr); err != nil {
			t.Fatal(err)
		}
		// The first one still works; once it is closed its slot is free.
		if err := echoOn(first, []byte("still")); err != nil {
			t.Fatal(err)
		}
		first.Close()
		wait.For(t, waitLong, func() error { return roundTrip(addr, []byte("second")) })
	})

	t.Run("an idle connection is closed", func(t *testing.T) {
		c := openEchoed(t, outbound(t, func(c *proxy.Config) { c.IdleTimeout = 300 * time.Millisecond }))
		_ = c.SetReadDeadline(time.Now().Add(waitLong))
		n, err := c.Read(make([]byte, 1))
		if err == nil || n != 0 {
			t.Fatalf("read %d bytes, %v; want the proxy to close the idle connection", n, err)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the idle connection was not closed")
		}
	})

	t.Run("stop closes the listeners and drains", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		q, err := proxy.New(proxy.Config{API: m.apiCfg(), Service: "web", Logger: testLogger(t),
			Upstreams:    []proxy.Upstream{{DestinationName: "db", LocalBindPort: agenttest.FreePorts(t, 1)[0]}},
			DrainTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- q.Run(ctx) }()
		qa := q.UpstreamAddr("db").String()
		c := openEchoed(t, qa)
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitLong):
			t.Fatal("Run did not return")
		}
		_ = c.SetReadDeadline(time.Now().Add(waitLong))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("the open connection survived the drain")
		}
		if c, err := net.DialTimeout("tcp", qa, ioWait); err == nil {
			c.Close()
			t.Fatal("the listener still accepts")
		}
	})
}

// Run returns once every goroutine of the proxy has ended: its watches,
// accept loops and connections. The proxy is alone in the process: its
// upstream is its own service, registered at its own public listener.
func TestRunLeavesNoGoroutine(t *testing.T) {
	a := agenttest.Start(t, nil)
	apiCfg := &api.Config{Address: a.HTTPAddr()}
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	app := net.JoinHostPort("127.0.0.1", strconv.Itoa(echo.Start(t)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := proxy.New(proxy.Config{API: apiCfg, Service: "web", Logger: testLogger(t),
		PublicListener: "127.0.0.1:0", LocalServiceAddress: app, DrainTimeout: 100 * time.Millisecond,
		Upstreams: []proxy.Upstream{{DestinationName: "web", LocalBindPort: agenttest.FreePorts(t, 1)[0]}}})
	if err != nil {
		t.Fatal(err)
	}
	register(t, client, &api.AgentServiceRegistration{Kind: api.ServiceKindConnectProxy, ID: "web-proxy", Name: "web-proxy",
		Address: "127.0.0.1", Port: p.PublicAddr().(*net.TCPAddr).Port,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web"}})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	up := p.UpstreamAddr("web").String()
	openEchoed(t, up)
	ours := func() []string {
		buf := make([]byte, 1<<20)
		var out []string
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "tribune/connect/proxy.") {
				out = append(out, g)
			}
		}
		return out
	}
	if len(ours()) == 0 {
		t.Fatal("no goroutine of the running proxy found: the check cannot see them")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("Run did not return")
	}
	wait.For(t, 10*time.Second, func() error {
		if left := ours(); len(left) > 0 {
			return fmt.Errorf("%d goroutines left behind, the first:\n%s", len(left), left[0])
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	base := proxy.Config{API: &api.Config{}, Service: "web", PublicListener: "127.0.0.1:0", LocalServiceAddress: "127.0.0.1:8080"}
	cases := []struct {
		name string
		mod  func(*proxy.Config)
		want string
	}{
		{"ok", func(*proxy.Config) {}, ""},
		{"no service", func(c *proxy.Config) { c.Service = "" }, "no service"},
		{"nothing", func(c *proxy.Config) { c.PublicListener = "" }, "nothing to proxy"},
		{"bad listener", func(c *proxy.Config) { c.PublicListener = "nope" }, "public listener"},
		{"no app port", func(c *proxy.Config) { c.LocalServiceAddress = "127.0.0.1:0" }, "local service address"},
		{"upstream port", func(c *proxy.Config) {
			c.Upstreams = []proxy.Upstream{{DestinationName: "db", LocalBindPort: 70000}}
		}, "out of 1-65535"},
		{"same port twice", func(c *proxy.Config) {
			c.Upstreams = []proxy.Upstream{{DestinationName: "db", LocalBindPort: 9000}, {DestinationName: "cache", LocalBindPort: 9000}}
		}, "both listen"},
		{"negative", func(c *proxy.Config) { c.IdleTimeout = -time.Second }, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			err := c.WithDefaults().Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestFromService(t *testing.T) {
	svc := &api.AgentService{ID: "web-sidecar-proxy", Kind: api.ServiceKindConnectProxy, Port: 21000,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web", LocalServicePort: 8080,
			Config: map[string]any{"handshake_timeout_ms": float64(2500), "bind_address": "127.0.0.2"},
			Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191, Datacenter: "dc2",
				Config: map[string]any{"connect_timeout_ms": "750"}}}}}
	cfg, err := proxy.FromService(svc, proxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Service != "web" || cfg.PublicListener != "127.0.0.2:21000" || cfg.LocalServiceAddress != "127.0.0.1:8080" ||
		cfg.HandshakeTimeout != 2500*time.Millisecond {
		t.Fatalf("got %+v", cfg)
	}
	if len(cfg.Upstreams) != 1 || cfg.Upstreams[0] != (proxy.Upstream{DestinationName: "db", Datacenter: "dc2",
		LocalBindPort: 9191, ConnectTimeout: 750 * time.Millisecond}) {
		t.Fatalf("upstreams %+v", cfg.Upstreams)
	}
	svc.Proxy.Upstreams = append(svc.Proxy.Upstreams, api.Upstream{DestinationType: api.UpstreamDestTypePreparedQuery, DestinationName: "dbq", LocalBindPort: 9292})
	if cfg, err = proxy.FromService(svc, proxy.Config{}); err != nil || len(cfg.Upstreams) != 2 || !cfg.Upstreams[1].PreparedQuery {
		t.Fatalf("prepared query upstream: %+v, %v", cfg.Upstreams, err)
	}
	svc.Proxy.Config["bind_port"] = "x"
	if _, err := proxy.FromService(svc, proxy.Config{}); err == nil {
		t.Fatal("a bad bind_port was accepted")
	}
	if _, err := proxy.FromService(&api.AgentService{ID: "web", Port: 80}, proxy.Config{}); err == nil {
		t.Fatal("a plain service was taken for a proxy")
	}
}
