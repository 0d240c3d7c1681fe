package fault

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/consul/api"
)

// convergeWait bounds how long the checkers wait for every server to show
// what was acknowledged.
const convergeWait = 30 * time.Second

// check waits for the healed cluster and runs every checker.
func (r *run) check(ctx context.Context) *RunResult {
	res := &RunResult{Seed: r.cfg.Seed, Faults: len(r.nem.Events.Items())}
	r.checkRecovery(ctx, res)
	r.finalReads(ctx)
	ops := r.reg.Ops.Items()
	res.Ops = len(ops) + len(r.lock.Appends.Items()) + len(r.catalog.Regs.Items()) + len(r.set.Adds.Items())
	r.checkKV(res, ops)
	r.checkLock(ctx, res)

	cv := CheckCatalog(ctx, r.c, r.catalog.Service, r.catalog.Regs.Items(), convergeWait)
	res.Catalog = verdict(cv.Valid)
	if !cv.Valid {
		res.Problems = append(res.Problems, fmt.Sprintf("catalog: %d acknowledged registrations; missing %v", cv.Acked, cv.Missing))
	}
	dv := CheckDurable(ctx, r.c, r.set.Prefix, r.set.Adds.Items(), ops, convergeWait)
	res.Durable = verdict(dv.Valid)
	if !dv.Valid {
		res.Problems = append(res.Problems, "durable: "+strings.Join(dv.Problems, "; "))
	}
	r.cfg.Logf("catalog: %d acknowledged registrations; durable: %d acknowledged writes", cv.Acked, dv.Acked)
	return res
}

// checkRecovery waits for the cluster to be healthy again and counts the
// agents that crashed.
func (r *run) checkRecovery(ctx context.Context, res *RunResult) {
	hctx, cancel := context.WithTimeout(ctx, 2*healthyWait)
	err := r.c.WaitHealthy(hctx)
	cancel()
	res.Recovered = err == nil
	if err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("the cluster did not recover after the faults healed: %v", err))
	}
	n, lines := crashes(r.c.All())
	res.Crashes += n
	res.Problems = append(res.Problems, lines...)
}

// checkKV checks the register history (?consistent and final reads) for
// linearizability and measures the staleness of every read mode.
func (r *run) checkKV(res *RunResult, ops []KVOp) {
	r.lin = CheckLinearizable(ops, []ReadMode{Consistent, Final}, r.cfg.CheckTimeout)
	switch r.lin.Result {
	case porcupine.Ok:
		res.KV = Valid
	case porcupine.Unknown:
		res.KV = Unknown
	default:
		res.KV = Invalid
		res.Problems = append(res.Problems, "kv: "+r.lin.Counterexample)
	}
	res.Staleness = MeasureStaleness(ops, Consistent, Default, Stale)
	r.cfg.Logf("kv: %d operations checked: %s", r.lin.Checked, r.lin.Result)
}

// checkLock reads the lock log and checks it.
func (r *run) checkLock(ctx context.Context, res *RunResult) {
	if r.lock.Unsupported() {
		res.Lock = Skipped
		r.cfg.Logf("lock: skipped: %v", ErrSessionsUnsupported)
		return
	}
	final, err := r.listConsistent(ctx, r.lock.LogPrefix())
	if err != nil {
		res.Lock = Invalid
		res.Problems = append(res.Problems, fmt.Sprintf("lock: final read: %v", err))
		return
	}
	lv := CheckLock(r.lock.Holds.Items(), r.lock.Appends.Items(), final)
	res.Lock = verdict(lv.Valid)
	r.cfg.Logf("lock: %d holds, %d acknowledged appends, %d logged", lv.Holds, lv.Acked, lv.Logged)
	if !lv.Valid {
		res.Problems = append(res.Problems, "lock: "+strings.Join(lv.Problems[:min(5, len(lv.Problems))], "; "))
	}
}

// finalReads reads every register with ?consistent through the leader and
// records the reads with mode Final.
func (r *run) finalReads(ctx context.Context) {
	leader, err := r.c.Leader(ctx)
	if err != nil {
		return
	}
	for i := 0; i < r.reg.Keys; i++ {
		key := r.reg.Key(i)
		op := KVOp{Process: r.reg.newProcess(), Agent: leader.Name, Kind: ReadOp, Mode: Final, Key: key, Call: r.clock.Now()}
		qctx, cancel := context.WithTimeout(ctx, opTimeout)
		p, _, err := leader.ctl.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(qctx))
		cancel()
		op.Return, op.Result = r.clock.Now(), OK
		if err != nil {
			op.Result, op.Error = Fail, err.Error()
		} else if p != nil {
			op.Value, err = strconv.Atoi(string(p.Value))
			if err != nil {
				op.Result, op.Error = Fail, fmt.Sprintf("unexpected value %q", p.Value)
			}
			op.Index = p.ModifyIndex
		}
		r.reg.Ops.Add(op)
	}
}

// listConsistent lists prefix with ?consistent through the leader.
func (r *run) listConsistent(ctx context.Context, prefix string) (api.KVPairs, error) {
	leader, err := r.c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	pairs, _, err := leader.ctl.KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	return pairs, err
}
