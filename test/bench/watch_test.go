package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

const watchKey = "bench/watched"

// watcherCounts is BENCH_WATCHERS, a comma-separated list of counts
// (default 5000).
func watcherCounts(tb testing.TB) []int {
	s := os.Getenv("BENCH_WATCHERS")
	if s == "" {
		return []int{5000}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			tb.Fatalf("BENCH_WATCHERS=%q: want counts like 5000,10000", s)
		}
		out = append(out, n)
	}
	return out
}

// watchResult is the outcome of one blocked-watchers run.
type watchResult struct {
	n          int
	blockedIn  time.Duration // start of the watchers -> all blocked and the agent idle
	rssBefore  int64         // KiB, before the watchers
	rssAfter   int64         // KiB, all watchers blocked
	allWoken   time.Duration // PUT sent -> the last watcher has the new value
	p50Woken   time.Duration
	putLatency time.Duration
	// CPU time (10ms ticks) of the agent and of this process (the
	// watchers) from the PUT to the last watcher's answer: on a shared
	// machine they add up to the wall time the cores allow.
	agentCPU, clientCPU time.Duration
	woken               int
	spurious            int64 // returns with the old value, re-armed
	errs                int64
	firstErr            error
	agentSockets        int // sockets the agent holds while they are blocked
	agentFDExhausted    bool
	settleNotReached    string
	// Where the wake time goes, from the watchers' side (offsets from
	// the PUT sent): the first byte of each final answer as the
	// client's read loop sees it, and the answer decoded.
	firstByte, decoded spread
	// decodeLag is, per watcher, first byte -> answer decoded.
	decodeLag spread
}

// spread is the minimum, median and maximum of a set of durations.
type spread struct{ min, p50, max time.Duration }

func spreadOf(ds []time.Duration) spread {
	if len(ds) == 0 {
		return spread{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return spread{s[0], s[len(s)/2], s[len(s)-1]}
}

func (s spread) String() string {
	return fmt.Sprintf("%.1f/%.1f/%.1f", ms(s.min), ms(s.p50), ms(s.max))
}

// breakdown is the wake's timeline as the watchers saw it (min/p50/max in
// ms): the PUT's round trip, the first byte of the answers, the answers
// decoded, and first byte -> decoded per watcher.
func (r watchResult) breakdown() string {
	return fmt.Sprintf("first_byte_ms=%s decoded_ms=%s byte_to_decoded_ms=%s", r.firstByte, r.decoded, r.decodeLag)
}

func (r watchResult) rssDeltaMiB() float64 { return float64(r.rssAfter-r.rssBefore) / 1024 }
func (r watchResult) rssTotalMiB() float64 { return float64(r.rssAfter) / 1024 }

// kvEntry is the part of a /v1/kv response a watcher looks at.
type kvEntry struct {
	Value       []byte
	ModifyIndex uint64
}

// runWatchers blocks n watchers on one key of the agent p, writes the key
// and measures the time until every watcher has returned with the new
// value. With profile set (BENCH_WATCH_PPROF, the agent serving
// /debug/pprof), it writes the agent's goroutine and heap profiles while
// the watchers are parked to profile+".goroutines" and ".heap", and a CPU
// profile and an execution trace of the write -> all-woken window to
// profile+".cpu" and ".trace" (go tool trace -pprof=sync gives the
// blocking profile).
func runWatchers(tb testing.TB, p *proc, n int, profile string) watchResult {
	tb.Helper()
	res := watchResult{n: n}
	pid := p.Pid()
	kv := newAPIClient(tb, p.HTTPAddr()).KV()
	if _, err := kv.Put(&api.KVPair{Key: watchKey, Value: []byte("before")}, nil); err != nil {
		tb.Fatalf("put %s: %v", watchKey, err)
	}
	_, meta, err := kv.Get(watchKey, nil)
	if err != nil {
		tb.Fatalf("get %s: %v", watchKey, err)
	}
	index := meta.LastIndex
	newValue := []byte(fmt.Sprintf("after-%d", time.Now().UnixNano()))

	// Let the agent settle after start-up before the baseline.
	waitIdle(pid, 1*time.Second, 10*time.Second)
	if res.rssBefore, err = procStatusKiB(pid, "VmRSS"); err != nil {
		tb.Fatal(err)
	}
	sock0, _ := socketFDs(pid)

	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		MaxIdleConns:        n + 16,
		MaxIdleConnsPerHost: n + 16,
		MaxConnsPerHost:     0, // unlimited: one connection per blocked request
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		wrote    sync.WaitGroup // every watcher's first request is on the wire
		done     sync.WaitGroup // every watcher has the new value
		dial     = make(chan struct{}, 256)
		errMu    sync.Mutex
		nErr     atomic.Int64
		nSpur    atomic.Int64
		doneAt   = make([]time.Time, n)
		byteAt   = make([]time.Time, n)
		url      = "http://" + p.HTTPAddr() + "/v1/kv/" + watchKey
		startAll = time.Now()
	)
	wrote.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			defer done.Done()
			var wroteOnce sync.Once
			signal := func() { wroteOnce.Do(func() { <-dial; wrote.Done() }) }
			defer signal()
			dial <- struct{}{} // bound the concurrent connection set-ups
			trace := &httptrace.ClientTrace{
				WroteRequest:         func(httptrace.WroteRequestInfo) { signal() },
				GotFirstResponseByte: func() { byteAt[i] = time.Now() },
			}
			idx := index
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet,
					url+"?index="+strconv.FormatUint(idx, 10)+"&wait=5m", nil)
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					nErr.Add(1)
					errMu.Lock()
					if res.firstErr == nil {
						res.firstErr = err
					}
					errMu.Unlock()
					signal()
					time.Sleep(100 * time.Millisecond)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				var got []kvEntry
				if err == nil && resp.StatusCode == http.StatusOK {
					err = json.Unmarshal(body, &got)
				} else if err == nil {
					err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
				}
				if err != nil || len(got) != 1 {
					if err == nil {
						err = fmt.Errorf("%d entries", len(got))
					}
					nErr.Add(1)
					errMu.Lock()
					if res.firstErr == nil {
						res.firstErr = err
					}
					errMu.Unlock()
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if bytes.Equal(got[0].Value, newValue) {
					doneAt[i] = time.Now()
					return
				}
				// Woken without the new value: block again from the
				// index returned.
				nSpur.Add(1)
				if h, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64); err == nil && h > 0 {
					idx = h
				}
			}
		}(i)
	}

	firstErr := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return res.firstErr
	}
	fail := func(format string, args ...any) {
		cancel()
		if p.Contains("too many open files") {
			format += " (the agent ran out of file descriptors: \"too many open files\" in its log)"
		}
		tb.Fatalf(format, args...)
	}
	if !waitGroupTimeout(&wrote, 5*time.Minute) {
		fail("watchers: not all %d requests sent after 5m (errors=%d, first=%v)", n, nErr.Load(), firstErr())
	}
	// Every request is on the wire; wait until the agent holds all the
	// connections and has gone idle (each request parsed and parked on
	// its watch set). The agent exposes no goroutine count, so its
	// sockets and CPU time stand in for it.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s, _ := socketFDs(pid)
		res.agentSockets = s - sock0
		if res.agentSockets >= n {
			break
		}
		if time.Now().After(deadline) {
			res.settleNotReached = fmt.Sprintf("agent holds only %d of %d connections", res.agentSockets, n)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !waitIdle(pid, 2*time.Second, 2*time.Minute) {
		res.settleNotReached += " agent CPU not idle after 2m"
	}
	res.blockedIn = time.Since(startAll)
	if res.rssAfter, err = procStatusKiB(pid, "VmRSS"); err != nil {
		tb.Fatal(err)
	}
	res.agentFDExhausted = p.Contains("too many open files")
	res.spurious = nSpur.Load()

	var profWG sync.WaitGroup
	if profile != "" {
		fetchProfile(p, "goroutine?debug=1", profile+".goroutines")
		fetchProfile(p, "heap", profile+".heap")
		for _, f := range []struct{ path, file string }{{"profile?seconds=2", ".cpu"}, {"trace?seconds=2", ".trace"}} {
			profWG.Add(1)
			go func() {
				defer profWG.Done()
				fetchProfile(p, f.path, profile+f.file)
			}()
		}
		// Both have started well before the write.
		time.Sleep(300 * time.Millisecond)
	}
	defer profWG.Wait()

	if clientProf := os.Getenv("BENCH_WATCH_CLIENT_PPROF"); clientProf != "" {
		// The watchers' own CPU over the wake (this process).
		if f, err := os.Create(clientProf); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			} else {
				f.Close()
			}
		}
	}
	agentCPU0, _ := cpuTicks(pid)
	selfCPU0, _ := cpuTicks(os.Getpid())
	t0 := time.Now()
	if _, err := kv.Put(&api.KVPair{Key: watchKey, Value: newValue}, nil); err != nil {
		fail("put new value: %v", err)
	}
	res.putLatency = time.Since(t0)
	allDone := waitGroupTimeout(&done, 5*time.Minute)
	if t, err := cpuTicks(pid); err == nil {
		res.agentCPU = time.Duration(t-agentCPU0) * 10 * time.Millisecond
	}
	if t, err := cpuTicks(os.Getpid()); err == nil {
		res.clientCPU = time.Duration(t-selfCPU0) * 10 * time.Millisecond
	}
	cancel()
	var woke, bytes1, lag []time.Duration
	for i, t := range doneAt {
		if !t.IsZero() {
			woke = append(woke, t.Sub(t0))
			if b := byteAt[i]; !b.IsZero() {
				bytes1 = append(bytes1, b.Sub(t0))
				lag = append(lag, t.Sub(b))
			}
		}
	}
	res.firstByte, res.decoded, res.decodeLag = spreadOf(bytes1), spreadOf(woke), spreadOf(lag)
	res.woken = len(woke)
	res.errs = nErr.Load()
	res.spurious = nSpur.Load() - res.spurious
	if !allDone || len(woke) != n {
		fail("watchers: only %d of %d returned the new value within 5m (errors=%d, first=%v)", len(woke), n, res.errs, firstErr())
	}
	sort.Slice(woke, func(i, j int) bool { return woke[i] < woke[j] })
	res.allWoken = woke[len(woke)-1]
	res.p50Woken = woke[len(woke)/2]
	if !res.agentFDExhausted {
		res.agentFDExhausted = p.Contains("too many open files")
	}
	return res
}

// waitIdle waits at least min, then until the process used at most 2
// clock ticks (20ms) of CPU in each of two consecutive 500ms windows, or
// max passed. It reports whether the process went idle.
func waitIdle(pid int, min, max time.Duration) bool {
	start := time.Now()
	time.Sleep(min)
	quiet := 0
	last, err := cpuTicks(pid)
	if err != nil {
		return false
	}
	for time.Since(start) < max {
		time.Sleep(500 * time.Millisecond)
		now, err := cpuTicks(pid)
		if err != nil {
			return false
		}
		if now-last <= 2 {
			quiet++
			if quiet >= 2 {
				return true
			}
		} else {
			quiet = 0
		}
		last = now
	}
	return false
}

func waitGroupTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// fetchProfile saves the agent's /debug/pprof/<path> to file; a failure is
// printed, not fatal (the figures do not depend on it).
func fetchProfile(p *proc, path, file string) {
	resp, err := http.Get("http://" + p.HTTPAddr() + "/debug/pprof/" + path)
	if err != nil {
		fmt.Printf("bench: profile %s: %v\n", path, err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	if err == nil {
		err = os.WriteFile(file, body, 0o644)
	}
	if err != nil {
		fmt.Printf("bench: profile %s: %v\n", path, err)
	}
}
