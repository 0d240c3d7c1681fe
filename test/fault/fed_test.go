package fault

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestJepsenFederation runs the multi-DC fault test: two federated
// datacenters (dc1 primary, dc2 secondary; ACLs with token replication)
// under the federation nemesis (WAN partition, partition of the primary's
// leader, kills and pauses of either leader), checked for one writer of
// global state, correct cross-DC reads and prepared-query failover. The
// JEPSEN_* variables of TestJepsen apply; JEPSEN_FED_FAULTS narrows the
// random schedule's faults (default: every federation fault). Without
// JEPSEN_DURATION it runs the short schedule (about 80 s, in `make test`).
//
// Replay a run with the seed and duration its line printed:
// JEPSEN_SEED=<seed> JEPSEN_DURATION=<d> go test -run TestJepsenFederation -v ./test/fault/
func TestJepsenFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes in a network namespace")
	}
	env := Enter(t)
	if env == nil {
		return
	}
	t.Setenv("JEPSEN_FAULTS", "")
	cfg, runs := configFromEnv(t)
	cfg.Faults = FederationFaults
	if v := os.Getenv("JEPSEN_FED_FAULTS"); v != "" {
		cfg.Faults = nil
		for _, f := range strings.Split(v, ",") {
			if !slices.Contains(FederationFaults, FaultKind(f)) {
				t.Fatalf("JEPSEN_FED_FAULTS: unknown fault %q (know %v)", f, FederationFaults)
			}
			cfg.Faults = append(cfg.Faults, FaultKind(f))
		}
	}
	name := "short multi-DC schedule"
	if cfg.Duration > 0 {
		name = "multi-DC " + scheduleName(cfg)
	}
	fmt.Printf("jepsen: %d run(s) from seed %d, %s\n", runs, cfg.Seed, name)
	invalid := 0
	base := cfg.Seed
	for i := 0; i < runs; i++ {
		cfg.Seed = base + uint64(i)
		res, err := RunFederation(context.Background(), env, cfg)
		if err != nil {
			t.Fatalf("run %d (seed %d): %v", i+1, cfg.Seed, err)
		}
		fmt.Println(res.Line())
		for _, f := range res.Figures {
			fmt.Printf("jepsen:   %s\n", f)
		}
		if res.Invalid() {
			invalid++
			for _, p := range res.Problems {
				fmt.Printf("jepsen:   %s\n", p)
			}
			t.Errorf("seed %d: invalid multi-DC history; evidence in %s", cfg.Seed, res.Folder)
		}
		if res.Folder != "" {
			fmt.Printf("jepsen:   evidence in %s\n", res.Folder)
		}
	}
	fmt.Printf("jepsen: %d runs, %d invalid\n", runs, invalid)
}
