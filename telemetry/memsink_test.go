package telemetry

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	metrics "github.com/armon/go-metrics"
)

// TestMemSinkAnswersAsInmemSink feeds the same metrics to memSink and to
// go-metrics' InmemSink and compares the JSON of their summaries: the names,
// labels and aggregates of /v1/agent/metrics must not change.
func TestMemSinkAnswersAsInmemSink(t *testing.T) {
	ours := newMemSink(time.Hour, 2*time.Hour)
	ref := metrics.NewInmemSink(time.Hour, 2*time.Hour)
	labels := []metrics.Label{{Name: "method", Value: "GET"}, {Name: "path", Value: "v1 kv"}}
	for _, s := range []metrics.MetricSink{ours, ref} {
		s.SetGauge([]string{"autopilot", "healthy"}, 1)
		s.SetGauge([]string{"autopilot", "healthy"}, 0)
		s.SetGaugeWithLabels([]string{"a b", "c"}, 2, labels)
		s.EmitKey([]string{"raft", "point"}, 1)
		s.EmitKey([]string{"raft", "point"}, 2)
		for i := 0; i < 5; i++ {
			s.IncrCounter([]string{"rpc", "request"}, 1)
			s.IncrCounterWithLabels([]string{"rpc", "request"}, float32(i), labels)
			s.AddSampleWithLabels([]string{"api", "http"}, float32(i)*1.5, labels)
			s.AddSample([]string{"kvs", "apply"}, float32(10-i))
		}
	}
	got, err := ours.summary()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ref.DisplayMetrics(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("memSink answers\n%s\nInmemSink answers\n%s", g, w)
	}
}

// TestMemSinkSeenMetricDoesNotAllocate: the request path's metrics cost no
// allocation once their name has been seen.
func TestMemSinkSeenMetricDoesNotAllocate(t *testing.T) {
	s := newMemSink(time.Hour, 2*time.Hour)
	key := []string{"consul", "api", "http"}
	labels := []metrics.Label{{Name: "method", Value: "GET"}, {Name: "path", Value: "v1_kv_"}}
	s.AddSampleWithLabels(key, 1, labels)
	s.IncrCounter(key, 1)
	allocs := testing.AllocsPerRun(1000, func() {
		s.AddSampleWithLabels(key, 1, labels)
		s.IncrCounter(key, 1)
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per call", allocs)
	}
}

// BenchmarkSink compares the cost of one labelled sample.
func BenchmarkSink(b *testing.B) {
	key := []string{"consul", "api", "http"}
	labels := []metrics.Label{{Name: "method", Value: "GET"}, {Name: "path", Value: "v1_kv_"}}
	for _, c := range []struct {
		name string
		sink metrics.MetricSink
	}{{"memSink", newMemSink(10*time.Second, time.Minute)}, {"InmemSink", metrics.NewInmemSink(10*time.Second, time.Minute)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c.sink.AddSampleWithLabels(key, 1, labels)
			}
		})
	}
}

// TestMemSinkConcurrentUse: metrics recorded from many goroutines while the
// summary is read are all counted (run with -race).
func TestMemSinkConcurrentUse(t *testing.T) {
	s := newMemSink(time.Hour, 2*time.Hour)
	labels := []metrics.Label{{Name: "method", Value: "GET"}}
	done := make(chan struct{})
	for g := 0; g < 8; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 500; i++ {
				s.IncrCounterWithLabels([]string{"rpc", "request"}, 1, labels)
				s.AddSample([]string{"api", "http"}, 1)
				s.SetGauge([]string{"g"}, float32(i))
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if _, err := s.summary(); err != nil {
			t.Fatal(err)
		}
	}
	for g := 0; g < 8; g++ {
		<-done
	}
	sum, err := s.summary()
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Counters) != 1 || sum.Counters[0].Count != 4000 || len(sum.Samples) != 1 || sum.Samples[0].Count != 4000 {
		t.Fatalf("counters %+v samples %+v", sum.Counters, sum.Samples)
	}
}
