package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/clock"
)

// FaultKind names a fault the nemesis injects.
type FaultKind string

// Faults.
const (
	// PartitionMajority splits the servers into a majority and a minority
	// (the leader may be on either side); each client agent joins a side.
	PartitionMajority FaultKind = "partition-majority"
	// PartitionLeader isolates the leader from every other agent except,
	// maybe, a client agent.
	PartitionLeader FaultKind = "partition-leader"
	// PartitionBridge cuts two servers apart while a third sees both.
	PartitionBridge FaultKind = "partition-bridge"
	// PartitionOneWay drops the leader's packets to the followers, or the
	// followers' packets to the leader, in one direction only.
	PartitionOneWay FaultKind = "partition-oneway"
	// KillLeader SIGKILLs the leader and restarts it with its data.
	KillLeader FaultKind = "kill-leader"
	// KillFollower SIGKILLs a follower and restarts it with its data.
	KillFollower FaultKind = "kill-follower"
	// PauseLeader SIGSTOPs the leader for longer than the election
	// timeout, then SIGCONTs it.
	PauseLeader FaultKind = "pause-leader"
	// RollingRestart restarts every server in turn (SIGTERM), waiting for
	// the cluster to be healthy between two.
	RollingRestart FaultKind = "rolling-restart"
	// WipeServer SIGKILLs a server, removes its data directory and starts
	// it again: it rejoins as a new node (new node ID, same address).
	WipeServer FaultKind = "wipe-server"
)

// AllFaults lists every fault kind.
var AllFaults = []FaultKind{PartitionMajority, PartitionLeader, PartitionBridge, PartitionOneWay,
	KillLeader, KillFollower, PauseLeader, RollingRestart, WipeServer}

var partitionFaults = []FaultKind{PartitionMajority, PartitionLeader, PartitionBridge, PartitionOneWay}

// Step is one scheduled fault: wait Quiet, inject Kind, hold it for Hold,
// heal it and wait for the cluster to be healthy.
type Step struct {
	Kind  FaultKind
	Quiet time.Duration
	Hold  time.Duration
	// Pick drives the choices the fault makes when it runs (which
	// follower, which side each client agent is on), so that a seed
	// replays the same schedule.
	Pick uint64
}

// ShortSchedule is the short run's schedule: one partition (its kind drawn
// from rng), one leader kill and one leader pause.
func ShortSchedule(rng *rand.Rand) []Step {
	kinds := []FaultKind{partitionFaults[rng.IntN(len(partitionFaults))], KillLeader, PauseLeader}
	holds := []time.Duration{8 * time.Second, 4 * time.Second, 4 * time.Second}
	steps := make([]Step, len(kinds))
	for i, k := range kinds {
		steps[i] = Step{Kind: k, Quiet: 3 * time.Second, Hold: holds[i], Pick: rng.Uint64()}
	}
	return steps
}

// RandomSchedule draws faults from kinds until their quiet and hold times
// add up to d.
func RandomSchedule(rng *rand.Rand, kinds []FaultKind, d time.Duration) []Step {
	var steps []Step
	for total := time.Duration(0); total < d; {
		s := Step{
			Kind:  kinds[rng.IntN(len(kinds))],
			Quiet: time.Duration(2+rng.IntN(4)) * time.Second,
			Hold:  time.Duration(2+rng.IntN(9)) * time.Second,
			Pick:  rng.Uint64(),
		}
		steps = append(steps, s)
		total += s.Quiet + s.Hold
	}
	return steps
}

// Event is one fault the nemesis injected.
type Event struct {
	Kind   FaultKind `json:"kind"`
	Detail string    `json:"detail"`
	Start  int64     `json:"start"`
	End    int64     `json:"end"`
	// Healthy is when the cluster was healthy again after the heal (0:
	// not within the wait).
	Healthy int64  `json:"healthy,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Nemesis injects scheduled faults into a cluster.
type Nemesis struct {
	C      *Cluster
	Clock  *Clock
	Logf   func(format string, args ...any)
	Events Log[Event]
	// Inject and Healthy, when set, replace the single cluster's faults
	// and health wait: a federation brings its own (C then holds every
	// agent of every datacenter, for HealAll).
	Inject  func(ctx context.Context, s Step) (heal func() error, detail string, err error)
	Healthy func(ctx context.Context) error
}

// healthyWait bounds the wait for a healthy cluster after each fault.
const healthyWait = 60 * time.Second

// Run runs steps in order until they are done or ctx ends, healing each
// fault before the next one. It always leaves the cluster healed: no cut,
// nothing paused, every agent running.
func (n *Nemesis) Run(ctx context.Context, steps []Step) {
	defer n.HealAll()
	inject, healthy := n.inject, n.C.WaitHealthy
	if n.Inject != nil {
		inject = n.Inject
	}
	if n.Healthy != nil {
		healthy = n.Healthy
	}
	for _, s := range steps {
		clock.Sleep(ctx, s.Quiet)
		if ctx.Err() != nil {
			return
		}
		ev := Event{Kind: s.Kind, Start: n.Clock.Now()}
		heal, detail, err := inject(ctx, s)
		ev.Detail = detail
		n.Logf("nemesis: %s %s", s.Kind, detail)
		if err == nil && heal != nil {
			clock.Sleep(ctx, s.Hold)
			err = heal()
		}
		ev.End = n.Clock.Now()
		hctx, cancel := context.WithTimeout(context.Background(), healthyWait)
		if herr := healthy(hctx); herr != nil {
			err = errors.Join(err, herr)
		} else {
			ev.Healthy = n.Clock.Now()
		}
		cancel()
		if err != nil {
			ev.Error = err.Error()
			n.Logf("nemesis: %s: %v", s.Kind, err)
		}
		n.Events.Add(ev)
	}
}

// inject starts a fault and returns what heals it (nil for faults that
// complete by themselves) and a description.
func (n *Nemesis) inject(ctx context.Context, s Step) (func() error, string, error) {
	c := n.C
	rng := rand.New(rand.NewPCG(s.Pick, 0))
	healNet := func() error { return c.Net.Heal() }
	switch s.Kind {
	case PartitionMajority:
		servers := shuffled(rng, c.Servers)
		minority, majority := append([]*Agent{}, servers[:len(servers)/2]...), append([]*Agent{}, servers[len(servers)/2:]...)
		for _, a := range c.Clients {
			if rng.IntN(2) == 0 {
				minority = append(minority, a)
			} else {
				majority = append(majority, a)
			}
		}
		return healNet, fmt.Sprintf("%s | %s", names(minority), names(majority)), c.Net.Partition(minority, majority)
	case PartitionLeader:
		leader, err := n.leader(ctx, rng)
		if err != nil {
			return nil, "", err
		}
		alone, rest := []*Agent{leader}, others(c.Servers, leader)
		for _, a := range c.Clients {
			if rng.IntN(3) == 0 {
				alone = append(alone, a)
			} else {
				rest = append(rest, a)
			}
		}
		return healNet, fmt.Sprintf("%s | %s", names(alone), names(rest)), c.Net.Partition(alone, rest)
	case PartitionBridge:
		servers := shuffled(rng, c.Servers)
		left, bridge, right := []*Agent{servers[0]}, servers[1], servers[2:]
		for _, a := range c.Clients {
			if rng.IntN(2) == 0 {
				left = append(left, a)
			} else {
				right = append(right, a)
			}
		}
		return healNet, fmt.Sprintf("%s | %s | bridge %s", names(left), names(right), bridge.Name), c.Net.Partition(left, right)
	case PartitionOneWay:
		leader, err := n.leader(ctx, rng)
		if err != nil {
			return nil, "", err
		}
		mute := rng.IntN(2) == 0
		for _, f := range others(c.Servers, leader) {
			from, to := f, leader
			if mute {
				from, to = leader, f
			}
			if err := c.Net.Drop(from, to); err != nil {
				return healNet, "", err
			}
		}
		return healNet, c.Net.String(), nil
	case KillLeader, KillFollower:
		target, err := n.leader(ctx, rng)
		if err != nil {
			return nil, "", err
		}
		if s.Kind == KillFollower {
			f := others(c.Servers, target)
			target = f[rng.IntN(len(f))]
		}
		target.Kill()
		return target.Launch, target.Name, nil
	case PauseLeader:
		leader, err := n.leader(ctx, rng)
		if err != nil {
			return nil, "", err
		}
		return leader.Resume, leader.Name, leader.Pause()
	case RollingRestart:
		return nil, names(c.Servers), n.rollingRestart(ctx)
	case WipeServer:
		target := c.Servers[rng.IntN(len(c.Servers))]
		target.Kill()
		if err := target.Wipe(); err != nil {
			return target.Launch, target.Name, err
		}
		return target.Launch, target.Name, nil
	}
	return nil, "", fmt.Errorf("unknown fault %q", s.Kind)
}

// leader finds the leader, or a random server when none is known in time.
func (n *Nemesis) leader(ctx context.Context, rng *rand.Rand) (*Agent, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := n.C.Leader(lctx)
	if err == nil {
		return l, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	n.Logf("nemesis: no leader known, picking a random server")
	return n.C.Servers[rng.IntN(len(n.C.Servers))], nil
}

func (n *Nemesis) rollingRestart(ctx context.Context) error {
	for _, s := range n.C.Servers {
		s.Stop(10 * time.Second)
		if err := s.Launch(); err != nil {
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, healthyWait)
		err := n.C.WaitHealthy(hctx)
		cancel()
		if err != nil {
			return fmt.Errorf("after restarting %s: %w", s.Name, err)
		}
	}
	return nil
}

// HealAll removes every cut, resumes paused agents and starts every agent
// that is not running, noting the ones that exited by themselves.
func (n *Nemesis) HealAll() {
	var errs []error
	if err := n.C.Net.Heal(); err != nil {
		errs = append(errs, err)
	}
	for _, a := range n.C.All() {
		if err := a.Resume(); err != nil {
			errs = append(errs, err)
		}
		if !a.Running() {
			if err := a.Launch(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		n.Logf("nemesis: heal: %v", err)
	}
}

func shuffled(rng *rand.Rand, in []*Agent) []*Agent {
	out := append([]*Agent{}, in...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// others returns the agents of in that are not in not.
func others(in []*Agent, not ...*Agent) []*Agent {
	var out []*Agent
	for _, a := range in {
		if !slices.Contains(not, a) {
			out = append(out, a)
		}
	}
	return out
}

func names(in []*Agent) string {
	s := make([]string, len(in))
	for i, a := range in {
		s[i] = a.Name
	}
	return strings.Join(s, ",")
}
