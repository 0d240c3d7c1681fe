package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect/proxy"
	"github.com/tribune-mesh/tribune/telemetry"
)

// upstreamFlags collects repeated -upstream name:addr flags.
type upstreamFlags []proxy.Upstream

func (u *upstreamFlags) String() string {
	parts := make([]string, len(*u))
	for i, up := range *u {
		parts[i] = up.DestinationName + ":" + up.Addr()
	}
	return strings.Join(parts, ",")
}

func (u *upstreamFlags) Set(v string) error {
	up, err := parseUpstream(v)
	if err != nil {
		return err
	}
	*u = append(*u, up)
	return nil
}

// parseUpstream reads "name:port" (on 127.0.0.1) or "name:host:port".
func parseUpstream(v string) (proxy.Upstream, error) {
	name, addr, ok := strings.Cut(v, ":")
	if !ok || name == "" || addr == "" {
		return proxy.Upstream{}, fmt.Errorf("%q: want name:port or name:host:port", v)
	}
	host, portText := proxy.DefaultBindAddress, addr
	if strings.Contains(addr, ":") {
		var err error
		if host, portText, err = net.SplitHostPort(addr); err != nil {
			return proxy.Upstream{}, fmt.Errorf("%q: %w", v, err)
		}
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port <= 0 || port > 65535 {
		return proxy.Upstream{}, fmt.Errorf("%q: bad port %q", v, portText)
	}
	return proxy.Upstream{DestinationName: name, LocalBindAddress: host, LocalBindPort: port}, nil
}

// runConnectProxy implements "connect proxy": run the built-in proxy until
// SIGINT or SIGTERM.
func runConnectProxy(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return connectProxy(ctx, args, stdout, stderr)
}

// connectProxy runs the built-in proxy until ctx ends.
func connectProxy(ctx context.Context, args []string, _, stderr io.Writer) int {
	var hf httpFlags
	var ups upstreamFlags
	fs := newFlagSet("connect proxy", "connect proxy [options]",
		"Runs Tribune's built-in mTLS proxy for a service: inbound connections from the mesh to the local application\n"+
			"(client certificate verified, intentions enforced) and local listeners for its upstreams.\n"+
			"Configured from a sidecar registration (-sidecar-for or -proxy-id), or from -service and the flags below.", stderr, &hf)
	proxyID := fs.String("proxy-id", os.Getenv("CONNECT_PROXY_ID"), "The proxy's service `ID` on the local agent. Defaults to CONNECT_PROXY_ID.")
	sidecarFor := fs.String("sidecar-for", os.Getenv("CONNECT_SIDECAR_FOR"), "The `ID` of the service whose sidecar registration to run. Defaults to CONNECT_SIDECAR_FOR.")
	service := fs.String("service", "", "`name` of the service the proxy represents (without a registration).")
	serviceAddr := fs.String("service-addr", "", "`host:port` of the local application inbound connections go to. Requires -listen.")
	listen := fs.String("listen", "", "`host:port` of the public mTLS listener. Requires -service and -service-addr.")
	fs.Var(&ups, "upstream", "An upstream as `name:port` or name:host:port: the proxy listens there and connects to name. Repeatable. Requires -service.")
	register := fs.Bool("register", false, "Register the proxy with the local agent (with -listen); deregistered on exit.")
	registerID := fs.String("register-id", "", "The `ID` to register the proxy with (default <service>-proxy).")
	logLevel := fs.String("log-level", "INFO", "The `level` of the logs: trace, debug, info, warn or error.")
	maxConns := fs.Int("max-conns", proxy.DefaultMaxConns, "The most connections open at once, inbound and outbound together.")
	idle := fs.Duration("idle-timeout", proxy.DefaultIdleTimeout, "Close a connection on which no byte moved either way for this `duration`.")
	drain := fs.Duration("drain-timeout", proxy.DefaultDrainTimeout, "On SIGINT or SIGTERM, let open connections finish for this `duration`.")
	pprofAddr := fs.String("pprof-addr", "", "Serve Go's pprof profiles over HTTP on this `host:port` (or :port); none when empty.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, format+"\n\n", a...)
		fs.Usage()
		return 1
	}
	if fs.NArg() > 0 {
		return usageErr("Unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	level := hclog.LevelFromString(*logLevel)
	if level == hclog.NoLevel {
		return usageErr("Invalid -log-level %q", *logLevel)
	}
	if *maxConns <= 0 || *idle <= 0 || *drain < 0 {
		return usageErr("-max-conns and -idle-timeout must be positive, -drain-timeout not negative")
	}
	fromRegistration := *proxyID != "" || *sidecarFor != ""
	switch {
	case *proxyID != "" && *sidecarFor != "":
		return usageErr("Use one of -proxy-id and -sidecar-for")
	case fromRegistration && (*service != "" || *listen != "" || *serviceAddr != "" || len(ups) > 0 || *register):
		return usageErr("-proxy-id and -sidecar-for take the proxy's configuration from its registration: " +
			"-service, -listen, -service-addr, -upstream and -register do not go with them")
	case !fromRegistration && *service == "":
		return usageErr("One of -sidecar-for, -proxy-id or -service is required")
	case (*listen == "") != (*serviceAddr == "") && !fromRegistration:
		return usageErr("-listen and -service-addr go together")
	case !fromRegistration && *listen == "" && len(ups) == 0:
		return usageErr("Nothing to proxy: give -listen and -service-addr, or -upstream")
	case *register && *listen == "":
		return usageErr("-register needs -listen")
	}

	logger := hclog.New(&hclog.LoggerOptions{Name: "proxy", Level: level, Output: stderr})
	if *pprofAddr != "" {
		stopPprof, err := servePprof(*pprofAddr, logger)
		if err != nil {
			fmt.Fprintf(stderr, "Error: -pprof-addr: %v\n", err)
			return 1
		}
		defer stopPprof()
	}
	cfg := proxy.Config{API: hf.apiConfig(), Service: *service, PublicListener: *listen, LocalServiceAddress: *serviceAddr,
		Upstreams: ups, MaxConns: *maxConns, IdleTimeout: *idle, DrainTimeout: *drain, Logger: logger}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	if fromRegistration {
		id := *proxyID
		if id == "" {
			if id, err = sidecarID(client, *sidecarFor); err != nil {
				fmt.Fprintf(stderr, "Error: %v\n", err)
				return 1
			}
		}
		if err := followRegistration(ctx, client, id, cfg, logger); err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return 1
		}
		return 0
	}
	p, err := proxy.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	if *register {
		id, err := registerProxy(client, *registerID, cfg, p.PublicAddr())
		if err != nil {
			p.Close()
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return 1
		}
		defer func() {
			if err := client.Agent().ServiceDeregister(id); err != nil {
				logger.Error("deregister the proxy", "id", id, "error", err)
			}
		}()
		logger.Info("registered with the agent", "id", id)
	}
	if err := p.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	return 0
}

// maxPprofSeconds bounds ?seconds= of a CPU profile or trace of the proxy.
const maxPprofSeconds = 300

// servePprof serves Go's profiles of the proxy under /debug/pprof/ on addr
// until the returned stop is called (which waits for the server to end).
func servePprof(addr string, logger hclog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("seconds"); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 0 || n > maxPprofSeconds {
				http.Error(w, fmt.Sprintf("Invalid seconds %q: want 0 to %d", v, maxPprofSeconds), http.StatusBadRequest)
				return
			}
		}
		telemetry.Pprof(w, r)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof server stopped", "addr", ln.Addr(), "error", err)
		}
	}()
	logger.Info("serving pprof", "addr", ln.Addr().String())
	return func() {
		srv.Close()
		<-done
	}, nil
}

// sidecarID returns the ID of the one sidecar registration of service ID
// serviceID on the agent.
func sidecarID(client *api.Client, serviceID string) (string, error) {
	services, err := client.Agent().Services()
	if err != nil {
		return "", fmt.Errorf("read the agent's services: %w", err)
	}
	id, _, err := findSidecar(services, serviceID)
	return id, err
}

// Bounds of following a registration.
const (
	registrationWait       = 5 * time.Minute
	registrationMaxBackoff = 10 * time.Second
)

// runningProxy is one generation of the proxy of a registration.
type runningProxy struct {
	cfg    proxy.Config
	p      *proxy.Proxy
	cancel context.CancelFunc
	done   chan struct{}
}

// followRegistration runs the proxy of connect-proxy registration id until
// ctx ends, following the registration with a blocking query: when a change
// alters what the proxy does (ports, application address, upstreams,
// timeouts), the running proxy's listeners are closed, its open connections
// left to drain, and a proxy of the new configuration started. The first
// reading must succeed; later failures keep the running proxy.
func followRegistration(ctx context.Context, client *api.Client, id string, base proxy.Config, logger hclog.Logger) error {
	var cur *runningProxy
	var draining sync.WaitGroup
	stop := func(r *runningProxy) {
		// Close first, so a successor can bind the same ports at once.
		r.p.Close()
		r.cancel()
		draining.Add(1)
		go func() {
			defer draining.Done()
			<-r.done
		}()
	}
	defer func() {
		if cur != nil {
			stop(cur)
		}
		draining.Wait()
	}()
	hash := ""
	backoff := time.Duration(0)
	// started is set once a proxy ran: after that, errors wait for the
	// next change instead of ending the command.
	started := false
	for ctx.Err() == nil {
		if backoff > 0 {
			clock.Sleep(ctx, backoff)
			if ctx.Err() != nil {
				return nil
			}
		}
		q := (&api.QueryOptions{WaitHash: hash, WaitTime: registrationWait}).WithContext(ctx)
		svc, meta, err := client.Agent().Service(id, q)
		if err == nil && meta.LastContentHash == hash && hash != "" {
			backoff = 0
			continue // the wait ended without a change
		}
		var cfg proxy.Config
		if err == nil {
			cfg, err = proxy.FromService(svc, base)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !started {
				return fmt.Errorf("proxy %s: %w", id, err)
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), registrationMaxBackoff)
			logger.Warn("reading the proxy's registration failed; the proxy keeps its configuration",
				"id", id, "error", err, "retry_in", backoff)
			if meta != nil {
				hash = meta.LastContentHash
			}
			continue
		}
		backoff = 0
		hash = meta.LastContentHash
		if cur != nil && sameProxyConfig(cur.cfg, cfg) {
			continue
		}
		if cur != nil {
			logger.Info("the proxy's registration changed: restarting its listeners", "id", id)
			stop(cur)
			cur = nil
		}
		p, err := proxy.New(cfg)
		if err != nil {
			// The first start fails the command; a later one waits
			// for the next change.
			if started {
				logger.Error("the changed registration cannot run", "id", id, "error", err)
				continue
			}
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &runningProxy{cfg: cfg, p: p, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			if err := p.Run(rctx); err != nil {
				logger.Error("proxy stopped", "error", err)
			}
		}()
		cur, started = r, true
	}
	return nil
}

// sameProxyConfig reports whether two configurations of a registration
// run the same proxy.
func sameProxyConfig(a, b proxy.Config) bool {
	return a.Service == b.Service && a.PublicListener == b.PublicListener &&
		a.LocalServiceAddress == b.LocalServiceAddress && slices.Equal(a.Upstreams, b.Upstreams) &&
		a.HandshakeTimeout == b.HandshakeTimeout && a.LocalConnectTimeout == b.LocalConnectTimeout
}

// registerProxy registers the running proxy as a connect-proxy service of
// cfg.Service listening on public, with a TCP check of that port, and
// returns its ID.
func registerProxy(client *api.Client, id string, cfg proxy.Config, public net.Addr) (string, error) {
	if id == "" {
		id = cfg.Service + "-proxy"
	}
	tcp, ok := public.(*net.TCPAddr)
	if !ok {
		return "", errors.New("the public listener has no TCP address")
	}
	addr, checkHost := "", "127.0.0.1"
	if !tcp.IP.IsUnspecified() {
		addr, checkHost = tcp.IP.String(), tcp.IP.String()
	}
	appHost, appPortText, err := net.SplitHostPort(cfg.LocalServiceAddress)
	if err != nil {
		return "", fmt.Errorf("-service-addr: %w", err)
	}
	appPort, _ := strconv.Atoi(appPortText)
	reg := &api.AgentServiceRegistration{
		Kind: api.ServiceKindConnectProxy, ID: id, Name: cfg.Service + "-proxy", Address: addr, Port: tcp.Port,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: cfg.Service,
			LocalServiceAddress: appHost, LocalServicePort: appPort},
		Check: &api.AgentServiceCheck{Name: "Connect Proxy Listening",
			TCP: net.JoinHostPort(checkHost, strconv.Itoa(tcp.Port)), Interval: (10 * time.Second).String()},
	}
	if err := client.Agent().ServiceRegister(reg); err != nil {
		return "", fmt.Errorf("register the proxy: %w", err)
	}
	return id, nil
}

// Interface check: -upstream is a repeatable flag.
var _ flag.Value = (*upstreamFlags)(nil)
