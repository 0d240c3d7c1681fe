package bench

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// dnsCatalog registers services x instances, each instance on its own node
// with a passing check, through the catalog API.
func dnsCatalog(b *testing.B, c *api.Client, services, instances int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	sem := make(chan struct{}, 16)
	for s := 0; s < services; s++ {
		for i := 0; i < instances; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(s, i int) {
				defer wg.Done()
				defer func() { <-sem }()
				node := fmt.Sprintf("node-%d-%d", s, i)
				_, err := c.Catalog().Register(&api.CatalogRegistration{
					Node: node, Address: fmt.Sprintf("10.%d.%d.%d", i, s/250, s%250+1),
					Service: &api.AgentService{ID: fmt.Sprintf("svc-%d", s), Service: fmt.Sprintf("svc-%d", s), Port: 8000 + i, Tags: []string{"v1"}},
					Check:   &api.AgentCheck{CheckID: "alive", Name: "alive", Status: api.HealthPassing},
				}, nil)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}(s, i)
		}
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatalf("register: %v", err)
	default:
	}
}

// dnsQueryFile writes a dnsperf data file of A and SRV queries over random
// services.
func dnsQueryFile(b *testing.B, dir string, services, n int) string {
	b.Helper()
	path := filepath.Join(dir, "queries.txt")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		typ := "A"
		if i%2 == 1 {
			typ = "SRV"
		}
		fmt.Fprintf(w, "svc-%d.service.consul %s\n", rand.IntN(services), typ)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return path
}

var (
	dnsperfQPS  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	dnsperfAvg  = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	dnsperfLost = regexp.MustCompile(`Queries lost:\s+([0-9]+)`)
)

// BenchmarkDNSPerf runs dnsperf (-c16, A+SRV over random services) against
// an agent holding 1,000 services x 3 instances, then again while the catalog
// changes 100 times a second. It is skipped without dnsperf on PATH.
func BenchmarkDNSPerf(b *testing.B) {
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		b.Skip("dnsperf not on PATH (Debian package dnsperf)")
	}
	dur := benchDuration(b)
	if v := os.Getenv("BENCH_DNS_DURATION"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			dur = d
		}
	}
	for _, kind := range kinds() {
		p := startDev(b, kind)
		c, err := api.NewClient(&api.Config{Address: p.HTTPAddr(), Transport: &http.Transport{MaxIdleConnsPerHost: 32}})
		if err != nil {
			b.Fatal(err)
		}
		const services, instances = 1000, 3
		dnsCatalog(b, c, services, instances)
		file := dnsQueryFile(b, b.TempDir(), services, 200000)
		run := func(label string) (float64, float64) {
			meter := newCPUMeter([]*proc{p})
			// dnsperf 2.10 reports no percentiles: a sampler sends a few
			// queries a second during the run and measures their latency.
			sctx, stop := context.WithCancel(context.Background())
			samples := make(chan []time.Duration, 1)
			go func() { samples <- sampleDNS(sctx, fmt.Sprintf("127.0.0.1:%d", p.DNSPort), services) }()
			out, err := exec.Command(dnsperf, "-s", "127.0.0.1", "-p", strconv.Itoa(p.DNSPort), "-d", file,
				"-c", "16", "-l", strconv.Itoa(int(dur.Seconds())), "-q", "200", "-t", "2").CombinedOutput()
			stop()
			lat := <-samples
			if err != nil {
				b.Fatalf("dnsperf: %v\n%s", err, out)
			}
			qps := parseFloat(dnsperfQPS, out)
			avg := parseFloat(dnsperfAvg, out) * 1000
			p99 := percentile(lat, 0.99)
			lost := parseFloat(dnsperfLost, out)
			detail := fmt.Sprintf("avg_ms=%.3f sampled_p99_ms=%.3f (n=%d) lost=%.0f cpu%%: %s", avg, p99, len(lat), lost, meter)
			record(b, kind, "dns "+label+" dnsperf-c16", "q/s", qps, detail)
			record(b, kind, "dns "+label+" dnsperf-c16", "avg-ms", avg, "")
			return qps, avg
		}
		// Warm the agent's views once so that the run measures the steady
		// state the issue asks for.
		run("steady")
		dnsPropagation(b, c, fmt.Sprintf("127.0.0.1:%d", p.DNSPort), kind)

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				s := rand.IntN(services)
				status := api.HealthPassing
				if i%2 == 1 {
					status = api.HealthWarning
				}
				_, _ = c.Catalog().Register(&api.CatalogRegistration{Node: fmt.Sprintf("node-%d-0", s), SkipNodeUpdate: true,
					Check: &api.AgentCheck{CheckID: "alive", Name: "alive", Status: status}}, nil)
			}
		}()
		run("churn-100/s")
		cancel()
		wg.Wait()
	}
}

func parseFloat(re *regexp.Regexp, out []byte) float64 {
	m := re.FindSubmatch(out)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return f
}

// dnsPropagation measures how long a new healthy instance takes to appear
// in DNS answers after its registration is acknowledged (median of 5).
func dnsPropagation(b *testing.B, c *api.Client, addr, kind string) {
	var ds []time.Duration
	cl := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	for i := 0; i < 5; i++ {
		ip := fmt.Sprintf("10.250.0.%d", i+1)
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: fmt.Sprintf("prop-%d", i), Address: ip,
			Service: &api.AgentService{ID: "svc-7", Service: "svc-7", Port: 1},
			Check:   &api.AgentCheck{CheckID: "alive", Name: "alive", Status: api.HealthPassing}}, nil); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for {
			m := new(dns.Msg)
			m.SetQuestion("svc-7.service.consul.", dns.TypeA)
			r, _, err := cl.Exchange(m, addr)
			found := false
			if err == nil {
				for _, rr := range r.Answer {
					if a, ok := rr.(*dns.A); ok && a.A.String() == ip {
						found = true
					}
				}
			}
			if found {
				ds = append(ds, time.Since(start))
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("instance %s not in DNS after 10s", ip)
			}
			time.Sleep(time.Millisecond)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	record(b, kind, "dns catalog-change->answer median-of-5", "ms", float64(ds[2].Microseconds())/1000,
		fmt.Sprintf("min=%v max=%v", ds[0].Round(10*time.Microsecond), ds[4].Round(10*time.Microsecond)))
}

// sampleDNS sends an A query for a random service every 5ms until ctx ends
// and returns the latencies of the answered ones.
func sampleDNS(ctx context.Context, addr string, services int) []time.Duration {
	var out []time.Duration
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("svc-%d.service.consul.", rand.IntN(services)), dns.TypeA)
		start := time.Now()
		if _, _, err := c.Exchange(m, addr); err == nil {
			out = append(out, time.Since(start))
		}
	}
}

// percentile returns the p-th latency in milliseconds.
func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}
