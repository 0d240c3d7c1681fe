package bench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

const (
	keySpace  = 1000
	valueSize = 100
	keyPrefix = "bench/k"
)

// benchDuration is BENCH_DURATION, default 10s.
func benchDuration(tb testing.TB) time.Duration {
	s := os.Getenv("BENCH_DURATION")
	if s == "" {
		return 10 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		tb.Fatalf("BENCH_DURATION=%q: want a positive duration like 10s", s)
	}
	return d
}

func benchKey(i int) string { return fmt.Sprintf("%s%04d", keyPrefix, i) }

var benchValue = func() []byte {
	v := make([]byte, valueSize)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	return v
}()

// newAPIClient returns an official Go client with its own connection pool,
// as a separate client process would have: one worker, one keep-alive
// connection.
func newAPIClient(tb testing.TB, addr string) *api.Client {
	tb.Helper()
	return newClientWith(tb, addr, "", nil)
}

// newTokenClient is newAPIClient sending an ACL token with every request.
func newTokenClient(tb testing.TB, addr, token string) *api.Client {
	return newClientWith(tb, addr, token, nil)
}

// newAPIClientTLS is newAPIClient over HTTPS with tlsc when it is set.
func newAPIClientTLS(tb testing.TB, addr string, tlsc *api.TLSConfig) *api.Client {
	return newClientWith(tb, addr, "", tlsc)
}

// newClientWith is newAPIClient with an ACL token (when not "") and over
// HTTPS with tlsc (when set).
func newClientWith(tb testing.TB, addr, token string, tlsc *api.TLSConfig) *api.Client {
	tb.Helper()
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	// Idle keep-alive connections of finished workloads would count
	// against the agent's per-client connection limit (200 from one
	// address) in the next ones.
	tb.Cleanup(tr.CloseIdleConnections)
	cfg := &api.Config{Address: addr, Scheme: "http", Transport: tr, Token: token}
	if tlsc != nil {
		cfg.Scheme, cfg.TLSConfig = "https", *tlsc
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// loadResult is the outcome of one fixed-duration run.
type loadResult struct {
	ops, errs int64
	elapsed   time.Duration
	p50, p99  time.Duration
	firstErr  error
	cpu       string // CPU used by the harness and each agent during the run
	// agentCPU is the CPU time the agents used during the run (all of
	// them, the harness excluded).
	agentCPU time.Duration
}

// agentCPUPerOp is the agents' CPU time per successful operation, in
// microseconds: the cost of a request on the agent's side, which the
// machine's noise and the load generator's share of the cores move far
// less than the throughput.
func (r loadResult) agentCPUPerOp() float64 {
	if r.ops == 0 {
		return 0
	}
	return float64(r.agentCPU.Microseconds()) / float64(r.ops)
}

func (r loadResult) opsPerSec() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r loadResult) String() string {
	s := fmt.Sprintf("ops=%d errors=%d p50_ms=%.2f p99_ms=%.2f over=%s", r.ops, r.errs,
		float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000, r.elapsed.Round(time.Millisecond))
	if r.agentCPU > 0 {
		s += fmt.Sprintf(" agent_cpu_us_per_op=%.1f", r.agentCPUPerOp())
	}
	if r.cpu != "" {
		s += " cpu%: " + r.cpu
	}
	if r.firstErr != nil {
		s += fmt.Sprintf(" first_error=%q", r.firstErr.Error())
	}
	return s
}

// cpuMeter measures the CPU time of the harness and of agent processes
// over a run, to tell a server bottleneck from a client one on a small
// machine.
type cpuMeter struct {
	names []string
	pids  []int
	start []int64
	busy0 int64 // machine-wide busy ticks, all cores
	t0    time.Time
}

func newCPUMeter(agents []*proc) *cpuMeter {
	m := &cpuMeter{names: []string{"harness"}, pids: []int{os.Getpid()}}
	for _, p := range agents {
		m.names = append(m.names, p.Name)
		m.pids = append(m.pids, p.Pid())
	}
	for _, pid := range m.pids {
		t, _ := cpuTicks(pid)
		m.start = append(m.start, t)
	}
	m.busy0, _ = machineBusyTicks()
	m.t0 = time.Now()
	return m
}

// String gives each process's CPU use in percent of one core (100 ticks
// a second on Linux).
func (m *cpuMeter) String() string {
	el := time.Since(m.t0).Seconds()
	var parts []string
	var ours int64
	for i, pid := range m.pids {
		t, err := cpuTicks(pid)
		if err != nil {
			parts = append(parts, m.names[i]+"=?")
			continue
		}
		ours += t - m.start[i]
		parts = append(parts, fmt.Sprintf("%s=%.0f", m.names[i], float64(t-m.start[i])/el))
	}
	// What the rest of the machine took meanwhile (other test runs on a
	// shared box), and the cores there are.
	if busy, err := machineBusyTicks(); err == nil && m.busy0 > 0 {
		others := busy - m.busy0 - ours
		if others < 0 {
			others = 0
		}
		parts = append(parts, fmt.Sprintf("other_processes=%.0f", float64(others)/el))
	}
	parts = append(parts, fmt.Sprintf("of=%d", 100*runtime.NumCPU()))
	return strings.Join(parts, ",")
}

// agentCPU returns the CPU time the agents (not the harness) used since
// the meter started; agents whose /proc entry is gone count nothing.
func (m *cpuMeter) agentCPU() time.Duration {
	var ticks int64
	for i, pid := range m.pids[1:] {
		if t, err := cpuTicks(pid); err == nil {
			ticks += t - m.start[i+1]
		}
	}
	// 100 clock ticks a second on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}

// machineBusyTicks sums the non-idle CPU time of all cores from /proc/stat.
func machineBusyTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("malformed /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		// user nice system idle iowait irq softirq steal guest guest_nice
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return busy, nil
}

// errLoadDone, returned by an op of runLoad, ends its worker before the
// deadline (a fixed amount of work shared by the workers is done).
var errLoadDone = errors.New("load done")

// runLoad runs `clients` workers, each calling its op in a loop, for d or
// until it returns errLoadDone. newOp is called once per worker before the
// clock starts.
func runLoad(clients int, d time.Duration, agents []*proc, newOp func(worker int) func(r *rand.Rand) error) loadResult {
	ops := make([]func(*rand.Rand) error, clients)
	for i := range ops {
		ops[i] = newOp(i)
	}
	var (
		wg       sync.WaitGroup
		nOK      atomic.Int64
		nErr     atomic.Int64
		errOnce  sync.Once
		firstErr error
		latMu    sync.Mutex
		lats     []time.Duration
	)
	meter := newCPUMeter(agents)
	start := time.Now()
	deadline := start.Add(d)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i)+1, uint64(start.UnixNano())))
			local := make([]time.Duration, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				err := ops[i](r)
				if err == errLoadDone {
					break
				}
				if err != nil {
					nErr.Add(1)
					errOnce.Do(func() { firstErr = err })
					// Do not spin on a dead endpoint.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				nOK.Add(1)
				local = append(local, time.Since(t0))
			}
			latMu.Lock()
			lats = append(lats, local...)
			latMu.Unlock()
		}(i)
	}
	wg.Wait()
	res := loadResult{ops: nOK.Load(), errs: nErr.Load(), elapsed: time.Since(start), firstErr: firstErr, cpu: meter.String(), agentCPU: meter.agentCPU()}
	if len(lats) > 0 {
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		res.p50 = lats[len(lats)/2]
		res.p99 = lats[len(lats)*99/100]
	}
	return res
}

// kvWriteLoad PUTs a 100-byte value to random keys of the key space.
func kvWriteLoad(tb testing.TB, addr string, clients int, d time.Duration, agents []*proc) loadResult {
	return kvWriteLoadWith(func() *api.Client { return newAPIClient(tb, addr) }, clients, d, agents)
}

// kvWriteLoadAs is kvWriteLoad with an ACL token.
func kvWriteLoadAs(tb testing.TB, addr, token string, clients int, d time.Duration, agents []*proc) loadResult {
	return kvWriteLoadWith(func() *api.Client { return newTokenClient(tb, addr, token) }, clients, d, agents)
}

// kvWriteLoadWith is kvWriteLoad with each worker's client made by
// newClient (HTTPS, a token).
func kvWriteLoadWith(newClient func() *api.Client, clients int, d time.Duration, agents []*proc) loadResult {
	return runLoad(clients, d, agents, func(int) func(*rand.Rand) error {
		kv := newClient().KV()
		return func(r *rand.Rand) error {
			_, err := kv.Put(&api.KVPair{Key: benchKey(r.IntN(keySpace)), Value: benchValue}, nil)
			return err
		}
	})
}

// readMode is a consistency mode of reads.
type readMode string

const (
	readDefault    readMode = "default"
	readConsistent readMode = "consistent"
	readStale      readMode = "stale"
)

func (m readMode) options() *api.QueryOptions {
	switch m {
	case readConsistent:
		return &api.QueryOptions{RequireConsistent: true}
	case readStale:
		return &api.QueryOptions{AllowStale: true}
	}
	return &api.QueryOptions{}
}

// kvReadLoad GETs random keys of the (populated) key space.
func kvReadLoad(tb testing.TB, addr string, mode readMode, clients int, d time.Duration, agents []*proc) loadResult {
	return kvReadLoadAs(tb, addr, "", mode, clients, d, agents)
}

// kvReadLoadAs is kvReadLoad with an ACL token.
func kvReadLoadAs(tb testing.TB, addr, token string, mode readMode, clients int, d time.Duration, agents []*proc) loadResult {
	return runLoad(clients, d, agents, func(int) func(*rand.Rand) error {
		kv := newTokenClient(tb, addr, token).KV()
		q := mode.options()
		return func(r *rand.Rand) error {
			p, _, err := kv.Get(benchKey(r.IntN(keySpace)), q)
			if err == nil && p == nil {
				err = fmt.Errorf("key missing")
			}
			return err
		}
	})
}

// populate writes every key of the key space once.
func populate(tb testing.TB, addr string) {
	tb.Helper()
	populateAs(tb, addr, "")
}

// populateAs is populate with an ACL token.
func populateAs(tb testing.TB, addr, token string) {
	tb.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := newTokenClient(tb, addr, token).KV()
			for {
				i := int(next.Add(1)) - 1
				if i >= keySpace {
					return
				}
				if _, err := kv.Put(&api.KVPair{Key: benchKey(i), Value: benchValue}, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatalf("populate: %v", err)
	}
}
