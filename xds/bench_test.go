package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// BenchmarkCatalogChangeTo1000Proxies: 1,000 proxies hold ADS streams (CDS
// and EDS) to one server; one catalog change (a new instance of their shared
// upstream) is built into every proxy's snapshot and pushed; the figure is
// the time until the last proxy has ACKed the new EDS version (the issue's
// target: p99 <= 1 s; the last ACK bounds the p99).
func BenchmarkCatalogChangeTo1000Proxies(b *testing.B) {
	const proxies = 1000
	s, addr := startServer(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := testProxy(b)
	ps := make([]*Proxy, proxies)
	nodes := make([]string, proxies)
	for i := range ps {
		p := *base
		p.ID = fmt.Sprintf("web-%d-sidecar-proxy", i)
		p.Upstreams = []Upstream{{DestinationName: "db", LocalBindPort: 9191, Endpoints: []Endpoint{{Address: "10.0.0.2", Port: 21000, Healthy: true}}}}
		ps[i], nodes[i] = &p, p.ID
		if _, err := s.Update(ctx, &p); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < proxies; i++ {
		c := dialADS(b, ctx, addr, nodes[i])
		if err := c.subscribe(resource.ClusterType); err != nil {
			b.Fatal(err)
		}
		if err := c.subscribe(resource.EndpointType); err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				if _, err := c.recvAndAnswer(false); err != nil {
					return
				}
			}
		}()
	}
	first, _ := Build(ps[0])
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	if err := s.WaitAcked(wctx, resource.EndpointType, first.GetVersion(resource.EndpointType), nodes); err != nil {
		b.Fatal(err)
	}
	wcancel()
	b.ResetTimer()
	var worst time.Duration
	for n := 0; n < b.N; n++ {
		start := time.Now()
		var version string
		for _, p := range ps {
			p.Upstreams[0].Endpoints = append(p.Upstreams[0].Endpoints, Endpoint{Address: fmt.Sprintf("10.1.%d.%d", n/250, n%250), Port: 21000, Healthy: true})
			snap, err := s.Update(ctx, p)
			if err != nil {
				b.Fatal(err)
			}
			version = snap.GetVersion(resource.EndpointType)
		}
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		if err := s.WaitAcked(wctx, resource.EndpointType, version, nodes); err != nil {
			b.Fatal(err)
		}
		wcancel()
		if d := time.Since(start); d > worst {
			worst = d
		}
	}
	b.ReportMetric(float64(worst.Milliseconds()), "ms-last-ack-worst")
}
