package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	procharness "github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

// The Raft settings every server of BenchmarkRaftDBCluster runs with
// (tribune's and Consul's defaults, set explicitly so that the bound is
// computed from what ran).
const (
	raftDBThreshold = 16384 // raft_snapshot_threshold
	raftDBTrailing  = 10240 // raft_trailing_logs
)

// raftDBBound is the size the Raft log store of a server must stay under
// with threshold and trailing, for values of 1 KiB:
//
//   - the log holds at most trailing + 2 x threshold entries: a snapshot
//     starts when threshold entries were applied since the last one, and
//     the writes go on while it is taken (for less than another threshold's
//     worth, else the next one is already due);
//   - raft-boltdb keeps an entry (1 KiB value, key, command and log framing:
//     ~1.1 KiB) in bbolt leaves that split at half a page: two entries per
//     4 KiB page, 2 KiB an entry;
//   - a quarter more for branch pages and the pages freed by the latest
//     transactions and not reusable yet (the freelist);
//   - bbolt grows the file 16 MiB (its AllocSize) beyond what it needs.
//
// It is proportional to the settings, not to the writes.
func raftDBBound(threshold, trailing int) int64 {
	entries := int64(trailing + 2*threshold)
	return entries*2048*5/4 + bbolt.DefaultAllocSize
}

// raftWALSegment is raft-wal's segment size (raft_logstore.wal.segment_size_mb
// left at its default).
const raftWALSegment = 64 << 20

// raftWALBound is raftDBBound for raft-wal, which keeps entries (~1.1 KiB;
// 1,200 bytes counted) in preallocated segment files and deletes a segment
// only once every entry in it is truncated: the entries the log holds
// (trailing + 2 x threshold, as above) span at most one segment more than
// they fill, plus its small metadata file (1 MiB counted).
func raftWALBound(threshold, trailing int) int64 {
	bytes := int64(trailing+2*threshold) * 1200
	segments := (bytes+raftWALSegment-1)/raftWALSegment + 1
	return segments*raftWALSegment + 1<<20
}

// logStoreBound is the bound of the store that ran.
func logStoreBound(store string, threshold, trailing int) int64 {
	if store == "raft-wal" {
		return raftWALBound(threshold, trailing)
	}
	return raftDBBound(threshold, trailing)
}

// BenchmarkRaftDBCluster is the raft.db workload: three servers on
// disk, 64 clients PUT BENCH_RAFTDB_WRITES values of 1 KiB over 1,000 keys
// to the leader. It reports each server's log store size after every tenth
// of the writes against raftDBBound (and fails beyond it), each server's
// snapshots and compactions (and the time they took, from its log), the
// write rate of every tenth (flagged when the last is more than 10 % below
// the first), and, the servers stopped, how raft.db's pages are used.
func BenchmarkRaftDBCluster(b *testing.B) {
	runOnce(b, func() {
		n := raftDBWrites(b)
		hcl := fmt.Sprintf("raft_snapshot_threshold = %d\nraft_trailing_logs = %d", raftDBThreshold, raftDBTrailing)
		start := time.Now()
		c, err := startClusterSpec(b, tribuneBin(b), "rdb-", func(_ string, server bool) []string {
			if server {
				return []string{"-hcl", hcl}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range c.all() {
			b.Cleanup(p.Kill)
		}
		// Only the servers take part.
		c.client.Kill()
		leader := clusterLeader(b, c)
		fmt.Printf("bench: raftdb cluster ready in %s, leader %s\n", time.Since(start).Round(time.Millisecond), leader.Name)

		dirs := make([]string, len(c.servers))
		for i, s := range c.servers {
			dirs[i] = filepath.Join(workDir, s.Name+"-data")
		}
		sizes := make([][]float64, len(c.servers))
		store := ""
		r := raftDBLoad(b, leader.HTTPAddr(), n, c.servers, func() {
			for i, d := range dirs {
				st, sz := logStoreSize(d)
				store = st
				sizes[i] = append(sizes[i], mib(sz))
			}
		})
		for _, s := range c.servers {
			s.Kill()
		}

		name := fmt.Sprintf("cluster raftdb writes=%d", n)
		bound := mib(logStoreBound(store, raftDBThreshold, raftDBTrailing))
		fmt.Printf("bench: %s store=%s threshold=%d trailing=%d bound=%.0fMiB took=%s\n",
			name, store, raftDBThreshold, raftDBTrailing, bound, r.elapsed.Round(time.Second))
		var maxAll float64
		for i, s := range c.servers {
			m := slices.Max(append(sizes[i], 0))
			maxAll = max(maxAll, m)
			role := "follower"
			if s == leader {
				role = "leader"
			}
			detail := fmt.Sprintf("%s %s store=%s per tenth: %s MiB; bound %.0f MiB", s.Name, role, store, joinFloats(sizes[i], "%.0f"), bound)
			if m > bound {
				detail += " BOUND EXCEEDED"
				b.Errorf("%s: log store reached %.0f MiB, over the bound of %.0f MiB", s.Name, m, bound)
			}
			record(b, kindTribune, fmt.Sprintf("%s %s log-store-max", name, s.Name), "MiB", m, detail)
			snaps := parseSnapshotLog(s.Log())
			record(b, kindTribune, fmt.Sprintf("%s %s snapshots", name, s.Name), "count", float64(snaps.taken),
				fmt.Sprintf("compactions=%d installed_from_leader=%d snapshot_ms p50=%.0f max=%.0f",
					snaps.compactions, snaps.installed, ms(snaps.p50()), ms(snaps.max())))
			if store == "raft-boltdb" {
				if u, err := inspectBolt(filepath.Join(dirs[i], "raft", "raft.db")); err != nil {
					fmt.Printf("bench: %s %s raft.db: %v\n", name, s.Name, err)
				} else {
					fmt.Printf("bench: %s %s raft.db pages: %s\n", name, s.Name, u)
				}
			}
		}
		record(b, kindTribune, name+" log-store-max", "MiB", maxAll, fmt.Sprintf("bound=%.0fMiB store=%s", bound, store))
		detail := fmt.Sprintf("per tenth: %s ops/s errors=%d took=%s", joinFloats(r.rates, "%.0f"), r.errs, r.elapsed.Round(time.Second))
		if r.last() < 0.9*r.first() {
			detail += " SLOWDOWN: last tenth more than 10% below the first (see each tenth's other_processes CPU above)"
		}
		for i, rate := range r.rates {
			fmt.Printf("bench: %s tenth %d ops/s=%.0f cpu%%: %s\n", name, i+1, rate, r.cpu[i])
		}
		record(b, kindTribune, name+" first-tenth", "ops/s", r.first(), "")
		record(b, kindTribune, name+" last-tenth", "ops/s", r.last(), detail)
	})
}

// clusterLeader returns the server of c that leads.
func clusterLeader(b *testing.B, c *cluster) *proc {
	b.Helper()
	var leader *proc
	wait.For(b, 30*time.Second, func() error {
		addr, _, err := procharness.Status(c.servers[0].HTTPAddr())
		if err != nil {
			return err
		}
		if leader = c.serverFor(addr); leader == nil {
			return fmt.Errorf("leader %q is none of the servers", addr)
		}
		return nil
	})
	return leader
}

// snapshotStats is what a server's log says of its Raft snapshots.
type snapshotStats struct {
	taken, compactions, installed int
	// durations from "starting snapshot up to" to "snapshot complete up
	// to" of the same index.
	durations []time.Duration
}

func (s snapshotStats) p50() time.Duration {
	if len(s.durations) == 0 {
		return 0
	}
	d := slices.Clone(s.durations)
	slices.Sort(d)
	return d[len(d)/2]
}

func (s snapshotStats) max() time.Duration { return slices.Max(append(slices.Clone(s.durations), 0)) }

// hclogTime is the timestamp at the start of each line of an agent's log.
const hclogTime = "2006-01-02T15:04:05.000Z0700"

// parseSnapshotLog reads hashicorp/raft's snapshot lines from an agent's
// log.
func parseSnapshotLog(log string) snapshotStats {
	var s snapshotStats
	started := map[string]time.Time{} // by index
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		at, _ := time.Parse(hclogTime, strings.SplitN(line, " ", 2)[0])
		switch {
		case strings.Contains(line, "starting snapshot up to"):
			started[snapshotIndex(line)] = at
		case strings.Contains(line, "snapshot complete up to"):
			s.taken++
			if t0, ok := started[snapshotIndex(line)]; ok && !at.IsZero() && !t0.IsZero() {
				s.durations = append(s.durations, at.Sub(t0))
			}
		case strings.Contains(line, "compacting logs"):
			s.compactions++
		case strings.Contains(line, "Installed remote snapshot"):
			s.installed++
		}
	}
	return s
}

// snapshotIndex is the index=N of a snapshot log line.
func snapshotIndex(line string) string {
	_, rest, ok := strings.Cut(line, "index=")
	if !ok {
		return ""
	}
	return strings.Fields(rest)[0]
}

// boltUse is how a raft.db's pages are used.
type boltUse struct {
	fileBytes int64 // the file's size
	hwmBytes  int64 // up to the highest page in use
	pageSize  int
	usedPages int // meta, buckets' branch and leaf pages
	entries   int // keys of the logs bucket
}

func (u boltUse) String() string {
	used := int64(u.usedPages) * int64(u.pageSize)
	per := 0.0
	if u.entries > 0 {
		per = float64(used) / float64(u.entries)
	}
	return fmt.Sprintf("file=%.1fMiB up-to-last-page=%.1fMiB in-use=%.1fMiB free=%.1fMiB (%d of %d pages) log-entries=%d bytes/entry=%.0f",
		mib(u.fileBytes), mib(u.hwmBytes), mib(used), mib(u.hwmBytes-used),
		int(u.hwmBytes)/u.pageSize-u.usedPages, int(u.hwmBytes)/u.pageSize, u.entries, per)
}

// inspectBolt opens a raft.db whose server is stopped, read-only, and
// counts its pages.
func inspectBolt(path string) (boltUse, error) {
	var u boltUse
	st, err := os.Stat(path)
	if err != nil {
		return u, err
	}
	u.fileBytes = st.Size()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return u, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	u.pageSize = db.Info().PageSize
	err = db.View(func(tx *bbolt.Tx) error {
		u.hwmBytes = tx.Size()
		u.usedPages = 3 // two meta pages and the root bucket's page
		return tx.ForEach(func(name []byte, bk *bbolt.Bucket) error {
			bs := bk.Stats()
			u.usedPages += bs.BranchPageN + bs.BranchOverflowN + bs.LeafPageN + bs.LeafOverflowN
			if string(name) == "logs" {
				u.entries = bs.KeyN
			}
			return nil
		})
	})
	if err != nil {
		return u, fmt.Errorf("read %s: %w", path, err)
	}
	if u.pageSize == 0 {
		return u, errors.New("page size 0")
	}
	return u, nil
}

// TestRaftDBHelpers checks the log parsing and the bound of the raft.db
// benchmarks; it runs without -bench and takes milliseconds.
func TestRaftDBHelpers(t *testing.T) {
	log := `2026-12-03T06:50:01.000Z [INFO]  server.raft: starting snapshot up to: index=16390
2026-12-03T06:50:01.250Z [INFO]  server.raft: compacting logs: from=1 to=6150
2026-12-03T06:50:01.300Z [INFO]  server.raft: snapshot complete up to: index=16390
2026-12-03T06:50:09.000Z [INFO]  server.raft: starting snapshot up to: index=32800
2026-12-03T06:50:09.100Z [INFO]  server.raft: snapshot complete up to: index=32800
2026-12-03T06:50:10.000Z [INFO]  server.raft: Installed remote snapshot
`
	s := parseSnapshotLog(log)
	if s.taken != 2 || s.compactions != 1 || s.installed != 1 {
		t.Errorf("taken=%d compactions=%d installed=%d, want 2 1 1", s.taken, s.compactions, s.installed)
	}
	if s.max() != 300*time.Millisecond || len(s.durations) != 2 {
		t.Errorf("durations %v, want [300ms 100ms]", s.durations)
	}
	// (10240 + 2 x 16384) entries x 2 KiB x 5/4 + 16 MiB.
	if got, want := raftDBBound(16384, 10240), int64(43008*2560+16<<20); got != want {
		t.Errorf("bound %d, want %d", got, want)
	}
	// 43,008 x 1,200 bytes fill one 64 MiB segment: two segments + 1 MiB.
	if got, want := logStoreBound("raft-wal", 16384, 10240), int64(2*64<<20+1<<20); got != want {
		t.Errorf("wal bound %d, want %d", got, want)
	}
	if got, want := logStoreBound("raft-boltdb", 16384, 10240), raftDBBound(16384, 10240); got != want {
		t.Errorf("boltdb bound %d, want %d", got, want)
	}
}
