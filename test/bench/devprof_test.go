package bench

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Profiles of the -dev throughput workloads.
//
// With BENCH_DEV_PPROF=<prefix>, the tribune agents of BenchmarkDevKVWrite
// and BenchmarkDevRead serve /debug/pprof (enable_debug) and, while each
// workload runs, the harness saves the agent's CPU profile and allocation
// profile of the run (<prefix>-<workload>.cpu, .allocs) and a one-second
// execution trace (.trace; `go tool trace -pprof=sync` gives where
// goroutines blocked on channels and mutexes, without turning the
// runtime's mutex or block profiling on in the agent). The profiles cost
// the agent a little CPU: compare figures of runs without them.

// devProfilePrefix is BENCH_DEV_PPROF, "" when unset.
func devProfilePrefix() string { return os.Getenv("BENCH_DEV_PPROF") }

// devProfileArgs are the extra agent arguments for a -dev workload of kind:
// enable_debug when its profiles are taken.
func devProfileArgs(kind string) []string {
	if kind != kindTribune || devProfilePrefix() == "" {
		return nil
	}
	return []string{"-hcl", "enable_debug = true"}
}

// profileDevLoad starts taking the profiles of a workload of duration d
// named name on p (when BENCH_DEV_PPROF is set and p is tribune's) and
// returns a func that waits for them.
func profileDevLoad(p *proc, kind, name string, d time.Duration) (wait func()) {
	prefix := devProfilePrefix()
	if kind != kindTribune || prefix == "" {
		return func() {}
	}
	// The profiles cover the run but its first and last half second.
	secs := int((d - time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	file := prefix + "-" + strings.NewReplacer(" ", "-", "=", "").Replace(name)
	var wg sync.WaitGroup
	for _, f := range []struct {
		path, ext string
		delay     time.Duration
	}{
		{fmt.Sprintf("profile?seconds=%d", secs), ".cpu", 500 * time.Millisecond},
		{fmt.Sprintf("allocs?seconds=%d", secs), ".allocs", 500 * time.Millisecond},
		{"trace?seconds=1", ".trace", d / 2},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(f.delay)
			fetchProfile(p, f.path, file+f.ext)
		}()
	}
	return func() {
		wg.Wait()
		fmt.Printf("bench: profiles of %s in %s.{cpu,allocs,trace}\n", name, file)
	}
}
