// Package telemetry collects the agent's metrics and serves them in Consul's
// two formats: the JSON of GET /v1/agent/metrics and, when
// telemetry.prometheus_retention_time is set, Prometheus text.
//
// It uses go-metrics (the armon module, which hashicorp/go-metrics' compat
// package forwards to by default) because hashicorp/raft and memberlist
// already emit raft.* and memberlist.* through it: one registry holds theirs
// and ours, under Consul's names and the "consul" prefix, so existing
// dashboards keep working. go-metrics keeps one process-wide sink; in a
// process that runs several agents (tests), the last Telemetry made receives
// every agent's metrics.
package telemetry

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	metrics "github.com/armon/go-metrics"
	promsink "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is the agent's telemetry stanza.
type Config struct {
	// MetricsPrefix is telemetry.metrics_prefix, "consul" by default.
	MetricsPrefix string
	// DisableHostname is telemetry.disable_hostname: gauges are not
	// prefixed with the host name.
	DisableHostname bool
	// PrometheusRetentionTime is telemetry.prometheus_retention_time; zero
	// disables the Prometheus format.
	PrometheusRetentionTime time.Duration
	// Interval and Retain size the in-memory sink behind the JSON format:
	// 10s intervals kept for 1m by default.
	Interval, Retain time.Duration
}

// Telemetry owns the sinks and serves them.
type Telemetry struct {
	inm      *memSink
	registry *prometheus.Registry // nil without Prometheus
	metrics  *metrics.Metrics
	// plainRuntime emits the runtime gauges without the host name prefix
	// when metrics has one (nil otherwise).
	plainRuntime *metrics.Metrics

	// stopRuntime ends the runtime-metrics loop; runtimeDone is closed
	// when it has returned.
	stopRuntime chan struct{}
	runtimeDone chan struct{}
	stopOnce    sync.Once
}

var globalMu sync.Mutex

// New sets up the sinks and makes them the process's go-metrics sink.
func New(cfg Config) (*Telemetry, error) {
	if cfg.MetricsPrefix == "" {
		cfg.MetricsPrefix = "consul"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Retain <= 0 {
		cfg.Retain = time.Minute
	}
	t := &Telemetry{inm: newMemSink(cfg.Interval, cfg.Retain)}
	sinks := metrics.FanoutSink{t.inm}
	if cfg.PrometheusRetentionTime > 0 {
		t.registry = prometheus.NewRegistry()
		t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		ps, err := promsink.NewPrometheusSinkFrom(promsink.PrometheusOpts{
			Expiration: cfg.PrometheusRetentionTime,
			Registerer: t.registry,
			Name:       "tribune_" + fmt.Sprint(time.Now().UnixNano()),
		})
		if err != nil {
			return nil, fmt.Errorf("telemetry: prometheus sink: %w", err)
		}
		sinks = append(sinks, ps)
	}
	mc := metrics.DefaultConfig(cfg.MetricsPrefix)
	mc.EnableHostname = !cfg.DisableHostname
	mc.EnableHostnameLabel = false
	// go-metrics' own runtime loop never stops (one leaked goroutine per
	// Telemetry); runRuntime is the same loop, owned and stopped.
	mc.EnableRuntimeMetrics = false
	mc.ProfileInterval = cfg.Interval
	if h, err := os.Hostname(); err == nil {
		mc.HostName = h
	}
	globalMu.Lock()
	defer globalMu.Unlock()
	m, err := metrics.NewGlobal(mc, sinks)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	t.metrics = m
	if mc.EnableHostname && mc.HostName != "" {
		// go-metrics prefixes gauges with the host name, runtime ones
		// included; Consul's documented names, the official client's
		// tests and tools reading /v1/agent/metrics (metricbeat) expect
		// consul.runtime.*: emit those too, through a second,
		// non-global Metrics on the same sinks.
		pc := *mc
		pc.EnableHostname = false
		if t.plainRuntime, err = metrics.New(&pc, sinks); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}
	t.stopRuntime, t.runtimeDone = make(chan struct{}), make(chan struct{})
	go t.runRuntime(cfg.Interval)
	return t, nil
}

// runRuntime emits the Go runtime's statistics (runtime.num_goroutines,
// alloc_bytes, gc_pause_ns, ...) every interval until Shutdown.
func (t *Telemetry) runRuntime(interval time.Duration) {
	defer close(t.runtimeDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	emit := func() {
		t.metrics.EmitRuntimeStats()
		if t.plainRuntime != nil {
			t.plainRuntime.EmitRuntimeStats()
		}
	}
	emit()
	for {
		select {
		case <-t.stopRuntime:
			return
		case <-tick.C:
			emit()
		}
	}
}

// Prometheus reports whether the Prometheus format is enabled.
func (t *Telemetry) Prometheus() bool { return t.registry != nil }

// ServeHTTP answers GET /v1/agent/metrics: Consul's JSON (Timestamp, Gauges,
// Points, Counters, Samples), or with ?format=prometheus the Prometheus text
// format (400 when prometheus_retention_time is not set, as Consul does).
func (t *Telemetry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("format") == "prometheus" {
		if t.registry == nil {
			http.Error(w, "Prometheus is not enabled since its retention time is not positive", http.StatusBadRequest)
			return
		}
		promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
		return
	}
	summary, err := t.inm.summary()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := jsonEncoder(w, r.URL.Query().Has("pretty"))
	if err := enc.Encode(summary); err != nil {
		return // the client went away
	}
}

// Shutdown stops the runtime-metrics loop and waits for it. It is safe to
// call more than once.
func (t *Telemetry) Shutdown() {
	t.stopOnce.Do(func() {
		close(t.stopRuntime)
		<-t.runtimeDone
		globalMu.Lock()
		defer globalMu.Unlock()
		t.metrics.Shutdown()
	})
}
