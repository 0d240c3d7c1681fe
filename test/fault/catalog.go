package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/test/wait"
)

// Registration is one catalog registration of the catalog workload.
type Registration struct {
	Node   string `json:"node"`
	Agent  string `json:"agent"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Result Result `json:"result"`
	Error  string `json:"error,omitempty"`
}

// CatalogWorkload registers external nodes, each with one instance of
// Service, through random agents (api.Catalog().Register).
type CatalogWorkload struct {
	Service string
	Clock   *Clock
	Regs    Log[Registration]

	seq atomic.Int64
}

// Run registers until ctx ends.
func (w *CatalogWorkload) Run(ctx context.Context, agents []*Agent, seed uint64) {
	onRandomAgents(ctx, agents, rand.New(rand.NewPCG(seed, 200)), 50*time.Millisecond, w.register)
}

// onRandomAgents calls op through a randomly chosen agent, pausing between
// pause and twice pause, until ctx ends.
func onRandomAgents(ctx context.Context, agents []*Agent, rng *rand.Rand, pause time.Duration, op func(context.Context, *api.Client, *Agent)) {
	clients := make([]*api.Client, len(agents))
	for i, a := range agents {
		clients[i] = APIClient(a, opTimeout)
	}
	for ctx.Err() == nil {
		i := rng.IntN(len(agents))
		op(ctx, clients[i], agents[i])
		clock.Sleep(ctx, pause+time.Duration(rng.Int64N(int64(pause))))
	}
}

func (w *CatalogWorkload) register(ctx context.Context, cl *api.Client, a *Agent) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	n := w.seq.Add(1)
	node := fmt.Sprintf("%s-n%d", w.Service, n)
	r := Registration{Node: node, Agent: a.Name, Call: w.Clock.Now()}
	_, err := cl.Catalog().Register(&api.CatalogRegistration{
		Node: node, Address: "127.0.0.250",
		Service: &api.AgentService{ID: w.Service, Service: w.Service, Port: int(20000 + n%10000)},
	}, (&api.WriteOptions{}).WithContext(ctx))
	r.Return = w.Clock.Now()
	r.Result = classify(err)
	if err != nil {
		r.Error = err.Error()
	}
	w.Regs.Add(r)
}

// CatalogVerdict is the catalog checker's verdict.
type CatalogVerdict struct {
	Valid bool
	// Acked is how many registrations were acknowledged.
	Acked int
	// Missing lists, per server, the acknowledged nodes it never showed.
	Missing map[string][]string
}

// CheckCatalog waits up to within for every acknowledged registration to be
// visible on every server (?stale, so each server answers from its own
// state).
func CheckCatalog(ctx context.Context, c *Cluster, service string, regs []Registration, within time.Duration) CatalogVerdict {
	v := CatalogVerdict{Valid: true, Missing: map[string][]string{}}
	want := map[string]bool{}
	for _, r := range regs {
		if r.Result == OK {
			want[r.Node] = true
		}
	}
	v.Acked = len(want)
	// The verdict is the last look's, whether or not it converged.
	_ = wait.Until(ctx, within, func() error {
		v.Valid, v.Missing = true, map[string][]string{}
		for _, s := range c.Servers {
			if missing := catalogMissing(ctx, s, service, want); len(missing) > 0 {
				v.Valid = false
				v.Missing[s.Name] = missing
			}
		}
		if !v.Valid {
			return fmt.Errorf("missing %v", v.Missing)
		}
		return nil
	})
	return v
}

func catalogMissing(ctx context.Context, s *Agent, service string, want map[string]bool) []string {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, _, err := s.ctl.Catalog().Service(service, "", (&api.QueryOptions{AllowStale: true}).WithContext(qctx))
	seen := map[string]bool{}
	if err == nil {
		for _, e := range got {
			seen[e.Node] = true
		}
	}
	var missing []string
	for n := range want {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	return missing
}
