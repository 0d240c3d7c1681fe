package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// convergeBound is how long dc2 may take, after the last write (3 s after
// the last fault healed), to hold exactly dc1's global state.
const convergeBound = 30 * time.Second

// fedCheckTimeout bounds the linearizability check of each register key:
// past it the verdict is unknown, never a hung run.
const fedCheckTimeout = 10 * time.Second

// FedResult is what one multi-DC run found.
type FedResult struct {
	Seed    uint64
	Faults  int
	Ops     int
	Crashes int
	// KV: each datacenter's register, read and written from both
	// datacenters (?dc=), is linearizable (?consistent and final reads).
	KV Verdict
	// Global: one writer of global state (CheckOneWriter) and dc2
	// converged to dc1's state within convergeBound after the heal.
	Global Verdict
	// CrossDC: no ?dc= read returned another datacenter's data.
	CrossDC Verdict
	// Failover: the prepared-query failover answers (CheckFailover).
	Failover Verdict
	// Recovered: both datacenters became healthy and federated again
	// within healthyWait of every heal.
	Recovered bool
	// Converged is how long dc2 took to converge after the heal (-1:
	// not within convergeBound).
	Converged time.Duration
	// Figures are measured facts worth a line (replication, cut writes,
	// failover answers, staleness).
	Figures  []string
	Problems []string
	Folder   string
}

// Federation is the run's federation verdict: invalid when any checker
// found a violation, an agent crashed or the federation did not recover.
func (r *FedResult) Federation() Verdict {
	for _, v := range []Verdict{r.KV, r.Global, r.CrossDC, r.Failover} {
		if v == Invalid {
			return Invalid
		}
	}
	if !r.Recovered || r.Crashes > 0 {
		return Invalid
	}
	return Valid
}

// Invalid reports whether the run is invalid.
func (r *FedResult) Invalid() bool { return r.Federation() == Invalid }

// Line is the run's summary line.
func (r *FedResult) Line() string {
	conv := "no"
	if r.Converged >= 0 {
		conv = r.Converged.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("jepsen: seed=%d dcs=2 faults=%d ops=%d kv=%s global=%s crossdc=%s failover=%s converged=%s(bound %v) federation=%s",
		r.Seed, r.Faults, r.Ops, r.KV, r.Global, r.CrossDC, r.Failover, conv, convergeBound, r.Federation())
}

// fedRun is the state of one multi-DC run.
type fedRun struct {
	cfg      Config
	f        *Federation
	clock    *Clock
	nem      *Nemesis
	regs     [2]*Register
	global   *GlobalWorkload
	failover *FailoverWorkload
	// stopped is when the workloads stopped, 3 s after the last heal.
	stopped time.Time
	lin     [2]LinearResult
}

// RunFederation starts two federated datacenters, runs the workloads under
// the federation nemesis, heals, checks and removes them. An error means
// the harness could not run.
func RunFederation(ctx context.Context, env *Env, cfg Config) (*FedResult, error) {
	dir, err := os.MkdirTemp(env.WorkDir, "fed-")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", dir, err)
	}
	for _, dc := range []string{primaryDC, secondaryDC} {
		if err := os.MkdirAll(filepath.Join(dir, dc), 0o755); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}
	clock := NewClock()
	f, err := NewFederation(env, dir, cfg.LogLevel, clock)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := f.Start(sctx); err != nil {
		return nil, fmt.Errorf("start federation: %w", err)
	}
	prefix := fmt.Sprintf("jf%d", cfg.Seed)
	r := &fedRun{cfg: cfg, f: f, clock: clock,
		nem:      &Nemesis{C: f.Combined(), Clock: clock, Logf: cfg.Logf, Inject: f.Inject, Healthy: f.WaitHealthy},
		global:   &GlobalWorkload{Prefix: prefix, Objects: 2, Clock: clock},
		failover: &FailoverWorkload{Service: prefix + "-fo", Clock: clock},
	}
	for i, dc := range []string{primaryDC, secondaryDC} {
		// The same keys in both datacenters, different values: a read
		// that reached the wrong datacenter shows.
		r.regs[i] = &Register{Prefix: "jepsen/" + prefix + "/reg", Keys: 3, Clock: clock, Think: 30 * time.Millisecond,
			Datacenter: dc, ValueBase: (i + 1) * valueSpan}
	}
	if err := r.global.Setup(sctx, f); err != nil {
		return nil, err
	}
	if err := r.failover.Setup(sctx, f); err != nil {
		return nil, err
	}
	r.workloads(ctx)
	res := r.check(ctx)
	res.Folder = keepEvidence(cfg, res.Invalid(), func() (string, error) { return r.keep(res) })
	return res, nil
}

// workloads runs every workload under the nemesis, then a little longer on
// the healed federation.
func (r *fedRun) workloads(ctx context.Context) {
	f, cfg := r.f, r.cfg
	steps := schedule(cfg, rand.New(rand.NewPCG(cfg.Seed, 1)), FederationShortSchedule)
	// Each register: a client in its own datacenter and two in the
	// other, through ?dc=.
	// The clients across the WAN mostly read: a write that a WAN cut
	// interrupts has an unknown outcome until the end of the history,
	// and many of those make the linearizability check explode.
	home, away := Mix{Consistent: 40, Default: 10, Stale: 10, Write: 25, CAS: 15}, Mix{Consistent: 50, Default: 20, Stale: 20, Write: 5, CAS: 5}
	var workloads []func(context.Context)
	for i, dc := range []string{primaryDC, secondaryDC} {
		here, there := f.DC(dc), f.DC([]string{secondaryDC, primaryDC}[i])
		specs := []ClientSpec{{Agent: here.Clients[0], Mix: home}, {Agent: there.Clients[0], Mix: away}, {Agent: there.Servers[i], Mix: away}}
		workloads = append(workloads, func(wctx context.Context) { r.regs[i].Run(wctx, specs, cfg.Seed+uint64(i)) })
	}
	underNemesis(ctx, cfg, r.nem, steps, append(workloads,
		func(wctx context.Context) { r.global.RunWriter(wctx, f, cfg.Seed) },
		func(wctx context.Context) { r.global.RunReader(wctx, f.DC1, primaryDC, cfg.Seed, 10*time.Millisecond) },
		func(wctx context.Context) {
			r.global.RunReader(wctx, f.DC2, secondaryDC, cfg.Seed+1, 30*time.Millisecond)
		},
		func(wctx context.Context) { r.failover.RunUpdater(wctx, f, cfg.Seed) },
		func(wctx context.Context) { r.failover.RunExecutor(wctx, f, cfg.Seed) })...)
	r.stopped = time.Now()
}

// check waits for the healed federation and runs every checker.
func (r *fedRun) check(ctx context.Context) *FedResult {
	res := &FedResult{Seed: r.cfg.Seed, Faults: len(r.nem.Events.Items()), Converged: -1}
	hctx, cancel := context.WithTimeout(ctx, 2*healthyWait)
	err := r.f.WaitHealthy(hctx)
	cancel()
	res.Recovered = err == nil
	if err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("the federation did not recover after the faults healed: %v", err))
	}
	n, lines := crashes(r.f.All())
	res.Crashes += n
	res.Problems = append(res.Problems, lines...)
	cuts := r.f.Cuts.Items()

	// One writer, and convergence after the heal.
	conv, cerr := r.converge(ctx)
	writes, reads := r.global.Writes.Items(), r.global.Reads.Items()
	ow := CheckOneWriter(writes, reads, cuts)
	res.Global = verdict(ow.Valid && cerr == nil)
	if cerr == nil {
		res.Converged = conv
	} else {
		res.Problems = append(res.Problems, "global: "+cerr.Error())
	}
	for _, p := range ow.Problems {
		res.Problems = append(res.Problems, "global: "+p)
	}
	if lag := ReplicationLag(writes, reads); lag != "" {
		res.Figures = append(res.Figures, "global: "+lag)
	}
	res.Figures = append(res.Figures, fmt.Sprintf("global: %d writes (%d acknowledged through dc2), %d objects read in dc2; %d writes through dc2 inside WAN cuts, all failed, the slowest in %v",
		ow.Writes, ow.ViaSecondary, ow.SecondaryReads, ow.CutWrites, ow.MaxCutFail.Round(time.Millisecond)))

	// Registers: linearizable, and never another datacenter's data.
	res.KV, res.CrossDC = Valid, Valid
	nops := 0
	for i, dc := range []string{primaryDC, secondaryDC} {
		r.finalReads(ctx, r.regs[i], r.f.DC(dc))
		ops := r.regs[i].Ops.Items()
		nops += len(ops)
		r.lin[i] = CheckLinearizable(ops, []ReadMode{Consistent, Final}, min(r.cfg.CheckTimeout, fedCheckTimeout))
		switch r.lin[i].Result {
		case porcupine.Ok:
		case porcupine.Unknown:
			if res.KV == Valid {
				res.KV = Unknown
			}
		default:
			res.KV = Invalid
			res.Problems = append(res.Problems, fmt.Sprintf("kv %s: %s", dc, r.lin[i].Counterexample))
		}
		if p := CheckCrossDC(ops, dc, r.regs[i].ValueBase); len(p) > 0 {
			res.CrossDC = Invalid
			res.Problems = append(res.Problems, "crossdc: "+strings.Join(p, "; "))
		}
		for _, s := range MeasureStaleness(ops, Default, Stale) {
			res.Figures = append(res.Figures, fmt.Sprintf("kv %s: %s", dc, s))
		}
	}

	var rec []string
	for _, ev := range r.nem.Events.Items() {
		if ev.Healthy > 0 {
			rec = append(rec, fmt.Sprintf("%s %v", ev.Kind, time.Duration(ev.Healthy-ev.End).Round(10*time.Millisecond)))
		} else {
			// A federation that heals only much later (the WAN pool
			// once needed minutes after a partition) is a failure
			// even if it recovered before the checks.
			rec = append(rec, fmt.Sprintf("%s not within %v", ev.Kind, healthyWait))
			res.Recovered = false
			res.Problems = append(res.Problems, fmt.Sprintf("the federation was not healthy within %v of healing %s %s: %s", healthyWait, ev.Kind, ev.Detail, ev.Error))
		}
	}
	res.Figures = append(res.Figures, "recovery (heal to both DCs healthy, ?dc= both ways, dc2 replication running): "+strings.Join(rec, ", "))

	fv := CheckFailover(r.failover.Execs.Items(), r.failover.Updates.Items(), cuts, r.failover.node(primaryDC))
	res.Failover = verdict(fv.Valid)
	for _, p := range fv.Problems {
		res.Problems = append(res.Problems, "failover: "+p)
	}
	res.Figures = append(res.Figures, fmt.Sprintf("failover: %d answers in dc2: %d from dc1, %d empty; %d errors; %d older than an acknowledged update (max %v)",
		fv.Execs, fv.FailedOver, fv.Empty, fv.Errors, fv.Stale, fv.MaxStale.Round(time.Millisecond)))
	res.Ops = nops + len(writes) + len(r.failover.Execs.Items()) + len(r.failover.Updates.Items())
	return res
}

// converge waits until every dc2 server's own state (?stale) holds exactly
// dc1's global objects, as a ?consistent read of dc1 shows them, and
// returns how long after the workloads stopped (3 s after the last heal)
// that was.
func (r *fedRun) converge(ctx context.Context) (time.Duration, error) {
	leader, err := r.f.DC1.Leader(ctx)
	if err != nil {
		return 0, err
	}
	lcl := APIClient(leader, opTimeout)
	var last string
	err = wait.Until(ctx, time.Until(r.stopped.Add(convergeBound)), func() error {
		want, err := r.global.readAll(ctx, lcl, leader.Name, primaryDC, Consistent)
		if err != nil {
			return err
		}
		for _, s := range r.f.DC2.Servers {
			got, err := r.global.readAll(ctx, s.ctl, s.Name, secondaryDC, Stale)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(versions(got), versions(want)) {
				last = fmt.Sprintf("%s holds %v, %s holds %v", s.Name, versions(got), primaryDC, versions(want))
				return fmt.Errorf("%s", last)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("dc2 did not converge to dc1's global state within %v of the last write: %v (%s)", convergeBound, err, last)
	}
	return time.Since(r.stopped), nil
}

// versions maps each object to the version read.
func versions(reads []GlobalRead) map[string]string {
	out := make(map[string]string, len(reads))
	for _, r := range reads {
		out[r.Object] = r.Version
	}
	return out
}

// finalReads reads every key of reg with ?consistent through its
// datacenter's leader, as mode Final.
func (r *fedRun) finalReads(ctx context.Context, reg *Register, c *Cluster) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return
	}
	for i := 0; i < reg.Keys; i++ {
		op := KVOp{Process: reg.newProcess(), Agent: leader.Name, Kind: ReadOp, Mode: Final, Key: reg.Key(i), Call: r.clock.Now()}
		qctx, cancel := context.WithTimeout(ctx, opTimeout)
		p, _, err := leader.ctl.KV().Get(op.Key, (&api.QueryOptions{RequireConsistent: true}).WithContext(qctx))
		cancel()
		op.Return, op.Result = r.clock.Now(), OK
		switch {
		case err != nil:
			op.Result, op.Error = Fail, err.Error()
		case p != nil:
			if _, err := fmt.Sscanf(string(p.Value), "%d", &op.Value); err != nil {
				op.Result, op.Error = Fail, fmt.Sprintf("unexpected value %q", p.Value)
			}
			op.Index = p.ModifyIndex
		}
		reg.Ops.Add(op)
	}
}

// fedEvidence is everything a multi-DC run recorded.
type fedEvidence struct {
	Seed       uint64           `json:"seed"`
	Duration   string           `json:"duration"`
	Faults     []Event          `json:"faults"`
	Cuts       []Window         `json:"wan_cuts"`
	Registers  [2][]KVOp        `json:"registers"`
	Writes     []GlobalWrite    `json:"global_writes"`
	Reads      []GlobalRead     `json:"global_reads"`
	Executions []FailoverExec   `json:"failover_executions"`
	Updates    []FailoverUpdate `json:"failover_updates"`
	Problems   []string         `json:"problems"`
}

// keep writes the run's evidence (history.json, problems.txt, the
// registers' visualizations when they failed, every agent's log) into a
// new folder.
func (r *fedRun) keep(res *FedResult) (string, error) {
	folder, err := evidenceFolder(r.cfg, "fed-seed")
	if err != nil {
		return "", err
	}
	ev := fedEvidence{Seed: r.cfg.Seed, Duration: r.cfg.Duration.String(), Faults: r.nem.Events.Items(), Cuts: r.f.Cuts.Items(),
		Registers: [2][]KVOp{r.regs[0].Ops.Items(), r.regs[1].Ops.Items()}, Writes: r.global.Writes.Items(), Reads: r.global.Reads.Items(),
		Executions: r.failover.Execs.Items(), Updates: r.failover.Updates.Items(), Problems: res.Problems}
	if err := writeEvidence(folder, ev, res.Problems, r.f.All()); err != nil {
		return folder, err
	}
	for i, dc := range []string{primaryDC, secondaryDC} {
		if err := r.lin[i].Visualize(filepath.Join(folder, "kv-"+dc+".html")); err != nil {
			return folder, err
		}
	}
	return folder, nil
}
