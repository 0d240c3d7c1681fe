package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/tribune-mesh/tribune/clock"
)

// Config configures one run.
type Config struct {
	// Seed drives the fault schedule and the workloads' choices.
	Seed uint64
	// Duration is how long the random schedule lasts; 0 runs the short
	// schedule (one partition, one leader kill, one leader pause).
	Duration time.Duration
	// Faults are the kinds the random schedule draws from.
	Faults []FaultKind
	// OutDir receives the evidence of invalid runs (and of every run
	// with Keep).
	OutDir string
	Keep   bool
	// LogLevel is the agents' log level.
	LogLevel string
	// CheckTimeout bounds the linearizability check of each key.
	CheckTimeout time.Duration
	// Logf logs progress (t.Logf).
	Logf func(format string, args ...any)
}

// Verdict is one checker's verdict.
type Verdict string

// Verdicts.
const (
	Valid   Verdict = "valid"
	Invalid Verdict = "invalid"
	// Unknown: the linearizability check timed out.
	Unknown Verdict = "unknown"
	// Skipped: the workload could not run (the lock workload when the
	// agents do not serve sessions).
	Skipped Verdict = "skipped"
)

func verdict(ok bool) Verdict {
	if ok {
		return Valid
	}
	return Invalid
}

// RunResult is what one run found.
type RunResult struct {
	Seed    uint64
	Faults  int
	Ops     int
	Crashes int
	KV      Verdict
	Lock    Verdict
	Catalog Verdict
	Durable Verdict
	// Recovered: the cluster became healthy again after the faults.
	Recovered bool
	Staleness []Staleness
	// Problems holds the first counterexample of each invalid checker.
	Problems []string
	// Folder holds the evidence (history, logs, visualization), if kept.
	Folder string
}

// Line is the run's summary line.
func (r *RunResult) Line() string {
	return fmt.Sprintf("jepsen: seed=%d faults=%d ops=%d kv=%s lock=%s catalog=%s durable=%s",
		r.Seed, r.Faults, r.Ops, r.KV, r.Lock, r.Catalog, r.Durable)
}

// Invalid reports whether a checker found a violation, the cluster did not
// recover, or an agent crashed.
func (r *RunResult) Invalid() bool {
	for _, v := range []Verdict{r.KV, r.Lock, r.Catalog, r.Durable} {
		if v == Invalid {
			return true
		}
	}
	return !r.Recovered || r.Crashes > 0
}

// run is the state of one run: the cluster and the workloads.
type run struct {
	cfg     Config
	env     *Env
	clock   *Clock
	c       *Cluster
	nem     *Nemesis
	reg     *Register
	lock    *LockWorkload
	catalog *CatalogWorkload
	set     *SetWorkload
	// lin is the register check's result, kept for the visualization.
	lin LinearResult
}

// Run starts a cluster, runs the workloads under the nemesis, heals, checks
// the histories and removes the cluster. An error means the harness could
// not run (the cluster never started); violations are in the result.
func Run(ctx context.Context, env *Env, cfg Config) (*RunResult, error) {
	dir, err := os.MkdirTemp(env.WorkDir, "run-")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(dir)
	c, err := NewCluster(env, dir, ClusterOptions{Servers: 3, Clients: 2, LogLevel: cfg.LogLevel})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	err = c.Start(sctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	clock := NewClock()
	prefix := fmt.Sprintf("jepsen/%d", cfg.Seed)
	r := &run{cfg: cfg, env: env, clock: clock, c: c,
		nem:     &Nemesis{C: c, Clock: clock, Logf: cfg.Logf},
		reg:     &Register{Prefix: prefix + "/reg", Keys: 3, Clock: clock, Think: 20 * time.Millisecond},
		lock:    &LockWorkload{Prefix: prefix + "/lock", Clock: clock},
		catalog: &CatalogWorkload{Service: fmt.Sprintf("jepsen-%d", cfg.Seed), Clock: clock},
		set:     &SetWorkload{Prefix: prefix + "/set/", Clock: clock},
	}
	r.workloads(ctx)
	res := r.check(ctx)
	res.Folder = keepEvidence(cfg, res.Invalid(), func() (string, error) { return r.keep(res) })
	return res, nil
}

// workloads runs every workload while the nemesis runs its schedule, then
// lets them run a little longer on the healed cluster.
func (r *run) workloads(ctx context.Context) {
	c, cfg := r.c, r.cfg
	steps := schedule(cfg, rand.New(rand.NewPCG(cfg.Seed, 0)), ShortSchedule)
	all := c.All()
	specs := make([]ClientSpec, len(all))
	for i, a := range all {
		specs[i] = ClientSpec{Agent: a, Mix: DefaultMix}
	}
	underNemesis(ctx, cfg, r.nem, steps,
		func(wctx context.Context) { r.reg.Run(wctx, specs, cfg.Seed) },
		func(wctx context.Context) {
			r.lock.Run(wctx, []*Agent{c.Servers[1], c.Clients[0], c.Clients[1]}, cfg.Seed)
		},
		func(wctx context.Context) { r.catalog.Run(wctx, all, cfg.Seed) },
		func(wctx context.Context) { r.set.Run(wctx, all, cfg.Seed) })
}

// schedule is a run's fault schedule: short's when cfg.Duration is 0, else
// a random one of that length drawn from cfg.Faults.
func schedule(cfg Config, rng *rand.Rand, short func(*rand.Rand) []Step) []Step {
	if cfg.Duration <= 0 {
		return short(rng)
	}
	return RandomSchedule(rng, cfg.Faults, cfg.Duration)
}

// underNemesis runs the workloads (each until its context ends) while nem
// runs steps (for cfg.Duration at most, when set), lets them run 3 s more
// on the healed cluster, then stops them and waits for them.
func underNemesis(ctx context.Context, cfg Config, nem *Nemesis, steps []Step, workloads ...func(context.Context)) {
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range workloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w(wctx)
		}()
	}
	nctx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		nctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	nem.Run(nctx, steps)
	clock.Sleep(ctx, 3*time.Second)
	stop()
	wg.Wait()
}

// crashes lists, one line each, the agents that exited by themselves, and
// counts their exits.
func crashes(agents []*Agent) (int, []string) {
	n := 0
	var lines []string
	for _, a := range agents {
		if c := a.Crashes(); len(c) > 0 {
			n += len(c)
			lines = append(lines, fmt.Sprintf("%s exited by itself %d time(s), last: %s; see %s.log", a.Name, len(c), c[len(c)-1], a.Name))
		}
	}
	return n, lines
}
