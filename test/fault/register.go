package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/tribune-mesh/tribune/clock"
)

// OpKind is a register operation.
type OpKind string

// Register operations.
const (
	ReadOp  OpKind = "read"
	WriteOp OpKind = "write"
	CASOp   OpKind = "cas"
)

// ReadMode is a read's consistency mode (Consul's three).
type ReadMode string

// Read modes.
const (
	Consistent ReadMode = "consistent"
	Default    ReadMode = "default"
	Stale      ReadMode = "stale"
	// Final marks the ?consistent reads made after the faults healed,
	// for the durability check.
	Final ReadMode = "final"
)

// KVOp is one operation of the register workload. Values are unique per
// write, so a value names the write that wrote it; 0 is "no value".
type KVOp struct {
	Process int      `json:"process"`
	Agent   string   `json:"agent"`
	Kind    OpKind   `json:"f"`
	Mode    ReadMode `json:"mode,omitempty"`
	Key     string   `json:"key"`
	// Value is the value written (write, cas) or read (read).
	Value int `json:"value"`
	// Expect is the value a cas expected to replace.
	Expect int `json:"expect,omitempty"`
	// Index is the ModifyIndex of the value read, or the index a cas
	// compared against.
	Index uint64 `json:"index,omitempty"`
	// Swapped is a completed cas's answer.
	Swapped bool `json:"swapped,omitempty"`
	// LastContact and KnownLeader are what a read's answer claimed about
	// its freshness (X-Consul-LastContact, X-Consul-KnownLeader).
	LastContact time.Duration `json:"last_contact,omitempty"`
	KnownLeader bool          `json:"known_leader,omitempty"`
	Call        int64         `json:"call"`
	Return      int64         `json:"return"`
	Result      Result        `json:"result"`
	Error       string        `json:"error,omitempty"`
}

// Mix weighs the operations a register client picks from.
type Mix struct {
	Consistent, Default, Stale, Write, CAS int
}

// DefaultMix is the register workload's usual mix: linearizable reads,
// writes and CAS, and some default-mode and stale reads to measure.
var DefaultMix = Mix{Consistent: 35, Default: 10, Stale: 10, Write: 25, CAS: 20}

// ClientSpec is one register client: the agent it talks to and its mix.
type ClientSpec struct {
	Agent *Agent
	Mix   Mix
}

// opTimeout bounds one request; it is longer than the servers' hold
// timeout (7s), so that "No cluster leader" arrives before it.
const opTimeout = 10 * time.Second

// Register is the register workload: clients read, write and CAS a few keys
// through different agents and record every operation.
type Register struct {
	Prefix string
	Keys   int
	Clock  *Clock
	Ops    Log[KVOp]
	// Think is the longest pause between two operations of a client.
	Think time.Duration
	// Datacenter, when set, is the datacenter the register lives in:
	// every client sends its requests with ?dc=, so that agents of other
	// datacenters reach it through the WAN.
	Datacenter string
	// ValueBase is added to every value written, so that registers of
	// different datacenters never write the same value.
	ValueBase int

	procs  atomic.Int64
	values atomic.Int64
}

// Key returns the name of register i.
func (r *Register) Key(i int) string { return fmt.Sprintf("%s/r%d", r.Prefix, i) }

// Run runs one client per spec until ctx ends, and waits for them.
func (r *Register) Run(ctx context.Context, specs []ClientSpec, seed uint64) {
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(ctx, spec, rand.New(rand.NewPCG(seed, uint64(i))))
		}()
	}
	wg.Wait()
}

func (r *Register) newProcess() int { return int(r.procs.Add(1) - 1) }

func (r *Register) client(ctx context.Context, spec ClientSpec, rng *rand.Rand) {
	cl := apiClientDC(spec.Agent, opTimeout, r.Datacenter)
	proc := r.newProcess()
	m := spec.Mix
	total := m.Consistent + m.Default + m.Stale + m.Write + m.CAS
	for ctx.Err() == nil {
		key := r.Key(rng.IntN(r.Keys))
		var res Result
		switch n := rng.IntN(total); {
		case n < m.Consistent:
			res, _ = r.read(ctx, cl, proc, spec.Agent, key, Consistent)
		case n < m.Consistent+m.Default:
			res, _ = r.read(ctx, cl, proc, spec.Agent, key, Default)
		case n < m.Consistent+m.Default+m.Stale:
			res, _ = r.read(ctx, cl, proc, spec.Agent, key, Stale)
		case n < total-m.CAS:
			res = r.write(ctx, cl, proc, spec.Agent, key)
		default:
			res = r.cas(ctx, cl, proc, spec.Agent, key)
		}
		if res == Info {
			// A process with an operation of unknown outcome may never
			// issue another one (porcupine, like Knossos, needs one
			// pending operation per process): continue as a new one.
			proc = r.newProcess()
		}
		if r.Think > 0 {
			clock.Sleep(ctx, time.Duration(rng.Int64N(int64(r.Think))))
		}
	}
}

// read records a read; a read that failed in any way had no effect, so it is
// recorded as Fail and left out of the checks.
func (r *Register) read(ctx context.Context, cl *api.Client, proc int, a *Agent, key string, mode ReadMode) (Result, KVOp) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	q := &api.QueryOptions{RequireConsistent: mode == Consistent, AllowStale: mode == Stale}
	op := KVOp{Process: proc, Agent: a.Name, Kind: ReadOp, Mode: mode, Key: key, Call: r.Clock.Now()}
	p, meta, err := cl.KV().Get(key, q.WithContext(ctx))
	op.Return = r.Clock.Now()
	op.Result = OK
	if meta != nil {
		op.LastContact, op.KnownLeader = meta.LastContact, meta.KnownLeader
	}
	switch {
	case err != nil:
		op.Result, op.Error = Fail, err.Error()
	case p != nil:
		v, perr := strconv.Atoi(string(p.Value))
		if perr != nil {
			op.Result, op.Error = Fail, fmt.Sprintf("unexpected value %q", p.Value)
		}
		op.Value, op.Index = v, p.ModifyIndex
	}
	r.Ops.Add(op)
	return op.Result, op
}

func (r *Register) write(ctx context.Context, cl *api.Client, proc int, a *Agent, key string) Result {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	v := r.ValueBase + int(r.values.Add(1))
	op := KVOp{Process: proc, Agent: a.Name, Kind: WriteOp, Key: key, Value: v, Call: r.Clock.Now()}
	_, err := cl.KV().Put(&api.KVPair{Key: key, Value: []byte(strconv.Itoa(v))}, (&api.WriteOptions{}).WithContext(ctx))
	op.Return = r.Clock.Now()
	op.Result = classify(err)
	if err != nil {
		op.Error = err.Error()
	}
	r.Ops.Add(op)
	return op.Result
}

// cas reads the key (?consistent, recorded as a read) and swaps the value it
// read for a new one with ?cas=<ModifyIndex>. Values are unique, so
// "ModifyIndex unchanged" is "value unchanged": a compare-and-set on values.
func (r *Register) cas(ctx context.Context, cl *api.Client, proc int, a *Agent, key string) Result {
	res, read := r.read(ctx, cl, proc, a, key, Consistent)
	if res != OK {
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	v := r.ValueBase + int(r.values.Add(1))
	op := KVOp{Process: proc, Agent: a.Name, Kind: CASOp, Key: key, Value: v, Expect: read.Value, Index: read.Index, Call: r.Clock.Now()}
	ok, _, err := cl.KV().CAS(&api.KVPair{Key: key, Value: []byte(strconv.Itoa(v)), ModifyIndex: read.Index}, (&api.WriteOptions{}).WithContext(ctx))
	op.Return = r.Clock.Now()
	op.Result, op.Swapped = classify(err), ok
	if err != nil {
		op.Error = err.Error()
	}
	r.Ops.Add(op)
	return op.Result
}
