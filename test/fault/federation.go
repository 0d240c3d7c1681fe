package fault

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/wait"
)

// Two federated datacenters in one namespace. dc1 (the primary) has its
// servers at 127.0.0.11-13 and clients at .21-22, dc2 (a secondary) its
// servers at .31-33 and clients at .41-42. ACLs are on everywhere
// (default deny) with token replication: dc1's servers bootstrap the
// management token, dc2 replicates it and reads the primary with a token of
// its own that holds only what replication needs.
const (
	primaryDC      = "dc1"
	secondaryDC    = "dc2"
	dc2ServerOctet = 30
	dc2ClientOctet = 40
	serfWANPort    = 8302
)

// replicationRules are the replication token's rules: reading everything
// replicated and writing nothing else.
const replicationRules = `acl = "write"
operator = "write"
service_prefix "" { policy = "read" intentions = "read" }`

// Federation fault kinds. A WAN partition cuts every link between the two
// datacenters' agents: the only traffic between them is the WAN gossip
// (8302) and the server RPC (8300), so cutting by address cuts exactly
// those ports, both ways.
const (
	// WANPartition cuts dc1 from dc2.
	WANPartition FaultKind = "wan-partition"
	// PartitionPrimaryLeader isolates dc1's leader from every other agent
	// of both datacenters.
	PartitionPrimaryLeader FaultKind = "partition-primary-leader"
	// KillPrimaryLeader and KillSecondaryLeader SIGKILL a datacenter's
	// leader (while replication runs) and restart it with its data.
	KillPrimaryLeader   FaultKind = "kill-primary-leader"
	KillSecondaryLeader FaultKind = "kill-secondary-leader"
	// PausePrimaryLeader and PauseSecondaryLeader SIGSTOP a datacenter's
	// leader for the hold, then SIGCONT it.
	PausePrimaryLeader   FaultKind = "pause-primary-leader"
	PauseSecondaryLeader FaultKind = "pause-secondary-leader"
)

// FederationFaults lists every federation fault kind.
var FederationFaults = []FaultKind{WANPartition, PartitionPrimaryLeader, KillPrimaryLeader, KillSecondaryLeader,
	PausePrimaryLeader, PauseSecondaryLeader}

// FederationShortSchedule is the short multi-DC schedule: a WAN partition,
// a partition of the primary's leader, a leader kill and a leader pause,
// each in a datacenter drawn from rng.
func FederationShortSchedule(rng *mrand.Rand) []Step {
	kill := []FaultKind{KillPrimaryLeader, KillSecondaryLeader}[rng.IntN(2)]
	pause := []FaultKind{PausePrimaryLeader, PauseSecondaryLeader}[rng.IntN(2)]
	kinds := []FaultKind{WANPartition, PartitionPrimaryLeader, kill, pause}
	holds := []time.Duration{8 * time.Second, 5 * time.Second, 3 * time.Second, 4 * time.Second}
	steps := make([]Step, len(kinds))
	for i, k := range kinds {
		steps[i] = Step{Kind: k, Quiet: 2 * time.Second, Hold: holds[i], Pick: rng.Uint64()}
	}
	return steps
}

// Window is a span of run time (ns, the run's Clock) during which a fault
// held for certain: From is taken after the fault was in place, To before
// it was healed.
type Window struct {
	Kind FaultKind `json:"kind"`
	From int64     `json:"from"`
	To   int64     `json:"to"`
}

// Federation is two datacenters that share one namespace and network.
type Federation struct {
	DC1, DC2 *Cluster
	Net      *Network
	Clock    *Clock
	// Token is the management token every harness client sends;
	// ReplicationToken is dc2's acl.tokens.replication.
	Token, ReplicationToken string
	// Cuts are the WAN partitions' windows.
	Cuts Log[Window]

	// cross[i] reads datacenter i+1 through the other one (?dc=).
	cross [2]*api.Client
}

// NewFederation lays out both datacenters in dir. It starts nothing.
func NewFederation(env *Env, dir string, logLevel string, clock *Clock) (*Federation, error) {
	f := &Federation{Net: &Network{}, Clock: clock, Token: newUUID(), ReplicationToken: newUUID()}
	if err := f.Net.Init(); err != nil {
		return nil, err
	}
	aclHCL := func(tokens string) string {
		return fmt.Sprintf("acl {\n enabled = true\n default_policy = \"deny\"\n enable_token_replication = true\n tokens {\n%s\n }\n}", tokens)
	}
	common := []string{"-primary-datacenter", primaryDC}
	wanJoins := func(octet int) []string {
		var args []string
		for i := 1; i <= 3; i++ {
			args = append(args, "-retry-join-wan", fmt.Sprintf("127.0.0.%d:%d", octet+i, serfWANPort))
		}
		return args
	}
	var err error
	f.DC1, err = NewCluster(env, filepath.Join(dir, primaryDC), ClusterOptions{Servers: 3, Clients: 1, LogLevel: logLevel,
		Prefix: primaryDC + "-", Token: f.Token, Net: f.Net,
		Args: append(append([]string{}, common...), "-datacenter", primaryDC,
			"-hcl", aclHCL(fmt.Sprintf("initial_management = %q\nagent = %q", f.Token, f.Token))),
		ServerArgs: wanJoins(dc2ServerOctet)})
	if err != nil {
		return nil, err
	}
	f.DC2, err = NewCluster(env, filepath.Join(dir, secondaryDC), ClusterOptions{Servers: 3, Clients: 1, LogLevel: logLevel,
		Prefix: secondaryDC + "-", Token: f.Token, Net: f.Net, ServerOctet: dc2ServerOctet, ClientOctet: dc2ClientOctet,
		Args: append(append([]string{}, common...), "-datacenter", secondaryDC,
			"-hcl", aclHCL(fmt.Sprintf("agent = %q\nreplication = %q", f.Token, f.ReplicationToken))),
		ServerArgs: wanJoins(serverOctet)})
	if err != nil {
		return nil, err
	}
	f.cross[0] = apiClientDC(f.DC2.Clients[0], 5*time.Second, primaryDC)
	f.cross[1] = apiClientDC(f.DC1.Clients[0], 5*time.Second, secondaryDC)
	return f, nil
}

// newUUID returns a random UUID (a token secret).
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// All returns every agent: dc1's, then dc2's.
func (f *Federation) All() []*Agent { return append(f.DC1.All(), f.DC2.All()...) }

// Combined is one Cluster value holding every agent and the shared
// network, for the Nemesis's HealAll.
func (f *Federation) Combined() *Cluster {
	return &Cluster{Servers: append(append([]*Agent{}, f.DC1.Servers...), f.DC2.Servers...),
		Clients: append(append([]*Agent{}, f.DC1.Clients...), f.DC2.Clients...), Net: f.Net}
}

// DC returns the cluster of datacenter dc.
func (f *Federation) DC(dc string) *Cluster {
	if dc == primaryDC {
		return f.DC1
	}
	return f.DC2
}

// Close kills every agent.
func (f *Federation) Close() {
	f.DC1.Close()
	f.DC2.Close()
}

// Start starts every agent, waits for dc1, gives dc2 its replication
// token (created in dc1, the only writer of tokens) and waits until the
// federation is healthy.
func (f *Federation) Start(ctx context.Context) error {
	for _, a := range f.All() {
		if err := a.Launch(); err != nil {
			return err
		}
	}
	if err := f.DC1.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("%s: %w", primaryDC, err)
	}
	err := wait.Until(ctx, maxWait, func() error { return f.createReplicationToken(ctx) })
	if err != nil {
		return fmt.Errorf("replication token: %w", err)
	}
	return f.WaitHealthy(ctx)
}

func (f *Federation) createReplicationToken(ctx context.Context) error {
	cl := f.DC1.Servers[0].ctl
	wo := (&api.WriteOptions{}).WithContext(ctx)
	q := (&api.QueryOptions{}).WithContext(ctx)
	pol, _, err := cl.ACL().PolicyReadByName("jepsen-replication", q)
	if err != nil {
		return err
	}
	if pol == nil {
		if pol, _, err = cl.ACL().PolicyCreate(&api.ACLPolicy{Name: "jepsen-replication", Rules: replicationRules}, wo); err != nil {
			return err
		}
	}
	if tok, _, err := cl.ACL().TokenReadSelf((&api.QueryOptions{Token: f.ReplicationToken}).WithContext(ctx)); err == nil && tok != nil {
		return nil
	}
	_, _, err = cl.ACL().TokenCreate(&api.ACLToken{SecretID: f.ReplicationToken, Description: "jepsen replication",
		Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, wo)
	return err
}

// WaitHealthy waits until both datacenters are healthy, each reaches the
// other (?dc= reads both ways) and dc2's replication is running.
func (f *Federation) WaitHealthy(ctx context.Context) error {
	for _, c := range []*Cluster{f.DC1, f.DC2} {
		if err := c.WaitHealthy(ctx); err != nil {
			return err
		}
	}
	err := wait.Until(ctx, maxWait, func() error {
		for i, cl := range f.cross {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _, err := cl.KV().Get("jepsen-health", (&api.QueryOptions{}).WithContext(qctx))
			cancel()
			if err != nil {
				return fmt.Errorf("?dc=dc%d: %w", i+1, err)
			}
		}
		var st api.ACLReplicationStatus
		if err := getJSON(ctx, f.DC2.Clients[0], "/v1/acl/replication", &st); err != nil {
			return fmt.Errorf("dc2 replication status: %w", err)
		}
		if !st.Running || st.ReplicatedTokenIndex == 0 {
			return fmt.Errorf("dc2 replication not running: %+v", st)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("federation not healthy: %w", err)
	}
	return nil
}

// Inject starts one federation fault (the Nemesis's Inject).
func (f *Federation) Inject(ctx context.Context, s Step) (func() error, string, error) {
	rng := mrand.New(mrand.NewPCG(s.Pick, 0))
	switch s.Kind {
	case WANPartition:
		if err := f.Net.Partition(f.DC1.All(), f.DC2.All()); err != nil {
			return f.Net.Heal, "", err
		}
		from := f.Clock.Now()
		return func() error {
			f.Cuts.Add(Window{Kind: s.Kind, From: from, To: f.Clock.Now()})
			return f.Net.Heal()
		}, names(f.DC1.All()) + " | " + names(f.DC2.All()), nil
	case PartitionPrimaryLeader:
		leader, err := f.leader(ctx, f.DC1, rng)
		if err != nil {
			return nil, "", err
		}
		rest := others(f.All(), leader)
		return f.Net.Heal, leader.Name + " | " + names(rest), f.Net.Partition([]*Agent{leader}, rest)
	case KillPrimaryLeader, KillSecondaryLeader, PausePrimaryLeader, PauseSecondaryLeader:
		c := f.DC1
		if s.Kind == KillSecondaryLeader || s.Kind == PauseSecondaryLeader {
			c = f.DC2
		}
		leader, err := f.leader(ctx, c, rng)
		if err != nil {
			return nil, "", err
		}
		if s.Kind == PausePrimaryLeader || s.Kind == PauseSecondaryLeader {
			return leader.Resume, leader.Name, leader.Pause()
		}
		leader.Kill()
		return leader.Launch, leader.Name, nil
	}
	return nil, "", fmt.Errorf("unknown federation fault %q", s.Kind)
}

// leader finds c's leader, or a random server of c when none is known in
// time.
func (f *Federation) leader(ctx context.Context, c *Cluster, rng *mrand.Rand) (*Agent, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := c.Leader(lctx)
	if err == nil {
		return l, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return c.Servers[rng.IntN(len(c.Servers))], nil
}

// inWindow reports whether [call, ret] lies inside one of the windows.
func inWindow(ws []Window, call, ret int64) bool {
	for _, w := range ws {
		if call >= w.From && ret <= w.To {
			return true
		}
	}
	return false
}

// isTimeout reports whether a request's error is the client giving up
// (the server never answered), not an answer.
func isTimeout(errText string) bool {
	if strings.Contains(errText, "Unexpected response code") {
		// An answer, whatever its text says about the server's own
		// attempts.
		return false
	}
	return strings.Contains(errText, "Client.Timeout") || strings.Contains(errText, "context deadline exceeded")
}
