package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// xdsEnvInt reads a positive integer from the environment.
func xdsEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// envoyStream is one simulated Envoy: a delta ADS stream that subscribes to
// CDS and LDS (wildcards) and to EDS for every cluster it gets, and ACKs
// every response at once. It records when it last ACKed each type.
type envoyStream struct {
	node string
	mu   sync.Mutex
	// acked is when the last response of each type was ACKed; ackCh is
	// closed and replaced on every ACK.
	acked map[string]time.Time
	ackCh chan struct{}
	err   error
	// sds is set once the stream subscribed to secrets its clusters or
	// listeners name (SDS over ADS, as Envoy does).
	sds bool
}

func runEnvoyStream(ctx context.Context, conn *grpc.ClientConn, e *envoyStream) {
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err == nil {
		node := &core.Node{Id: e.node, Cluster: e.node}
		err = stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
		if err == nil {
			err = stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType})
		}
		subscribed, secrets := map[string]bool{}, map[string]bool{}
		for err == nil {
			var r *discovery.DeltaDiscoveryResponse
			if r, err = stream.Recv(); err != nil {
				break
			}
			// Envoy asks for the secrets a cluster or listener names
			// while it warms it, before it ACKs it.
			var names []string
			for _, res := range r.GetResources() {
				for _, n := range sdsNames(res.GetResource()) {
					if !secrets[n] {
						secrets[n] = true
						names = append(names, n)
					}
				}
			}
			if len(names) > 0 {
				e.mu.Lock()
				e.sds = true
				e.mu.Unlock()
				err = stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesSubscribe: names})
			}
			if err == nil {
				err = stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
			}
			now := time.Now()
			e.mu.Lock()
			e.acked[r.GetTypeUrl()] = now
			close(e.ackCh)
			e.ackCh = make(chan struct{})
			e.mu.Unlock()
			if r.GetTypeUrl() == resource.ClusterType && err == nil {
				var names []string
				for _, res := range r.GetResources() {
					if n := res.GetName(); !subscribed[n] && n != "local_app" {
						subscribed[n] = true
						names = append(names, n)
					}
				}
				if len(names) > 0 {
					err = stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: names})
				}
			}
		}
	}
	e.mu.Lock()
	if ctx.Err() == nil {
		e.err = err
	}
	e.mu.Unlock()
}

// sdsNames returns the SDS secrets a cluster's or listener's TLS contexts
// name.
func sdsNames(a *anypb.Any) []string {
	var sockets []*core.TransportSocket
	switch a.GetTypeUrl() {
	case resource.ClusterType:
		var c clusterv3.Cluster
		if a.UnmarshalTo(&c) == nil {
			sockets = append(sockets, c.GetTransportSocket())
		}
	case resource.ListenerType:
		var l listener.Listener
		if a.UnmarshalTo(&l) == nil {
			for _, fc := range l.GetFilterChains() {
				sockets = append(sockets, fc.GetTransportSocket())
			}
		}
	}
	var out []string
	for _, ts := range sockets {
		var common *tlsv3.CommonTlsContext
		var up tlsv3.UpstreamTlsContext
		var down tlsv3.DownstreamTlsContext
		switch {
		case ts.GetTypedConfig() == nil:
			continue
		case ts.GetTypedConfig().UnmarshalTo(&up) == nil:
			common = up.GetCommonTlsContext()
		case ts.GetTypedConfig().UnmarshalTo(&down) == nil:
			common = down.GetCommonTlsContext()
		}
		for _, sc := range common.GetTlsCertificateSdsSecretConfigs() {
			out = append(out, sc.GetName())
		}
		if n := common.GetValidationContextSdsSecretConfig().GetName(); n != "" {
			out = append(out, n)
		}
		if n := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// waitAcks waits until every stream has ACKed typeURL after since and
// returns the per-stream delays (since -> ACK), sorted.
func waitAcks(b *testing.B, streams []*envoyStream, typeURL string, since time.Time, timeout time.Duration) []time.Duration {
	b.Helper()
	deadline := time.Now().Add(timeout)
	out := make([]time.Duration, 0, len(streams))
	for _, e := range streams {
		for {
			e.mu.Lock()
			t, ch, err := e.acked[typeURL], e.ackCh, e.err
			e.mu.Unlock()
			if err != nil {
				b.Fatalf("stream %s ended: %v", e.node, err)
			}
			if t.After(since) {
				out = append(out, t.Sub(since))
				break
			}
			left := time.Until(deadline)
			if left <= 0 {
				b.Fatalf("stream %s has not ACKed %s within %s (%d of %d did)", e.node, typeURL, timeout, len(out), len(streams))
			}
			select {
			case <-ch:
			case <-time.After(left):
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// quiet waits until no stream has ACKed anything for d.
func quiet(streams []*envoyStream, d, max time.Duration) {
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		var last time.Time
		for _, e := range streams {
			e.mu.Lock()
			for _, t := range e.acked {
				if t.After(last) {
					last = t
				}
			}
			e.mu.Unlock()
		}
		if time.Since(last) >= d {
			return
		}
		time.Sleep(d / 4)
	}
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first
// error.
func parallel(n, workers int, fn func(i int) error) error {
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// agentMemStats returns the agent's runtime.MemStats figures (bytes) from
// the comment lines of its debug heap profile (enable_debug), empty when it
// cannot read them.
func agentMemStats(httpAddr string) map[string]int64 {
	out := map[string]int64{}
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/heap?debug=1")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "# HeapInuse = 1234", "# Stack = <inuse> / <sys>"
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == "#" && f[2] == "=" {
			if f[1] == "Stack" {
				f[1] = "StackInuse"
			}
			if v, err := strconv.ParseInt(f[3], 10, 64); err == nil {
				out[f[1]] = v
			}
		}
	}
	return out
}

// agentLiveMemStats is agentMemStats right after two GCs the agent is asked
// for (its heap profile with gc=1): the second one frees what sync.Pools
// kept through the first.
func agentLiveMemStats(httpAddr string) map[string]int64 {
	for range 2 {
		if r, err := http.Get("http://" + httpAddr + "/debug/pprof/heap?gc=1"); err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
	}
	return agentMemStats(httpAddr)
}

// saveAgentHeap writes the agent's heap profile (after a GC) to path; a
// failure only loses the profile.
func saveAgentHeap(httpAddr, path string) {
	resp, err := http.Get("http://" + httpAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if f, err := os.Create(path); err == nil {
		_, _ = io.Copy(f, resp.Body)
		f.Close()
	}
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return ms(d[i])
}

// BenchmarkXDS1000Proxies is the xDS benchmark against a real
// `tribune agent -dev`: 200 services x 3 instances (each with its sidecar)
// in the catalog, 1,000 sidecar proxies registered on the agent, each with
// 5 upstreams (db, shared by all, and 4 others), each held by a delta ADS
// stream from this process playing Envoy. Figures: time until all 1,000
// have their initial configuration; for a catalog change (a db instance
// going critical, then passing again) the time until each proxy ACKed the
// new EDS, p50/p99/max; the same for an intention change reaching the RBAC
// filters (LDS); agent RSS per proxy.
//
//	make bench-xds   (BENCH_XDS_PROXIES, BENCH_XDS_ROUNDS to change the size)
func BenchmarkXDS1000Proxies(b *testing.B) {
	proxies := xdsEnvInt("BENCH_XDS_PROXIES", 1000)
	rounds := xdsEnvInt("BENCH_XDS_ROUNDS", 3)
	const services, instances, upstreams = 200, 3, 5
	runOnce(b, func() {
		var extra []string
		// Files for the agent's CPU profile of the rounds and its heap
		// profile once every proxy has its configuration.
		profile := os.Getenv("BENCH_XDS_PPROF")
		if profile != "" {
			cfgPath := filepath.Join(workDir, "xds-debug.json")
			if err := os.WriteFile(cfgPath, []byte(`{"enable_debug": true}`), 0o600); err != nil {
				b.Fatal(err)
			}
			extra = append(extra, "-config-file", cfgPath)
		}
		p, pp := startDevPorts(b, kindTribune, extra...)
		c := newAPIClient(b, p.HTTPAddr())
		wait := time.Now()
		for {
			roots, _, err := c.Agent().ConnectCARoots(nil)
			if err == nil && len(roots.Roots) > 0 {
				break
			}
			if time.Since(wait) > 30*time.Second {
				b.Fatalf("no CA roots: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The catalog: every instance of every service has a sidecar.
		if err := parallel(services*instances, 16, func(n int) error {
			s, i := n/instances, n%instances
			node := fmt.Sprintf("node-%d-%d", s, i)
			_, err := c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: fmt.Sprintf("10.%d.%d.1", s, i),
				Service: &api.AgentService{Kind: api.ServiceKindConnectProxy, ID: fmt.Sprintf("svc-%d-sidecar-proxy", s),
					Service: fmt.Sprintf("svc-%d-sidecar-proxy", s), Port: 21000,
					Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: fmt.Sprintf("svc-%d", s)}},
				Check: &api.AgentCheck{Node: node, CheckID: "proxy", Name: "proxy", Status: api.HealthPassing,
					ServiceID: fmt.Sprintf("svc-%d-sidecar-proxy", s)},
			}, nil)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		// The local proxies: db (svc-0) and 4 others each.
		if err := parallel(proxies, 16, func(i int) error {
			ups := []api.Upstream{{DestinationName: "svc-0", LocalBindPort: 10000}}
			for k := range upstreams - 1 {
				ups = append(ups, api.Upstream{DestinationName: fmt.Sprintf("svc-%d", 1+(i*(upstreams-1)+k)%(services-1)), LocalBindPort: 10001 + k})
			}
			return c.Agent().ServiceRegister(&api.AgentServiceRegistration{Kind: api.ServiceKindConnectProxy,
				ID: fmt.Sprintf("app-%d-sidecar-proxy", i), Name: "app-sidecar-proxy", Port: 20000 + i%1000,
				Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: fmt.Sprintf("app-%d", i), LocalServicePort: 8080, Upstreams: ups},
			})
		}); err != nil {
			b.Fatal(err)
		}
		rssBefore, _ := procStatusKiB(p.Pid(), "VmRSS")
		var msBefore, liveBefore map[string]int64
		if profile != "" {
			msBefore = agentMemStats(p.HTTPAddr())
			liveBefore = agentLiveMemStats(p.HTTPAddr())
			if heap := os.Getenv("BENCH_XDS_HEAP"); heap != "" {
				// The heap before the streams, as the base to diff the
				// heap with them against (go tool pprof -diff_base).
				saveAgentHeap(p.HTTPAddr(), heap+".before")
			}
			if resp, err := http.Get("http://" + p.HTTPAddr() + "/debug/pprof/goroutine?debug=1"); err == nil {
				first, _ := bufio.NewReader(resp.Body).ReadString('\n')
				resp.Body.Close()
				fmt.Printf("bench: xds agent before the streams: %s", first)
			}
		}

		// 1,000 Envoys, each on its own connection.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		streams := make([]*envoyStream, proxies)
		var conns []*grpc.ClientConn
		defer func() {
			cancel()
			for _, cc := range conns {
				cc.Close()
			}
		}()
		start := time.Now()
		for i := range streams {
			cc, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(pp.GRPC), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, cc)
			e := &envoyStream{node: fmt.Sprintf("app-%d-sidecar-proxy", i), acked: map[string]time.Time{}, ackCh: make(chan struct{})}
			streams[i] = e
			go runEnvoyStream(ctx, cc, e)
		}
		initial := waitAcks(b, streams, resource.ListenerType, start, 120*time.Second)
		waitAcks(b, streams, resource.EndpointType, start, 120*time.Second)
		last := initial[len(initial)-1]
		// Every stream has its listeners: those that name secrets have
		// subscribed to them, and are configured once they ACK them.
		var sds []*envoyStream
		for _, e := range streams {
			e.mu.Lock()
			if e.sds {
				sds = append(sds, e)
			}
			e.mu.Unlock()
		}
		if len(sds) > 0 {
			d := waitAcks(b, sds, resource.SecretType, start, 120*time.Second)
			last = max(last, d[len(d)-1])
		}
		record(b, kindTribune, fmt.Sprintf("xds initial-config proxies=%d all", proxies), "ms", ms(last), fmt.Sprintf("streams with SDS secrets=%d", len(sds)))
		quiet(streams, time.Second, 30*time.Second)
		rssAfter, _ := procStatusKiB(p.Pid(), "VmRSS")
		if profile != "" {
			if resp, err := http.Get("http://" + p.HTTPAddr() + "/debug/pprof/goroutine?debug=1"); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				first, _ := bufio.NewReader(bytes.NewReader(body)).ReadString('\n')
				fmt.Printf("bench: xds agent %s", first)
				_ = os.WriteFile(profile+".goroutines", body, 0o644)
			}
		}
		if profile != "" {
			// Where the RSS per proxy goes: the Go runtime's own figures
			// before the streams and now, per proxy.
			after := agentMemStats(p.HTTPAddr())
			var sb strings.Builder
			for _, k := range []string{"HeapAlloc", "HeapInuse", "HeapIdle", "HeapReleased", "StackInuse", "MSpanInuse", "GCSys", "OtherSys", "Sys", "NextGC"} {
				fmt.Fprintf(&sb, " %s=%.1fKiB", k, float64(after[k]-msBefore[k])/1024/float64(proxies))
			}
			fmt.Printf("bench: xds agent memstats per proxy (after-before):%s\n", sb.String())
			// The live heap and stacks per proxy, without the garbage the
			// GC has not collected yet: less noisy than the RSS.
			live := agentLiveMemStats(p.HTTPAddr())
			fmt.Printf("bench: xds agent after a GC, per proxy: live heap=%.1fKiB stacks=%.1fKiB\n",
				float64(live["HeapAlloc"]-liveBefore["HeapAlloc"])/1024/float64(proxies), float64(live["StackInuse"]-liveBefore["StackInuse"])/1024/float64(proxies))
		}
		if heap := os.Getenv("BENCH_XDS_HEAP"); heap != "" && profile != "" {
			saveAgentHeap(p.HTTPAddr(), heap)
		}
		record(b, kindTribune, fmt.Sprintf("xds agent-rss proxies=%d", proxies), "MiB", float64(rssAfter)/1024,
			fmt.Sprintf("before streams=%.1fMiB", float64(rssBefore)/1024))
		record(b, kindTribune, fmt.Sprintf("xds agent-rss-per-proxy proxies=%d", proxies), "KiB", float64(rssAfter-rssBefore)/float64(proxies), "")

		profDone := make(chan struct{})
		if profile != "" {
			go func() {
				defer close(profDone)
				resp, err := http.Get("http://" + p.HTTPAddr() + "/debug/pprof/profile?seconds=" + strconv.Itoa(rounds*3))
				if err != nil {
					fmt.Printf("bench: profile: %v\n", err)
					return
				}
				defer resp.Body.Close()
				f, err := os.Create(profile)
				if err == nil {
					_, _ = io.Copy(f, resp.Body)
					f.Close()
				}
			}()
		} else {
			close(profDone)
		}
		defer func() { <-profDone }()
		var edsP50, edsP99, edsMax, rbacP50, rbacP99, rbacMax, edsCPU, rbacCPU []float64
		// agentCPU is the agent's CPU time in ms since the last call: a
		// figure the other loads of a shared machine do not inflate.
		lastTicks, _ := cpuTicks(p.Pid())
		agentCPU := func() float64 {
			t, _ := cpuTicks(p.Pid())
			d := t - lastTicks
			lastTicks = t
			return float64(d) * 10 // 100 ticks a second
		}
		for r := range rounds {
			status := api.HealthCritical
			if r%2 == 1 {
				status = api.HealthPassing
			}
			agentCPU()
			t0 := time.Now()
			if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "node-0-1", Address: "10.0.1.1", SkipNodeUpdate: true,
				Check: &api.AgentCheck{Node: "node-0-1", CheckID: "proxy", Name: "proxy", Status: status, ServiceID: "svc-0-sidecar-proxy"}}, nil); err != nil {
				b.Fatal(err)
			}
			written := time.Since(t0)
			d := waitAcks(b, streams, resource.EndpointType, t0, 60*time.Second)
			fmt.Printf("bench: xds round %d: catalog write %.1fms, first EDS ACK %.1fms, last %.1fms\n", r, ms(written), pct(d, 0), pct(d, 1))
			edsP50, edsP99, edsMax = append(edsP50, pct(d, 0.5)), append(edsP99, pct(d, 0.99)), append(edsMax, pct(d, 1))
			quiet(streams, 500*time.Millisecond, 30*time.Second)
			edsCPU = append(edsCPU, agentCPU())

			t0 = time.Now()
			if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "*",
				Sources: []*api.SourceIntention{{Name: fmt.Sprintf("banned-%d", r), Action: api.IntentionActionDeny}}}, nil); err != nil {
				b.Fatal(err)
			}
			written = time.Since(t0)
			d = waitAcks(b, streams, resource.ListenerType, t0, 60*time.Second)
			fmt.Printf("bench: xds round %d: intention write %.1fms, first LDS ACK %.1fms, last %.1fms\n", r, ms(written), pct(d, 0), pct(d, 1))
			rbacP50, rbacP99, rbacMax = append(rbacP50, pct(d, 0.5)), append(rbacP99, pct(d, 0.99)), append(rbacMax, pct(d, 1))
			quiet(streams, 500*time.Millisecond, 30*time.Second)
			rbacCPU = append(rbacCPU, agentCPU())
		}
		for _, f := range []struct {
			name string
			vals []float64
		}{
			{"eds-ack p50", edsP50}, {"eds-ack p99", edsP99}, {"eds-ack max", edsMax},
			{"rbac-ack p50", rbacP50}, {"rbac-ack p99", rbacP99}, {"rbac-ack max", rbacMax},
			{"eds-change agent-cpu", edsCPU}, {"rbac-change agent-cpu", rbacCPU},
		} {
			record(b, kindTribune, fmt.Sprintf("xds %s proxies=%d", f.name, proxies), "ms", median(f.vals), fmt.Sprintf("rounds=%v", f.vals))
		}
		cpu, _ := cpuTicks(p.Pid())
		record(b, kindTribune, fmt.Sprintf("xds agent-cpu-ticks proxies=%d", proxies), "ticks", float64(cpu), "whole run")
	})
}
