package bench

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// raftDBWrites is BENCH_RAFTDB_WRITES, the writes of BenchmarkRaftDB
// (default 100,000; the 1,000,000 takes minutes per implementation).
func raftDBWrites(tb testing.TB) int { return envCount(tb, "BENCH_RAFTDB_WRITES", 100_000, 1000) }

// envCount is the count in the environment variable name, def when it is
// unset; it fails tb on a count below least.
func envCount(tb testing.TB, name string, def, least int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < least {
		tb.Fatalf("%s=%q: want a count >= %d", name, s, least)
	}
	return n
}

// BenchmarkRaftDB: one server on disk, 64 clients PUT values of 1 KiB over
// 1,000 keys until BENCH_RAFTDB_WRITES writes: raft.db's size at each tenth
// of the run and at the end, the snapshots taken and the compactions (from
// the log), and the write rate over the first and the last tenth. A
// raft.db that stays bounded levels off; one that does not grows with the
// writes. BenchmarkRaftDBCluster is the same on three servers.
func BenchmarkRaftDB(b *testing.B) {
	runOnce(b, func() {
		n := raftDBWrites(b)
		name := fmt.Sprintf("server raftdb writes=%d", n)
		maxSize := map[string]float64{}
		for _, kind := range kinds() {
			p, dataDir := startSingleServer(b, kind)
			var sizes []float64
			r := raftDBLoad(b, p.HTTPAddr(), n, []*proc{p}, func() {
				_, sz := logStoreSize(dataDir)
				sizes = append(sizes, mib(sz))
			})
			p.Kill()
			snaps := parseSnapshotLog(p.Log())
			maxSize[kind] = slices.Max(append(sizes, 0))
			record(b, kind, name+" raft.db-max", "MiB", maxSize[kind], "per tenth: "+joinFloats(sizes, "%.0f")+" MiB")
			record(b, kind, name+" snapshots", "count", float64(snaps.taken), fmt.Sprintf("compactions=%d", snaps.compactions))
			record(b, kind, name+" first-tenth", "ops/s", r.first(), "")
			record(b, kind, name+" last-tenth", "ops/s", r.last(), fmt.Sprintf("errors=%d", r.errs))
		}
		ratio(b, name+" raft.db-max", "MiB", maxSize)
	})
}

// startSingleServer starts a server of kind alone on disk
// (bootstrap_expect 1) and returns it and its data directory.
func startSingleServer(b *testing.B, kind string) (*proc, string) {
	b.Helper()
	bin := consulPath
	if kind == kindTribune {
		bin = tribuneBin(b)
	}
	pp := newPorts(b)
	name := kind + "-raftdb"
	dataDir := filepath.Join(workDir, name+"-data")
	args := append([]string{"agent", "-server", "-bootstrap-expect=1", "-node", name,
		"-bind", "127.0.0.1", "-client", "127.0.0.1", "-data-dir", dataDir}, pp.flags()...)
	p := newProc(name, bin, pp, args)
	launchReady(b, p)
	return p, dataDir
}

// raftDBResult is what raftDBLoad saw.
type raftDBResult struct {
	rates []float64 // ops/s over each tenth of the writes
	// cpu is the CPU each process took during each tenth (cpuMeter), to
	// tell a slower tenth of ours from a busier machine.
	cpu     []string
	errs    int64
	elapsed time.Duration
}

func (r raftDBResult) first() float64 { return r.rate(0) }
func (r raftDBResult) last() float64  { return r.rate(len(r.rates) - 1) }

func (r raftDBResult) rate(i int) float64 {
	if i < 0 || i >= len(r.rates) {
		return 0
	}
	return r.rates[i]
}

// raftDBLoad PUTs n values of 1 KiB over 1,000 keys from 64 clients to the
// agent at addr, and calls sample after each tenth of the writes (with no
// other sample running); the CPU of agents is measured for each tenth.
func raftDBLoad(tb testing.TB, addr string, n int, agents []*proc, sample func()) raftDBResult {
	const clients = 64
	value := bytes.Repeat([]byte("v"), 1024)
	tenth := int64(n / 10)
	var (
		next, done, errs atomic.Int64
		mu               sync.Mutex
		res              raftDBResult
		start            = time.Now()
		markAt           = start
		meter            = newCPUMeter(agents)
	)
	mark := func() {
		mu.Lock()
		defer mu.Unlock()
		res.rates = append(res.rates, float64(tenth)/time.Since(markAt).Seconds())
		res.cpu = append(res.cpu, meter.String())
		sample()
		// The sample's own time is not the writes'.
		markAt, meter = time.Now(), newCPUMeter(agents)
	}
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := newAPIClient(tb, addr).KV()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				key := fmt.Sprintf("raftdb/%04d", i%1000)
				if _, err := kv.Put(&api.KVPair{Key: key, Value: value}, nil); err != nil {
					errs.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
				if d := done.Add(1); tenth > 0 && d%tenth == 0 {
					mark()
				}
			}
		}()
	}
	wg.Wait()
	res.errs = errs.Load()
	res.elapsed = time.Since(start)
	return res
}

// logStoreSize names the Raft log store in a server's data directory
// ("raft-wal" when it has raft/wal/, else "raft-boltdb") and returns the
// bytes of everything under raft/ but the snapshots: raft.db, and the WAL
// segments when there are some.
func logStoreSize(dataDir string) (store string, size int64) {
	dir := filepath.Join(dataDir, "raft")
	store = "raft-boltdb"
	if st, err := os.Stat(filepath.Join(dir, "wal")); err == nil && st.IsDir() {
		store = "raft-wal"
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed meanwhile (WAL segments, snapshots)
		}
		if d.IsDir() && d.Name() == "snapshots" {
			return filepath.SkipDir
		}
		if info, err := d.Info(); err == nil && d.Type().IsRegular() {
			size += info.Size()
		}
		return nil
	})
	return store, size
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// joinFloats formats each of xs with format, comma-separated.
func joinFloats(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ",")
}
