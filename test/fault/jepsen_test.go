package fault

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestJepsen runs the fault test: JEPSEN_RUNS runs (default 1), each with
// seed JEPSEN_SEED+i (default: drawn from the clock, printed), under the
// short schedule (one partition, one leader kill, one leader pause) or, when
// JEPSEN_DURATION is set, a random schedule of that length drawn from
// JEPSEN_FAULTS (default: every fault). JEPSEN_OUT is where invalid runs
// keep their evidence, JEPSEN_KEEP=1 keeps it for valid runs too, and
// JEPSEN_LOG_LEVEL sets the agents' log level.
//
// Replay a run with the seed and duration its line printed:
// JEPSEN_SEED=<seed> JEPSEN_DURATION=<d> go test -run TestJepsen -v ./test/fault/
func TestJepsen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes in a network namespace")
	}
	env := Enter(t)
	if env == nil {
		return
	}
	cfg, runs := configFromEnv(t)
	fmt.Printf("jepsen: %d run(s) from seed %d, %s\n", runs, cfg.Seed, scheduleName(cfg))
	invalid := 0
	base := cfg.Seed
	for i := 0; i < runs; i++ {
		cfg.Seed = base + uint64(i)
		res, err := Run(context.Background(), env, cfg)
		if err != nil {
			t.Fatalf("run %d (seed %d): %v", i+1, cfg.Seed, err)
		}
		fmt.Println(res.Line())
		for _, s := range res.Staleness {
			fmt.Printf("jepsen:   %s\n", s)
		}
		if res.Invalid() {
			invalid++
			for _, p := range res.Problems {
				fmt.Printf("jepsen:   %s\n", p)
			}
			t.Errorf("seed %d: invalid history; evidence in %s", cfg.Seed, res.Folder)
		}
		if res.Folder != "" {
			fmt.Printf("jepsen:   evidence in %s\n", res.Folder)
		}
	}
	fmt.Printf("jepsen: %d runs, %d invalid\n", runs, invalid)
}

func scheduleName(cfg Config) string {
	if cfg.Duration <= 0 {
		return "short schedule"
	}
	names := make([]string, len(cfg.Faults))
	for i, f := range cfg.Faults {
		names[i] = string(f)
	}
	return fmt.Sprintf("random schedule of %v from %s", cfg.Duration, strings.Join(names, ","))
}

// configFromEnv reads the JEPSEN_* variables.
func configFromEnv(t *testing.T) (Config, int) {
	t.Helper()
	cfg := Config{Seed: uint64(time.Now().UnixNano() % 1e9), Faults: AllFaults, OutDir: os.Getenv("JEPSEN_OUT"),
		Keep: os.Getenv("JEPSEN_KEEP") == "1", LogLevel: os.Getenv("JEPSEN_LOG_LEVEL"), CheckTimeout: 2 * time.Minute, Logf: t.Logf}
	runs := 1
	if v := os.Getenv("JEPSEN_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("JEPSEN_SEED=%q: %v", v, err)
		}
		cfg.Seed = s
	}
	if v := os.Getenv("JEPSEN_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("JEPSEN_RUNS=%q: want a positive number", v)
		}
		runs = n
	}
	if v := os.Getenv("JEPSEN_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("JEPSEN_DURATION=%q: %v", v, err)
		}
		cfg.Duration = d
	}
	if v := os.Getenv("JEPSEN_FAULTS"); v != "" {
		cfg.Faults = nil
		known := map[FaultKind]bool{}
		for _, f := range AllFaults {
			known[f] = true
		}
		for _, f := range strings.Split(v, ",") {
			if !known[FaultKind(f)] {
				t.Fatalf("JEPSEN_FAULTS: unknown fault %q (know %v)", f, AllFaults)
			}
			cfg.Faults = append(cfg.Faults, FaultKind(f))
		}
	}
	return cfg, runs
}
