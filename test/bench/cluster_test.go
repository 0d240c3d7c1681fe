package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	procharness "github.com/tribune-mesh/tribune/test/procs"
)

// The cluster workloads' helpers: CPU per request of every process, the
// disk's sync latency, profiles, and the log-store A/B.

// clusterExtra is the extra arguments of the shared cluster's agents:
// enable_debug when BENCH_CLUSTER_PPROF asks for profiles.
func clusterExtra() []string {
	if os.Getenv("BENCH_CLUSTER_PPROF") != "" {
		return []string{"-hcl", "enable_debug = true"}
	}
	return nil
}

// clusterRun runs one cluster workload through c's client agent and
// returns its result with, appended to its detail, the CPU each process
// spent per request (µs of CPU per successful request, the leader
// marked) so that figures taken on a noisy machine still say what a
// request costs. With BENCH_CLUSTER_PPROF=<prefix> it also saves CPU
// profiles of the client agent and of the leader taken during the run
// to <prefix>-<label>-{client,leader}.cpu.
func clusterRun(b *testing.B, c *cluster, label string, d time.Duration, run func() loadResult) (loadResult, string) {
	b.Helper()
	leaderAddr, _, _ := procharness.Status(c.client.HTTPAddr())
	leader := c.serverFor(leaderAddr)
	procs := c.all()
	before := make([]int64, len(procs))
	for i, p := range procs {
		before[i], _ = cpuTicks(p.Pid())
	}
	var profWG sync.WaitGroup
	if prefix := os.Getenv("BENCH_CLUSTER_PPROF"); prefix != "" {
		secs := int(d.Seconds()) - 2
		if secs < 1 {
			secs = 1
		}
		targets := map[string]*proc{"client": c.client}
		if leader != nil {
			targets["leader"] = leader
		}
		for who, p := range targets {
			profWG.Add(1)
			go func() {
				defer profWG.Done()
				// Skip the first second: connections are being made.
				time.Sleep(time.Second)
				fetchProfile(p, fmt.Sprintf("profile?seconds=%d", secs), fmt.Sprintf("%s-%s-%s.cpu", prefix, label, who))
			}()
		}
	}
	r := run()
	profWG.Wait()
	return r, cpuPerOp(procs, before, leader, r.ops)
}

// cpuPerOp formats each process's CPU time since before per op, in µs
// (Linux counts 100 ticks a second).
func cpuPerOp(procs []*proc, before []int64, leader *proc, ops int64) string {
	if ops <= 0 {
		return "cpu_us/op: n/a"
	}
	var parts []string
	var total int64
	for i, p := range procs {
		t, err := cpuTicks(p.Pid())
		if err != nil {
			parts = append(parts, p.Name+"=?")
			continue
		}
		total += t - before[i]
		name := p.Name
		if p == leader {
			name += "(leader)"
		}
		parts = append(parts, fmt.Sprintf("%s=%.0f", name, float64(t-before[i])*1e4/float64(ops)))
	}
	parts = append(parts, fmt.Sprintf("all=%.0f", float64(total)*1e4/float64(ops)))
	return "cpu_us/op: " + strings.Join(parts, ",")
}

// BenchmarkClusterDiskSync: the latency of one 4 KiB append + fdatasync
// in the benchmark's work directory, the disk the cluster's servers write
// their Raft logs to. A quorum write costs at least the leader's and one
// follower's syncs in sequence, so this bounds the clients=1 write rate.
func BenchmarkClusterDiskSync(b *testing.B) {
	runOnce(b, func() {
		lat, err := syncLatencies(filepath.Join(workDir, "fsync-probe"), 500)
		if err != nil {
			b.Fatal(err)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		var sum time.Duration
		for _, l := range lat {
			sum += l
		}
		record(b, kindTribune, "disk append+fdatasync 4KiB", "us", float64(lat[len(lat)/2].Microseconds()),
			fmt.Sprintf("n=%d mean_us=%d p99_us=%d max_us=%d", len(lat), (sum/time.Duration(len(lat))).Microseconds(),
				lat[len(lat)*99/100].Microseconds(), lat[len(lat)-1].Microseconds()))
	})
}

// syncLatencies appends n blocks of 4 KiB to a new file at path, each
// followed by fdatasync, and returns each append+sync's duration.
func syncLatencies(path string, n int) ([]time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	defer f.Close()
	block := make([]byte, 4096)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := f.Write(block); err != nil {
			return nil, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// BenchmarkClusterLogStore: the A/B of the Raft log's backends. Two
// clusters run side by side, one per raft_logstore.backend, and take turns
// (the order flipped each round) at the cluster KV writes with 1 and 64
// clients, BENCH_LOGSTORE_ROUNDS rounds (default 3) of BENCH_DURATION
// each: the medians per backend and the ratio wal/boltdb.
func BenchmarkClusterLogStore(b *testing.B) {
	runOnce(b, func() {
		rounds := 3
		if s := os.Getenv("BENCH_LOGSTORE_ROUNDS"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				b.Fatalf("BENCH_LOGSTORE_ROUNDS=%q", s)
			}
			rounds = n
		}
		backends := []string{"boltdb", "wal"}
		clusters := map[string]*cluster{}
		for _, be := range backends {
			c, err := startCluster(b, tribuneBin(b), be+"-", "-hcl", fmt.Sprintf("raft_logstore { backend = %q }", be))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				for _, p := range c.all() {
					p.Kill()
				}
			})
			clusters[be] = c
		}
		d := benchDuration(b)
		for _, clients := range []int{1, 64} {
			runs := map[string][]float64{}
			for round := 0; round < rounds; round++ {
				order := backends
				if round%2 == 1 {
					order = []string{backends[1], backends[0]}
				}
				for _, be := range order {
					c := clusters[be]
					r, perOp := clusterRun(b, c, fmt.Sprintf("logstore-%s-c%d-r%d", be, clients, round), d, func() loadResult {
						return kvWriteLoad(b, c.client.HTTPAddr(), clients, d, c.all())
					})
					runs[be] = append(runs[be], r.opsPerSec())
					fmt.Printf("bench: logstore=%s kv-write clients=%d round=%d ops/s=%.0f (%s %s)\n", be, clients, round+1, r.opsPerSec(), r, perOp)
				}
			}
			for _, be := range backends {
				record(b, kindTribune, fmt.Sprintf("cluster logstore=%s kv-write clients=%d median", be, clients), "ops/s", median(runs[be]),
					fmt.Sprintf("runs=%v", runs[be]))
			}
			fmt.Printf("bench: ratio wal/boltdb cluster kv-write clients=%d ops/s=%.2f\n", clients, median(runs["wal"])/median(runs["boltdb"]))
		}
	})
}
