package telemetry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	metrics "github.com/armon/go-metrics"
	compat "github.com/hashicorp/go-metrics/compat"

	"github.com/tribune-mesh/tribune/test/wait"
)

func TestJSONAndPrometheus(t *testing.T) {
	tel, err := New(Config{PrometheusRetentionTime: time.Minute, DisableHostname: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown()
	metrics.IncrCounter([]string{"kvs", "apply"}, 3)
	metrics.SetGauge([]string{"autopilot", "healthy"}, 1)
	metrics.MeasureSince([]string{"raft", "apply"}, time.Now().Add(-5*time.Millisecond))
	// What raft and memberlist emit through hashicorp/go-metrics' compat
	// package lands in the same sinks.
	compat.IncrCounter([]string{"raft", "state", "leader"}, 1)

	w := httptest.NewRecorder()
	tel.ServeHTTP(w, httptest.NewRequest("GET", "/v1/agent/metrics", nil))
	if w.Code != 200 {
		t.Fatalf("JSON status %d", w.Code)
	}
	var summary struct {
		Timestamp string
		Gauges    []struct {
			Name  string
			Value float32
		}
		Counters []struct {
			Name  string
			Count int
			Sum   float64
		}
		Samples []struct{ Name string }
		Points  []any
	}
	if err := json.Unmarshal(w.Body.Bytes(), &summary); err != nil {
		t.Fatalf("JSON: %v: %s", err, w.Body.String())
	}
	names := map[string]bool{}
	for _, g := range summary.Gauges {
		names[g.Name] = true
	}
	for _, c := range summary.Counters {
		names[c.Name] = true
	}
	for _, s := range summary.Samples {
		names[s.Name] = true
	}
	for _, want := range []string{"consul.kvs.apply", "consul.autopilot.healthy", "consul.raft.apply", "consul.raft.state.leader"} {
		if !names[want] {
			t.Errorf("JSON lacks %s (has %v)", want, names)
		}
	}
	if summary.Timestamp == "" {
		t.Error("no Timestamp")
	}

	w = httptest.NewRecorder()
	tel.ServeHTTP(w, httptest.NewRequest("GET", "/v1/agent/metrics?format=prometheus", nil))
	body, _ := io.ReadAll(w.Body)
	for _, want := range []string{"consul_kvs_apply 3", "consul_autopilot_healthy 1", "consul_raft_apply", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("prometheus text lacks %q", want)
		}
	}
}

func TestPrometheusOffAnswers400(t *testing.T) {
	tel, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown()
	w := httptest.NewRecorder()
	tel.ServeHTTP(w, httptest.NewRequest("GET", "/v1/agent/metrics?format=prometheus", nil))
	if w.Code != 400 || tel.Prometheus() {
		t.Fatalf("status %d, Prometheus()=%v", w.Code, tel.Prometheus())
	}
}

// Shutdown stops every goroutine New started: agents come and go in one
// test process, and go-metrics' own runtime loop would never stop.
func TestShutdownLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		tel, err := New(Config{Interval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		tel.Shutdown()
		tel.Shutdown() // twice is harmless
	}
	wait.For(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines, %d before", n, before)
		}
		return nil
	})
}

// With the host name on (Consul's default), the runtime gauges are also
// under their documented names, consul.runtime.*, which the official
// client's TestAPI_AgentMetrics looks for.
func TestRuntimeGaugesWithoutHostName(t *testing.T) {
	tel, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown()
	metrics.SetGauge([]string{"autopilot", "healthy"}, 1)
	// The runtime loop emits on its own goroutine.
	var names map[string]bool
	wait.For(t, 10*time.Second, func() error {
		w := httptest.NewRecorder()
		tel.ServeHTTP(w, httptest.NewRequest("GET", "/v1/agent/metrics", nil))
		var summary struct{ Gauges []struct{ Name string } }
		if err := json.Unmarshal(w.Body.Bytes(), &summary); err != nil {
			return fmt.Errorf("JSON: %w: %s", err, w.Body.String())
		}
		names = map[string]bool{}
		for _, g := range summary.Gauges {
			names[g.Name] = true
		}
		if !names["consul.runtime.alloc_bytes"] {
			return fmt.Errorf("no consul.runtime.alloc_bytes in %v", names)
		}
		return nil
	})
	if tel.plainRuntime != nil && names["consul.autopilot.healthy"] {
		t.Errorf("other gauges lost their host name prefix: %v", names)
	}
}
