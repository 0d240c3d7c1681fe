package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// SetAdd is one write of the set workload: a new key, written once.
type SetAdd struct {
	Key    string `json:"key"`
	Agent  string `json:"agent"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Result Result `json:"result"`
	Error  string `json:"error,omitempty"`
}

// SetWorkload writes new keys under Prefix through random agents, so that
// every acknowledged write can be looked for after the faults.
type SetWorkload struct {
	Prefix string
	Clock  *Clock
	Adds   Log[SetAdd]

	seq atomic.Int64
}

// Run writes until ctx ends.
func (w *SetWorkload) Run(ctx context.Context, agents []*Agent, seed uint64) {
	onRandomAgents(ctx, agents, rand.New(rand.NewPCG(seed, 300)), 20*time.Millisecond, w.add)
}

func (w *SetWorkload) add(ctx context.Context, cl *api.Client, a *Agent) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	key := fmt.Sprintf("%s%08d", w.Prefix, w.seq.Add(1))
	s := SetAdd{Key: key, Agent: a.Name, Call: w.Clock.Now()}
	_, err := cl.KV().Put(&api.KVPair{Key: key, Value: []byte(key)}, (&api.WriteOptions{}).WithContext(ctx))
	s.Return = w.Clock.Now()
	s.Result = classify(err)
	if err != nil {
		s.Error = err.Error()
	}
	w.Adds.Add(s)
}

// DurableVerdict is the durability checker's verdict.
type DurableVerdict struct {
	Valid bool
	// Acked is how many acknowledged writes were looked for.
	Acked    int
	Problems []string
}

// CheckDurable checks, after the faults healed, that every acknowledged
// write survived:
//
//   - set: every acknowledged key is in a ?consistent read with its value,
//     and every server's own state (?stale) shows it before within passes;
//   - register: the final ?consistent value of each register (reads of mode
//     Final in reg) is not older than a write acknowledged before it.
func CheckDurable(ctx context.Context, c *Cluster, setPrefix string, adds []SetAdd, reg []KVOp, within time.Duration) DurableVerdict {
	var v DurableVerdict
	want := map[string]bool{}
	for _, a := range adds {
		if a.Result == OK {
			want[a.Key] = true
		}
	}
	for _, op := range reg {
		if op.Result == OK && (op.Kind == WriteOp || (op.Kind == CASOp && op.Swapped)) {
			v.Acked++
		}
	}
	v.Acked += len(want)
	for _, s := range MeasureStaleness(reg, Final) {
		if s.Stale > 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("register: %d of %d final reads miss an acknowledged write (by up to %v)", s.Stale, s.Reads, s.Max.Round(time.Millisecond)))
		}
	}
	if leader, err := c.Leader(ctx); err != nil {
		v.Problems = append(v.Problems, fmt.Sprintf("set: no leader for the final read: %v", err))
	} else if missing, err := setMissing(ctx, leader, setPrefix, want, true); err != nil {
		v.Problems = append(v.Problems, fmt.Sprintf("set: final read: %v", err))
	} else if len(missing) > 0 {
		v.Problems = append(v.Problems, fmt.Sprintf("set: %d acknowledged keys lost, first %s", len(missing), missing[0]))
	}
	// One deadline for all the servers: each has what is left of it.
	deadline := time.Now().Add(within)
	for _, s := range c.Servers {
		err := wait.Until(ctx, time.Until(deadline), func() error {
			missing, err := setMissing(ctx, s, setPrefix, want, false)
			if err != nil {
				return fmt.Errorf("set: %s: %w", s.Name, err)
			}
			if len(missing) > 0 {
				return fmt.Errorf("set: %s never showed %d acknowledged keys, first %s", s.Name, len(missing), missing[0])
			}
			return nil
		})
		if err != nil {
			v.Problems = append(v.Problems, err.Error())
		}
	}
	v.Valid = len(v.Problems) == 0
	return v
}

// setMissing lists the wanted keys that a's read of prefix lacks (or holds
// with another value).
func setMissing(ctx context.Context, a *Agent, prefix string, want map[string]bool, consistent bool) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q := &api.QueryOptions{RequireConsistent: consistent, AllowStale: !consistent}
	pairs, _, err := a.ctl.KV().List(prefix, q.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list %s on %s: %w", prefix, a.Name, err)
	}
	got := map[string]bool{}
	for _, p := range pairs {
		got[p.Key] = string(p.Value) == p.Key
	}
	var missing []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	return missing, nil
}
