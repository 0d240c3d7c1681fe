package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
func raftDBWrites(tb testing.TB) int {
	s := os.Getenv("BENCH_RAFTDB_WRITES")
	if s == "" {
		return 100_000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1000 {
		tb.Fatalf("BENCH_RAFTDB_WRITES=%q: want a count >= 1000", s)
	}
	return n
}

// BenchmarkRaftDB: one server on disk, 64 clients PUT values of 1 KiB over
// 1,000 keys until BENCH_RAFTDB_WRITES writes: raft.db's size at each tenth
// of the run and at the end, the snapshots taken (the log's "compacting
// logs" lines), and the write rate over the first and the last tenth. A
// raft.db that stays bounded levels off; one that does not grows with the
// writes.
func BenchmarkRaftDB(b *testing.B) {
	runOnce(b, func() {
		n := raftDBWrites(b)
		name := fmt.Sprintf("server raftdb writes=%d", n)
		maxSize := map[string]float64{}
		for _, kind := range kinds() {
			p, dataDir := startSingleServer(b, kind)
			r := raftDBLoad(b, p.HTTPAddr(), filepath.Join(dataDir, "raft", "raft.db"), n)
			p.Kill()
			logData, _ := os.ReadFile(p.LogPath)
			snaps := strings.Count(string(logData), "compacting logs")
			sizes := make([]string, len(r.sizes))
			for i, s := range r.sizes {
				sizes[i] = fmt.Sprintf("%.0f", s)
			}
			maxSize[kind] = r.maxMiB()
			record(b, kind, name+" raft.db-max", "MiB", r.maxMiB(), "per tenth: "+strings.Join(sizes, ",")+" MiB")
			record(b, kind, name+" snapshots", "count", float64(snaps), "")
			record(b, kind, name+" first-tenth", "ops/s", r.first, "")
			record(b, kind, name+" last-tenth", "ops/s", r.last, fmt.Sprintf("errors=%d", r.errs))
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
	sizes       []float64 // MiB of raft.db after each tenth
	first, last float64   // ops/s over the first and the last tenth
	errs        int64
}

func (r raftDBResult) maxMiB() float64 {
	m := 0.0
	for _, s := range r.sizes {
		m = max(m, s)
	}
	return m
}

func raftDBLoad(tb testing.TB, addr, dbPath string, n int) raftDBResult {
	const clients = 64
	value := bytes.Repeat([]byte("v"), 1024)
	tenth := int64(n / 10)
	var (
		next, done, errs atomic.Int64
		mu               sync.Mutex
		res              raftDBResult
		markAt           = time.Now()
	)
	mark := func(d int64) {
		mu.Lock()
		defer mu.Unlock()
		rate := float64(tenth) / time.Since(markAt).Seconds()
		markAt = time.Now()
		if len(res.sizes) == 0 {
			res.first = rate
		}
		res.last = rate
		if st, err := os.Stat(dbPath); err == nil {
			res.sizes = append(res.sizes, float64(st.Size())/(1<<20))
		}
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
					mark(d)
				}
			}
		}()
	}
	wg.Wait()
	res.errs = errs.Load()
	return res
}
