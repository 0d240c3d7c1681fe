package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// The catalog of BenchmarkScale: every node has scaleServicesPerNode
// service instances, each with scaleChecksPerService checks; the instances
// are spread over scaleServiceNames names.
const (
	scaleServicesPerNode  = 10
	scaleChecksPerService = 2
	scaleServiceNames     = 1000
)

// scaleNodes is BENCH_SCALE_NODES, the nodes of BenchmarkScale (default
// 1,000; the figure is 10,000).
func scaleNodes(tb testing.TB) int { return envCount(tb, "BENCH_SCALE_NODES", 1000, 100) }

func scaleServiceName(i int) string { return fmt.Sprintf("svc-%03d", i%scaleServiceNames) }

// BenchmarkScale is the "memory at scale": three servers on disk
// and a client agent; 64 clients register BENCH_SCALE_NODES nodes x 10
// services x 2 checks with PUT /v1/catalog/register through the client
// agent. Then: each server's RSS; a snapshot (GET /v1/snapshot through the
// client: time and size; the newest file under data/raft/snapshots and
// the servers' own snapshot times from their logs); a follower killed and
// started again on its data directory (time until it answers, until its
// own store holds the whole catalog again); and GET /v1/catalog/services
// and GET /v1/health/service/<name> under 64 clients through the client
// agent (ops/s, p50/p99, the answer's size, the client agent's and the
// leader's peak RSS meanwhile).
// BENCH_SCALE_PPROF=<dir> saves the leader's heap after the registration,
// CPU profiles of the leader and the client during each read load and the
// client's heap halfway through it.
func BenchmarkScale(b *testing.B) {
	runOnce(b, func() {
		nodes := scaleNodes(b)
		prof := os.Getenv("BENCH_SCALE_PPROF")
		start := time.Now()
		c, err := startClusterSpec(b, tribuneBin(b), "scale-", func(string, bool) []string {
			if prof != "" {
				return []string{"-hcl", "enable_debug = true"}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range c.all() {
			b.Cleanup(p.Kill)
		}
		leader := clusterLeader(b, c)
		fmt.Printf("bench: scale cluster ready in %s, leader %s\n", time.Since(start).Round(time.Millisecond), leader.Name)
		name := fmt.Sprintf("scale nodes=%d", nodes)
		d := benchDuration(b)

		// Registration.
		reg := scaleRegister(b, c, nodes)
		record(b, kindTribune, name+" register", "ops/s", reg.opsPerSec(),
			fmt.Sprintf("%d registrations (%d instances, %d checks) in %s, 64 clients: %s", reg.ops,
				nodes*scaleServicesPerNode, nodes*scaleServicesPerNode*scaleChecksPerService, reg.elapsed.Round(time.Millisecond), reg))
		if reg.errs > int64(nodes) {
			b.Fatalf("registration: %d errors, first: %v", reg.errs, reg.firstErr)
		}
		cat := newAPIClient(b, c.client.HTTPAddr()).Catalog()
		_, meta, err := cat.Services(&api.QueryOptions{RequireConsistent: true})
		if err != nil {
			b.Fatal(err)
		}
		index := meta.LastIndex
		for _, s := range c.servers {
			waitCatalog(b, s, index, 2*time.Minute)
		}
		for _, p := range c.all() {
			rss, _ := procStatusKiB(p.Pid(), "VmRSS")
			record(b, kindTribune, fmt.Sprintf("%s %s rss", name, p.Name), "MiB", float64(rss)/1024, roleOf(p, c, leader))
		}
		if prof != "" {
			fetchProfile(leader, "heap", filepath.Join(prof, "scale-leader.heap"))
		}

		// Snapshot.
		t0 := time.Now()
		size, err := saveSnapshot(c.client.HTTPAddr())
		took := time.Since(t0)
		if err != nil {
			fmt.Printf("bench: %s snapshot save: %v\n", name, err)
		} else {
			record(b, kindTribune, name+" snapshot-save", "ms", ms(took), fmt.Sprintf("GET /v1/snapshot through the client: %.1f MiB", mib(size)))
		}
		for _, s := range c.servers {
			file, fsize := newestSnapshot(filepath.Join(workDir, s.Name+"-data"))
			snaps := parseSnapshotLog(s.Log())
			record(b, kindTribune, fmt.Sprintf("%s %s raft-snapshot", name, s.Name), "MiB", mib(fsize),
				fmt.Sprintf("%s; taken=%d installed=%d snapshot_ms p50=%.0f max=%.0f", file, snaps.taken, snaps.installed, ms(snaps.p50()), ms(snaps.max())))
		}

		// Restart of a follower.
		var follower *proc
		for _, s := range c.servers {
			if s != leader {
				follower = s
				break
			}
		}
		up, data := restartServer(b, follower, index)
		record(b, kindTribune, name+" restart-follower caught-up", "ms", ms(data),
			fmt.Sprintf("%s killed and started again: answers and knows the leader after %.0f ms, its own store holds the whole catalog after %.0f ms", follower.Name, ms(up), ms(data)))

		// Reads under 64 clients through the client agent. Leadership may
		// have moved meanwhile (a long snapshot on a busy machine).
		leader = clusterLeader(b, c)
		for _, rd := range []struct {
			what, path string
			op         func(c *api.Client) func(r *rand.Rand) error
		}{
			{"catalog-services", "/v1/catalog/services", func(cl *api.Client) func(*rand.Rand) error {
				cat := cl.Catalog()
				return func(*rand.Rand) error {
					svcs, _, err := cat.Services(nil)
					if err == nil && len(svcs) < min(scaleServiceNames, nodes*scaleServicesPerNode) {
						err = fmt.Errorf("%d services", len(svcs))
					}
					return err
				}
			}},
			{"health-service", "/v1/health/service/" + scaleServiceName(7), func(cl *api.Client) func(*rand.Rand) error {
				h := cl.Health()
				return func(r *rand.Rand) error {
					out, _, err := h.Service(scaleServiceName(r.IntN(scaleServiceNames)), "", false, nil)
					if err == nil && len(out) == 0 {
						err = fmt.Errorf("no instances")
					}
					return err
				}
			}},
		} {
			answer, _ := answerBytes(c.client.HTTPAddr(), rd.path)
			pids := []*proc{c.client, leader}
			sampler := newRSSSampler(pids)
			var profWG sync.WaitGroup
			if prof != "" {
				secs := int(max(d/2, time.Second) / time.Second)
				for _, p := range pids {
					profWG.Add(1)
					go func() {
						defer profWG.Done()
						fetchProfile(p, fmt.Sprintf("profile?seconds=%d", secs), filepath.Join(prof, fmt.Sprintf("scale-%s-%s.cpu", rd.what, p.Name)))
					}()
				}
				// The client agent's heap halfway through the load.
				profWG.Add(1)
				go func() {
					defer profWG.Done()
					time.Sleep(d / 2)
					fetchProfile(c.client, "heap", filepath.Join(prof, fmt.Sprintf("scale-%s-%s.heap", rd.what, c.client.Name)))
				}()
			}
			r := runLoad(64, d, c.all(), func(int) func(*rand.Rand) error { return rd.op(newAPIClient(b, c.client.HTTPAddr())) })
			peak := sampler.stop()
			profWG.Wait()
			record(b, kindTribune, fmt.Sprintf("%s %s clients=64", name, rd.what), "ops/s", r.opsPerSec(),
				fmt.Sprintf("answer=%.1fKiB peak rss MiB: client=%.0f leader %s=%.0f; %s", float64(answer)/1024, float64(peak[0])/1024, leader.Name, float64(peak[1])/1024, r))
		}
	})
}

// roleOf says whether p is the leader, a follower or the client agent.
func roleOf(p *proc, c *cluster, leader *proc) string {
	switch {
	case p == leader:
		return "leader"
	case p == c.client:
		return "client agent"
	}
	return "follower"
}

// scaleRegister registers nodes x scaleServicesPerNode instances through
// the client agent from 64 clients, one instance and its checks a request.
func scaleRegister(b *testing.B, c *cluster, nodes int) loadResult {
	total := int64(nodes * scaleServicesPerNode)
	var next atomic.Int64
	return runLoad(64, time.Hour, c.all(), func(int) func(*rand.Rand) error {
		cat := newAPIClient(b, c.client.HTTPAddr()).Catalog()
		return func(*rand.Rand) error {
			j := next.Add(1) - 1
			if j >= total {
				return errLoadDone
			}
			_, err := cat.Register(scaleRegistration(int(j)), nil)
			return err
		}
	})
}

// scaleRegistration is the j-th instance: node j/10, its (j%10)-th service.
func scaleRegistration(j int) *api.CatalogRegistration {
	node := j / scaleServicesPerNode
	id := fmt.Sprintf("%s-%d", scaleServiceName(j), node)
	reg := &api.CatalogRegistration{
		Node:     fmt.Sprintf("node-%05d", node),
		Address:  fmt.Sprintf("10.%d.%d.%d", node>>16&255, node>>8&255, node&255),
		NodeMeta: map[string]string{"rack": "r" + strconv.Itoa(node%40)},
		Service: &api.AgentService{
			ID:      id,
			Service: scaleServiceName(j),
			Tags:    []string{"v" + strconv.Itoa(node%3), "zone-" + strconv.Itoa(node%4)},
			Port:    20000 + j%scaleServicesPerNode,
			Meta:    map[string]string{"version": "1.2." + strconv.Itoa(node%7)},
		},
	}
	for k := 0; k < scaleChecksPerService; k++ {
		reg.Checks = append(reg.Checks, &api.HealthCheck{
			CheckID:   fmt.Sprintf("%s:check-%d", id, k),
			Name:      fmt.Sprintf("check %d of %s", k, id),
			Status:    api.HealthPassing,
			ServiceID: id,
			Output:    "HTTP GET http://10.0.0.1:20000/health: 200 OK Output: ok",
		})
	}
	return reg
}

// waitCatalog waits until the agent p's own store (a stale read) holds the
// catalog up to index.
func waitCatalog(b *testing.B, p *proc, index uint64, d time.Duration) {
	b.Helper()
	cat := newAPIClient(b, p.HTTPAddr()).Catalog()
	wait.For(b, d, func() error { return catalogHeld(cat, index) })
}

// catalogHeld checks that a stale read of cat is at index or later.
func catalogHeld(cat *api.Catalog, index uint64) error {
	_, meta, err := cat.Services(&api.QueryOptions{AllowStale: true})
	if err != nil {
		return err
	}
	if meta.LastIndex < index {
		return fmt.Errorf("at index %d, want %d", meta.LastIndex, index)
	}
	return nil
}

// restartServer SIGKILLs the server s and starts it again on its data
// directory. It returns the time from the start until s answers and knows
// a leader, and until its own store holds the catalog up to index: it
// restored its snapshot, took the entries it missed from the leader and
// applied them, so it is a working voter again. (Autopilot's health says
// nothing here: gossip sees a server killed and restarted within a second
// as alive all along.)
func restartServer(b *testing.B, s *proc, index uint64) (up, data time.Duration) {
	b.Helper()
	s.Kill()
	start := time.Now()
	if err := s.Launch(); err != nil {
		b.Fatal(err)
	}
	self := newAPIClient(b, s.HTTPAddr())
	// Both are checked on every round until met: they need not come in
	// this order.
	wait.For(b, 5*time.Minute, func() error {
		if up == 0 {
			if l, err := self.Status().Leader(); err == nil && l != "" {
				up = time.Since(start)
			}
		}
		if data == 0 && catalogHeld(self.Catalog(), index) == nil {
			data = time.Since(start)
		}
		if up == 0 || data == 0 {
			return fmt.Errorf("%s after its restart: up %s, catalog held %s", s.Name, up, data)
		}
		return nil
	})
	return up, data
}

// saveSnapshot takes a snapshot with GET /v1/snapshot from the agent at
// addr and returns its size.
func saveSnapshot(addr string) (int64, error) {
	resp, err := http.Get("http://" + addr + "/v1/snapshot")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /v1/snapshot: %s", resp.Status)
	}
	return n, err
}

// answerBytes is the size of one answer to GET path from the agent at addr.
func answerBytes(addr, path string) (int64, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(io.Discard, resp.Body)
}

// newestSnapshot returns the newest Raft snapshot of a server's data
// directory (data/raft/snapshots/<term>-<index>-<ms>/state.bin) and its size.
func newestSnapshot(dataDir string) (string, int64) {
	dirs, _ := filepath.Glob(filepath.Join(dataDir, "raft", "snapshots", "*"))
	var newest string
	var newestAt time.Time
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "state.bin")); err == nil && st.ModTime().After(newestAt) {
			newest, newestAt = d, st.ModTime()
		}
	}
	if newest == "" {
		return "no snapshot", 0
	}
	st, _ := os.Stat(filepath.Join(newest, "state.bin"))
	return strings.TrimPrefix(newest, dataDir+string(filepath.Separator)), st.Size()
}

// rssSampler records the peak RSS of processes, sampled every 100 ms
// until stop.
type rssSampler struct {
	procs  []*proc
	peak   []int64
	cancel context.CancelFunc
	done   chan struct{}
}

func newRSSSampler(procs []*proc) *rssSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &rssSampler{procs: procs, peak: make([]int64, len(procs)), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	for i, p := range s.procs {
		if kib, err := procStatusKiB(p.Pid(), "VmRSS"); err == nil {
			s.peak[i] = max(s.peak[i], kib)
		}
	}
}

// stop ends the sampling and returns each process's peak RSS in KiB.
func (s *rssSampler) stop() []int64 {
	s.cancel()
	<-s.done
	s.sample()
	return s.peak
}
