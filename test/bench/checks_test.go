package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// BenchmarkChecks5000 registers 5,000 HTTP checks at a 10s interval on one
// -dev agent, against an HTTP server in this process, and reports the
// agent's CPU use and memory while they run (steady state, after one full
// interval).
func BenchmarkChecks5000(b *testing.B) {
	const n = 5000
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	p := startDev(b, kindTribune)
	c, err := api.NewClient(&api.Config{Address: p.HTTPAddr(), Transport: &http.Transport{MaxIdleConnsPerHost: 16}})
	if err != nil {
		b.Fatal(err)
	}
	rss0, _ := procStatusKiB(p.Pid(), "VmRSS")
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var failed atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			err := c.Agent().CheckRegister(&api.AgentCheckRegistration{ID: fmt.Sprintf("http-%d", i), Name: "http",
				AgentServiceCheck: api.AgentServiceCheck{HTTP: srv.URL + fmt.Sprintf("/%d", i), Interval: "10s", Timeout: "5s"}})
			if err != nil {
				failed.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d check registrations failed", failed.Load())
	}
	// One interval for every check to start (they are staggered over it),
	// then measure a window of three intervals.
	time.Sleep(11 * time.Second)
	meter := newCPUMeter([]*proc{p})
	h0 := hits.Load()
	window := 30 * time.Second
	time.Sleep(window)
	rss, _ := procStatusKiB(p.Pid(), "VmRSS")
	probes := float64(hits.Load()-h0) / window.Seconds()
	record(b, kindTribune, "dev checks n=5000 http interval=10s", "probes/s", probes, fmt.Sprintf("cpu%%: %s", meter))
	record(b, kindTribune, "dev checks n=5000 http interval=10s", "rss-total MiB", float64(rss)/1024, fmt.Sprintf("before checks %.1f MiB", float64(rss0)/1024))
}
