package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	procharness "github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// The benchmarks run in the order of this file: the -dev workloads (each
// on a fresh agent per implementation), then the shared cluster, the
// failover last.

// BenchmarkDevKVWrite: -dev, PUT of a 100-byte value to random keys of a
// 1000-key space, with 1 and 64 concurrent clients.
func BenchmarkDevKVWrite(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			runOnce(b, func() {
				d := benchDuration(b)
				name := fmt.Sprintf("dev kv-write clients=%d", clients)
				vals := map[string]float64{}
				cpu := map[string]float64{}
				for _, kind := range kinds() {
					p := startDev(b, kind, devProfileArgs(kind)...)
					profiled := profileDevLoad(p, kind, name, d)
					r := kvWriteLoad(b, p.HTTPAddr(), clients, d, []*proc{p})
					profiled()
					p.Kill()
					vals[kind] = r.opsPerSec()
					cpu[kind] = r.agentCPUPerOp()
					record(b, kind, name, "ops/s", r.opsPerSec(), r.String())
					record(b, kind, name+" agent-cpu-per-op", "us", r.agentCPUPerOp(), "")
				}
				ratio(b, name, "ops/s", vals)
				ratio(b, name+" agent-cpu-per-op", "us", cpu)
			})
		})
	}
}

// BenchmarkDevRead: -dev, GET of random keys with 64 clients in the three
// consistency modes.
func BenchmarkDevRead(b *testing.B) {
	for _, mode := range []readMode{readDefault, readConsistent, readStale} {
		b.Run(fmt.Sprintf("mode=%s/clients=64", mode), func(b *testing.B) {
			runOnce(b, func() {
				d := benchDuration(b)
				name := fmt.Sprintf("dev read-%s clients=64", mode)
				vals := map[string]float64{}
				cpu := map[string]float64{}
				for _, kind := range kinds() {
					p := startDev(b, kind, devProfileArgs(kind)...)
					populate(b, p.HTTPAddr())
					profiled := profileDevLoad(p, kind, name, d)
					r := kvReadLoad(b, p.HTTPAddr(), mode, 64, d, []*proc{p})
					profiled()
					p.Kill()
					vals[kind] = r.opsPerSec()
					cpu[kind] = r.agentCPUPerOp()
					record(b, kind, name, "ops/s", r.opsPerSec(), r.String())
					record(b, kind, name+" agent-cpu-per-op", "us", r.agentCPUPerOp(), "")
				}
				ratio(b, name, "ops/s", vals)
				ratio(b, name+" agent-cpu-per-op", "us", cpu)
			})
		})
	}
}

// BenchmarkDevWatchers: -dev, N blocking queries on one key, then one
// write: the time until all have the new value and the agent's memory.
func BenchmarkDevWatchers(b *testing.B) {
	for _, n := range watcherCounts(b) {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			runOnce(b, func() {
				name := fmt.Sprintf("dev watchers n=%d", n)
				woken := map[string]float64{}
				total := map[string]float64{}
				delta := map[string]float64{}
				for _, kind := range kinds() {
					// Consul limits each client IP to 200 HTTP
					// connections by default; every watcher here comes
					// from 127.0.0.1.
					args := []string{"-hcl", "limits { http_max_conns_per_client = 1000000 }"}
					prof := ""
					if kind == kindTribune {
						prof = os.Getenv("BENCH_WATCH_PPROF")
					}
					if prof != "" {
						args = append(args, "-hcl", "enable_debug = true")
					}
					p := startDev(b, kind, args...)
					r := runWatchers(b, p, n, prof)
					p.Kill()
					detail := fmt.Sprintf("p50_ms=%.1f put_ms=%.1f agent_cpu_ms=%.0f client_cpu_ms=%.0f blocked_in=%s agent_sockets=%d spurious=%d errors=%d",
						ms(r.p50Woken), ms(r.putLatency), ms(r.agentCPU), ms(r.clientCPU), r.blockedIn.Round(time.Millisecond), r.agentSockets, r.spurious, r.errs)
					detail += " " + r.breakdown()
					if prof != "" {
						// The agent's side of the wake, from its trace.
						if tl, err := wakeTimeline(prof + ".trace"); err == nil {
							detail += " " + tl
						} else {
							detail += " agent_trace: " + err.Error()
						}
					}
					if r.settleNotReached != "" {
						detail += " settle: " + strings.TrimSpace(r.settleNotReached)
					}
					if r.agentFDExhausted {
						detail += " AGENT RAN OUT OF FILE DESCRIPTORS (too many open files)"
					}
					woken[kind] = ms(r.allWoken)
					total[kind] = r.rssTotalMiB()
					delta[kind] = r.rssDeltaMiB()
					record(b, kind, name+" write->all-woken", "ms", ms(r.allWoken), detail)
					record(b, kind, name+" rss-total", "MiB", r.rssTotalMiB(), fmt.Sprintf("before=%.1fMiB", float64(r.rssBefore)/1024))
					record(b, kind, name+" rss-delta", "MiB", r.rssDeltaMiB(), "")
				}
				ratio(b, name+" write->all-woken", "ms", woken)
				ratio(b, name+" rss-total", "MiB", total)
				ratio(b, name+" rss-delta", "MiB", delta)
			})
		})
	}
}

// BenchmarkClusterKVWrite: 3 servers + 1 client agent, writes through the
// client agent.
func BenchmarkClusterKVWrite(b *testing.B) {
	for _, clients := range []int{64, 1} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			runOnce(b, func() {
				c := getCluster(b)
				d := benchDuration(b)
				r, perOp := clusterRun(b, c, fmt.Sprintf("write-c%d", clients), d, func() loadResult {
					return kvWriteLoad(b, c.client.HTTPAddr(), clients, d, c.all())
				})
				record(b, kindTribune, fmt.Sprintf("cluster kv-write clients=%d", clients), "ops/s", r.opsPerSec(), r.String()+" "+perOp)
			})
		})
	}
}

// BenchmarkClusterRead: 3 servers + 1 client agent, reads through the
// client agent in the three consistency modes (the -dev reads' workload).
func BenchmarkClusterRead(b *testing.B) {
	var populated sync.Once
	for _, mode := range []readMode{readDefault, readConsistent, readStale} {
		b.Run(fmt.Sprintf("mode=%s/clients=64", mode), func(b *testing.B) {
			runOnce(b, func() {
				c := getCluster(b)
				populated.Do(func() { populate(b, c.client.HTTPAddr()) })
				d := benchDuration(b)
				r, perOp := clusterRun(b, c, "read-"+string(mode), d, func() loadResult {
					return kvReadLoad(b, c.client.HTTPAddr(), mode, 64, d, c.all())
				})
				record(b, kindTribune, fmt.Sprintf("cluster read-%s clients=64", mode), "ops/s", r.opsPerSec(), r.String()+" "+perOp)
			})
		})
	}
}

// BenchmarkClusterFailover: SIGKILL the leader, time until a write through
// the client agent succeeds; the killed server is restarted on its data
// directory between runs.
func BenchmarkClusterFailover(b *testing.B) {
	runOnce(b, func() {
		c := getCluster(b)
		runs := 5
		if s := os.Getenv("BENCH_FAILOVERS"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				b.Fatalf("BENCH_FAILOVERS=%q", s)
			}
			runs = n
		}
		kv := newAPIClient(b, c.client.HTTPAddr()).KV()
		var times []float64
		for run := 1; run <= runs; run++ {
			d, detail := failoverOnce(b, c, kv, run)
			times = append(times, d.Seconds())
			record(b, kindTribune, fmt.Sprintf("cluster failover run=%d leader-kill->write-ok", run), "s", d.Seconds(), detail)
		}
		sorted := append([]float64(nil), times...)
		sort.Float64s(sorted)
		record(b, kindTribune, "cluster failover median leader-kill->write-ok", "s", median(times),
			fmt.Sprintf("runs=%d min=%.2fs max=%.2fs", runs, sorted[0], sorted[len(sorted)-1]))
	})
}

func failoverOnce(b *testing.B, c *cluster, kv *api.KV, run int) (time.Duration, string) {
	// A healthy cluster first: every server up, a leader, a write that
	// goes through.
	for _, s := range c.servers {
		if err := s.WaitReady(context.Background(), 3, 90*time.Second); err != nil {
			b.Fatalf("before failover run %d: %v", run, err)
		}
	}
	if _, err := kv.Put(&api.KVPair{Key: "bench/failover", Value: []byte("warm")}, nil); err != nil {
		b.Fatalf("before failover run %d: write: %v", run, err)
	}
	leader, _, err := procharness.Status(c.client.HTTPAddr())
	if err != nil {
		b.Fatalf("failover run %d: leader: %v", run, err)
	}
	victim := c.serverFor(leader)
	if victim == nil {
		b.Fatalf("failover run %d: leader %q is none of the servers", run, leader)
	}

	t0 := time.Now()
	victim.Kill()
	var (
		attempts int
		lastErr  error
		took     time.Duration
	)
	for {
		attempts++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := kv.Put(&api.KVPair{Key: "bench/failover", Value: []byte(strconv.Itoa(run))}, (&api.WriteOptions{}).WithContext(ctx))
		cancel()
		if err == nil {
			took = time.Since(t0)
			break
		}
		lastErr = err
		if time.Since(t0) > 3*time.Minute {
			b.Fatalf("failover run %d: no write succeeded 3m after killing %s (%d attempts, last error: %v)", run, victim.Name, attempts, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	newLeader, _, _ := procharness.Status(c.client.HTTPAddr())
	newName := newLeader
	if s := c.serverFor(newLeader); s != nil {
		newName = s.Name
	}
	detail := fmt.Sprintf("killed=%s new_leader=%s attempts=%d", victim.Name, newName, attempts)
	if lastErr != nil {
		detail += fmt.Sprintf(" last_error=%q", lastErr.Error())
	}

	// Restart the killed server on its data directory and wait for the
	// cluster to be whole again.
	if err := victim.Launch(); err != nil {
		b.Fatal(err)
	}
	restart := time.Now()
	if err := victim.WaitReady(context.Background(), 3, 2*time.Minute); err != nil {
		b.Fatalf("failover run %d: restarted %s: %v", run, victim.Name, err)
	}
	if err := c.client.WaitReady(context.Background(), 3, time.Minute); err != nil {
		b.Fatalf("failover run %d: client: %v", run, err)
	}
	// Caught up: the restarted server serves the value written after it
	// was killed from its own state.
	vkv := newAPIClient(b, victim.HTTPAddr()).KV()
	if err := wait.Until(context.Background(), time.Minute, func() error {
		p, _, err := vkv.Get("bench/failover", &api.QueryOptions{AllowStale: true})
		if err == nil && (p == nil || string(p.Value) != strconv.Itoa(run)) {
			err = fmt.Errorf("bench/failover = %+v", p)
		}
		return err
	}); err != nil {
		b.Fatalf("failover run %d: restarted %s has not caught up after 1m: %v", run, victim.Name, err)
	}
	detail += fmt.Sprintf(" rejoined_in=%s", time.Since(restart).Round(time.Millisecond))
	// Let the restarted server catch up and the cluster settle before the
	// next kill.
	time.Sleep(3 * time.Second)
	return took, detail
}

// ---- reporting ----

// figure is one printed measurement.
type figure struct {
	kind, name, unit string
	value            float64
}

var (
	figMu   sync.Mutex
	figures []figure
	results = map[string][]metric{} // by benchmark name, for b.N > 1
)

type metric struct {
	value float64
	unit  string
}

// runOnce runs a fixed-duration workload on the first call of a benchmark
// and only repeats its metrics if the framework calls it again with a
// larger b.N (without -benchtime=1x).
func runOnce(b *testing.B, fn func()) {
	b.Helper()
	figMu.Lock()
	ms, done := results[b.Name()]
	figMu.Unlock()
	if !done {
		fn()
		figMu.Lock()
		ms = results[b.Name()]
		results[b.Name()] = ms
		figMu.Unlock()
	}
	for _, m := range ms {
		b.ReportMetric(m.value, m.unit)
	}
}

// record prints one figure on its own line and keeps it as a metric of b.
func record(b *testing.B, kind, name, unit string, v float64, detail string) {
	line := "bench: "
	if kind != kindTribune {
		line += kind + " "
	}
	line += fmt.Sprintf("%s %s=%s", name, unit, formatValue(v))
	if detail != "" {
		line += " (" + detail + ")"
	}
	fmt.Println(line)
	figMu.Lock()
	figures = append(figures, figure{kind: kind, name: name, unit: unit, value: v})
	results[b.Name()] = append(results[b.Name()], metric{v, metricUnit(kind, name, unit)})
	figMu.Unlock()
}

// ratio prints tribune/consul for a figure measured on both.
func ratio(b *testing.B, name, unit string, vals map[string]float64) {
	t, okT := vals[kindTribune]
	c, okC := vals[kindConsul]
	if !okT || !okC {
		return
	}
	if c == 0 {
		fmt.Printf("bench: ratio tribune/consul %s %s=n/a (consul 0)\n", name, unit)
		return
	}
	r := t / c
	fmt.Printf("bench: ratio tribune/consul %s %s=%.2f\n", name, unit, r)
	figMu.Lock()
	figures = append(figures, figure{kind: "ratio tribune/consul", name: name, unit: unit, value: r})
	results[b.Name()] = append(results[b.Name()], metric{r, metricUnit("ratio", name, unit)})
	figMu.Unlock()
}

// metricUnit names a metric for ReportMetric: no spaces, distinct within
// one benchmark.
func metricUnit(kind, name, unit string) string {
	u := unit
	switch {
	case strings.Contains(name, "rss-total"):
		u = "MiB-rss"
	case strings.Contains(name, "rss-delta"):
		u = "MiB-rss-delta"
	case strings.HasSuffix(name, " agent-cpu-per-op"):
		u = "us-agent-cpu/op"
	case strings.Contains(name, "all-woken"):
		u = "ms-all-woken"
	case strings.Contains(name, "failover run="):
		u = "s-run" + strings.TrimPrefix(strings.Fields(name)[2], "run=")
	case strings.Contains(name, "failover median"):
		u = "s-median"
	case strings.Contains(name, " acl="):
		f := strings.Fields(name) // dev kv-write acl=off clients=16
		u = unit + "-" + f[1] + "-" + f[2]
	case strings.HasPrefix(name, "cluster logstore="):
		f := strings.Fields(name) // cluster logstore=wal kv-write clients=64 median
		u = unit + "-" + strings.TrimPrefix(f[1], "logstore=") + "-" + f[3]
	case strings.HasPrefix(name, "acl overhead "):
		u = unit + "-" + strings.Fields(name)[2]
	}
	switch kind {
	case kindTribune:
		return u
	case "ratio":
		return "tribune/consul-" + u
	}
	return kind + "-" + u
}

func formatValue(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10 || v <= -10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// reference holds the Consul 1.16.6 figures of the issue (2 cores), by
// figure name and unit, printed beside ours in the summary.
var reference = map[string]string{
	"dev kv-write clients=64 ops/s":                   "7.0k",
	"cluster kv-write clients=64 ops/s":               "2.3k",
	"cluster kv-write clients=1 ops/s":                "312",
	"cluster read-consistent clients=64 ops/s":        "4.9k",
	"cluster read-stale clients=64 ops/s":             "7.7k",
	"dev watchers n=5000 write->all-woken ms":         "419",
	"dev watchers n=5000 rss-total MiB":               "540",
	"cluster failover median leader-kill->write-ok s": "13.8",
	"dns steady dnsperf-c16 q/s":                      "18.7k",
	"dns steady dnsperf-c16 avg-ms":                   "5",
	// The issue: a deleted token still opened /v1/agent/self on a Consul
	// client agent for token_ttl.
	"acl revocation delete->first-403 client-agent median ms": "30000",
}

func printSummary() {
	figMu.Lock()
	defer figMu.Unlock()
	if len(figures) == 0 {
		return
	}
	fmt.Println("bench: ---- summary [reference: Consul 1.16.6 on 2 cores, from the issue] ----")
	for _, f := range figures {
		key := f.name + " " + f.unit
		line := "bench: "
		if f.kind != kindTribune {
			line += f.kind + " "
		}
		line += fmt.Sprintf("%s %s=%s", f.name, f.unit, formatValue(f.value))
		if ref := reference[key]; ref != "" && f.kind == kindTribune {
			line += fmt.Sprintf("   [consul 1.16.6: %s]", ref)
		}
		fmt.Println(line)
	}
	if consulPath == "" {
		fmt.Println("bench: consul not on PATH, no ratio")
	}
	if theCluster != nil {
		for _, p := range theCluster.all() {
			if crashes := p.Crashes(); len(crashes) > 0 {
				fmt.Printf("bench: WARNING cluster agent %s crashed %d time(s) by itself and was restarted (last: %s)\n", p.Name, len(crashes), crashes[len(crashes)-1])
			}
		}
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	benching := false
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		benching = true
	}
	dir, err := os.MkdirTemp("", "tribune-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	if benching {
		// The harness shares the machine with the agents: spend less of
		// it on garbage collection (memory is not what is measured here).
		debug.SetGCPercent(400)
		if n, err := raiseFDLimit(); err != nil {
			fmt.Printf("bench: raising the open-file limit: %v\n", err)
		} else {
			fmt.Printf("bench: open-file limit %d (inherited by the agents)\n", n)
		}
		if consulPath == "" {
			fmt.Println("bench: consul not on PATH, no ratio")
		} else {
			fmt.Printf("bench: reference consul at %s\n", consulPath)
		}
		fmt.Printf("bench: work dir %s\n", dir)
	}
	// On Ctrl-C or SIGTERM, take the agents down with us. (A -timeout
	// panic or a SIGKILL is covered by Pdeathsig.)
	sigCh := make(chan os.Signal, 1)
	signal.Notify(sigCh, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigCh
		killAll()
		fmt.Fprintf(os.Stderr, "bench: %v: agents killed; logs in %s\n", sig, dir)
		os.Exit(2)
	}()

	code := m.Run()
	killAll()
	printSummary()
	if os.Getenv("BENCH_KEEP") != "" || (benching && code != 0) {
		fmt.Printf("bench: agent logs kept in %s\n", dir)
	} else {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}
