package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestHarden_AgentMetrics is not parallel: go-metrics has one process-wide
// sink, which the last agent started in the process owns.
//
// Issue 10 / 14: /v1/agent/metrics serves Consul's JSON (read with the
// official client) and, with prometheus_retention_time, the Prometheus
// text; the writes, reads, DNS queries, HTTP requests and the leader's
// routines of a real agent show up under Consul's names and prefix.
func TestHarden_AgentMetrics(t *testing.T) {
	cfg := agenttest.Config(t)
	cfg.Telemetry.PrometheusRetentionTime = time.Minute
	cfg.Telemetry.DisableHostname = true
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", cfg.Ports.DNS)

	round := 0
	traffic := func() {
		t.Helper()
		if _, err := c.KV().Put(&api.KVPair{Key: "m", Value: []byte("1")}, nil); err != nil {
			t.Fatal(err)
		}
		_, meta, err := c.KV().Get("m", nil)
		if err != nil {
			t.Fatal(err)
		}
		// A blocking query (rpc.query), answered when its short wait ends.
		if _, _, err := c.KV().Get("m", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.Txn().Txn(api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "mt", Value: []byte("v")}}}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "mn", Address: "10.0.0.9"}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "mn"}, nil); err != nil {
			t.Fatal(err)
		}
		// A lock with a session that does not exist: a failed request.
		_, _, _ = c.KV().Acquire(&api.KVPair{Key: "ml", Session: "00000000-0000-0000-0000-000000000001"}, nil)
		// A name never asked before is decided afresh (dns.domain_query);
		// repeats of one are answered from the packet cache
		// (dns.cached_answers).
		round++
		fresh := new(dns.Msg)
		fresh.SetQuestion(fmt.Sprintf("fresh-%d.service.consul.", round), dns.TypeA)
		if _, err := dns.Exchange(fresh, dnsAddr); err != nil {
			t.Fatalf("dns: %v", err)
		}
		m := new(dns.Msg)
		m.SetQuestion("consul.service.consul.", dns.TypeA)
		for i := 0; i < 3; i++ {
			if _, err := dns.Exchange(m, dnsAddr); err != nil {
				t.Fatalf("dns: %v", err)
			}
		}
	}

	want := []string{
		"consul.kvs.apply", "consul.txn.apply", "consul.catalog.register", "consul.catalog.deregister",
		"consul.api.http", "consul.rpc.request", "consul.rpc.query", "consul.rpc.request_error",
		"consul.dns.domain_query", "consul.dns.cached_answers", "consul.leader.reconcile", "consul.autopilot.healthy",
		"consul.autopilot.failure_tolerance", "consul.raft.apply",
	}
	var info *api.MetricsInfo
	wait.For(t, 30*time.Second, func() error {
		traffic()
		info, err = c.Agent().Metrics()
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, g := range info.Gauges {
			have[g.Name] = true
		}
		for _, p := range info.Points {
			have[p.Name] = true
		}
		for _, s := range info.Counters {
			have[s.Name] = true
		}
		for _, s := range info.Samples {
			have[s.Name] = true
		}
		var missing []string
		for _, n := range want {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing %v", missing)
		}
		return nil
	})
	// api.http is labelled by method and endpoint family, not raw path.
	found := false
	for _, s := range info.Samples {
		if s.Name == "consul.api.http" && s.Labels["method"] == "PUT" && s.Labels["path"] == "v1_kv_" {
			found = true
		}
		if s.Name == "consul.api.http" && strings.Contains(s.Labels["path"], "/") {
			t.Errorf("api.http path label %q is a raw path", s.Labels["path"])
		}
	}
	if !found {
		t.Errorf("no api.http sample for PUT v1_kv_")
	}

	// The Prometheus text format.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+a.HTTPAddr()+"/v1/agent/metrics?format=prometheus", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("prometheus: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, n := range []string{"consul_kvs_apply", "consul_api_http", "consul_rpc_request", "consul_raft_apply", "go_goroutines",
		`consul_api_http{method="PUT",path="v1_kv_"`} {
		if !strings.Contains(string(body), n) {
			t.Errorf("prometheus text lacks %s", n)
		}
	}
}

// Without prometheus_retention_time the Prometheus format is refused, as
// in Consul, and the JSON format still works.
func TestHarden_AgentMetricsNoPrometheus(t *testing.T) {
	a, c := startAPI(t)
	if _, err := c.Agent().Metrics(); err != nil {
		t.Fatalf("json metrics: %v", err)
	}
	if r := httpString(t, a, "GET", "/v1/agent/metrics?format=prometheus", ""); r.code != http.StatusBadRequest {
		t.Errorf("prometheus without retention: %d %q", r.code, r.body)
	}
}

// TestHarden_MetricsScrapeUnderLoad is not parallel (one process-wide
// sink). Scrapers hammering both formats never hold up writes: 300 KV
// writes with 8 scrapers running finish, each well within a second.
func TestHarden_MetricsScrapeUnderLoad(t *testing.T) {
	cfg := agenttest.Config(t)
	cfg.Telemetry.PrometheusRetentionTime = time.Minute
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var scrapes atomic.Int64
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(prom bool) {
			defer wg.Done()
			url := "http://" + a.HTTPAddr() + "/v1/agent/metrics"
			if prom {
				url += "?format=prometheus"
			}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				scrapes.Add(1)
			}
		}(i%2 == 0)
	}
	defer func() { cancel(); wg.Wait() }()
	var slowest time.Duration
	for i := 0; i < 300; i++ {
		start := time.Now()
		if _, err := c.KV().Put(&api.KVPair{Key: fmt.Sprintf("load/%d", i), Value: []byte("v")}, nil); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest > time.Second {
		t.Errorf("slowest write under scraping took %v", slowest)
	}
	t.Logf("300 writes, slowest %v, with %d scrapes meanwhile", slowest, scrapes.Load())
	if scrapes.Load() == 0 {
		t.Error("no scrape completed")
	}
}
