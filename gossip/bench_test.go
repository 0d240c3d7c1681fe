package gossip

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkFailureDetection100 measures, over 100 in-process members on
// loopback, how long until every member marks a killed member failed, and
// how long until every member sees it alive again after it returns. Timings
// are memberlist's LAN profile unless GOSSIP_BENCH_FAST=1 selects the local
// one.
func BenchmarkFailureDetection100(b *testing.B) {
	const n = 100
	fast := os.Getenv("GOSSIP_BENCH_FAST") == "1"
	start := func(name string, port int) *Pool {
		p, err := New(&Config{NodeName: name, BindAddr: "127.0.0.1", BindPort: port,
			Tags: map[string]string{"id": name}, Fast: fast})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	for i := 0; i < b.N; i++ {
		pools := make([]*Pool, n)
		for j := range pools {
			pools[j] = start(fmt.Sprintf("m%03d", j), freePort(b))
			if j > 0 {
				if _, err := pools[j].Join([]string{addr(pools[0])}); err != nil {
					b.Fatal(err)
				}
			}
		}
		waitAll := func(what string, d time.Duration, cond func(p *Pool) bool) time.Duration {
			begin := time.Now()
			for time.Since(begin) < d {
				ok := true
				for _, p := range pools[1:] {
					if p != nil && !cond(p) {
						ok = false
						break
					}
				}
				if ok {
					return time.Since(begin)
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.Fatalf("timed out: %s", what)
			return 0
		}
		waitAll("full membership", 60*time.Second, func(p *Pool) bool { return p.NumMembers() == n })
		victim := pools[n-1]
		name := "m099"
		_ = victim.Shutdown()
		pools[n-1] = nil
		detect := waitAll("failure detected", 120*time.Second, func(p *Pool) bool { return statusOf(p, name) == StatusFailed })
		// It returns on the same address, as a restarted agent does.
		back := start(name, victim.cfg.BindPort)
		if _, err := back.Join([]string{addr(pools[0])}); err != nil {
			b.Fatal(err)
		}
		pools[n-1] = back
		converge := waitAll("rejoin converged", 120*time.Second, func(p *Pool) bool { return p == back || statusOf(p, name) == StatusAlive })
		b.ReportMetric(detect.Seconds(), "s-to-detect-failure")
		b.ReportMetric(converge.Seconds(), "s-to-converge-rejoin")
		fmt.Printf("bench: gossip members=%d fast=%v failure-detected-by-all=%v rejoin-converged=%v\n", n, fast, detect.Round(time.Millisecond), converge.Round(time.Millisecond))
		for _, p := range pools {
			_ = p.Shutdown()
		}
	}
}
