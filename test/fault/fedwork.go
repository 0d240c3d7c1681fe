package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/tribune-mesh/tribune/clock"
)

// The federation workloads. Global state (ACL policies, service-defaults
// and service-intentions config entries) has one writer process: it
// updates a few objects through agents of dc1 and, forwarded, through
// agents of dc2, each write with a new version (a number, unique in the
// run) in the object's content. Readers list the objects in both
// datacenters and record every version they see.

// Global object kinds.
const (
	objPolicy     = "policy"
	objDefaults   = api.ServiceDefaults
	objIntentions = api.ServiceIntentions
)

// GlobalWrite is one write of a global object.
type GlobalWrite struct {
	// Object is "<kind>/<name>".
	Object  string `json:"object"`
	Version string `json:"version"`
	// Via is the datacenter of the agent the write went through.
	Via    string `json:"via"`
	Agent  string `json:"agent"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Result Result `json:"result"`
	Error  string `json:"error,omitempty"`
}

// GlobalRead is one object as one read of a datacenter saw it.
type GlobalRead struct {
	Object string `json:"object"`
	// Version is the version seen, "" when the object was absent.
	Version string `json:"version"`
	// DC is the datacenter read; Index the object's ModifyIndex there.
	DC     string   `json:"dc"`
	Agent  string   `json:"agent"`
	Mode   ReadMode `json:"mode"`
	Index  uint64   `json:"index"`
	Call   int64    `json:"call"`
	Return int64    `json:"return"`
	// Check, on the writer's ?consistent reads of dc1 right after a
	// write through dc2 (or of unknown outcome), names that write's
	// version.
	Check string `json:"check,omitempty"`
}

// GlobalWorkload is the one writer of global state and its readers.
type GlobalWorkload struct {
	// Prefix names the objects (<prefix>-<i>); Objects is how many of
	// each kind.
	Prefix  string
	Objects int
	Clock   *Clock
	Writes  Log[GlobalWrite]
	Reads   Log[GlobalRead]

	seq atomic.Int64
	// policyIDs[i] is the ID of policy i, set by Setup.
	policyIDs []string
}

func (w *GlobalWorkload) name(i int) string { return fmt.Sprintf("%s-%d", w.Prefix, i) }

// objects lists every object "<kind>/<name>".
func (w *GlobalWorkload) objects() []string {
	var out []string
	for _, k := range []string{objPolicy, objDefaults, objIntentions} {
		for i := 0; i < w.Objects; i++ {
			out = append(out, k+"/"+w.name(i))
		}
	}
	return out
}

// Setup creates every object through dc1's first server (retrying until
// ctx ends), so that the writer only ever updates.
func (w *GlobalWorkload) Setup(ctx context.Context, f *Federation) error {
	a := f.DC1.Servers[0]
	cl := APIClient(a, opTimeout)
	w.policyIDs = make([]string, w.Objects)
	for i := 0; i < w.Objects; i++ {
		var pol *api.ACLPolicy
		err := untilOK(ctx, func() error {
			var err error
			pol, _, err = cl.ACL().PolicyReadByName(w.name(i), (&api.QueryOptions{}).WithContext(ctx))
			if err != nil || pol != nil {
				return err
			}
			op := GlobalWrite{Object: objPolicy + "/" + w.name(i), Version: strconv.FormatInt(w.seq.Add(1), 10),
				Via: primaryDC, Agent: a.Name, Call: w.Clock.Now()}
			pol, _, err = cl.ACL().PolicyCreate(&api.ACLPolicy{Name: w.name(i), Description: op.Version, Rules: w.rules(i)},
				(&api.WriteOptions{}).WithContext(ctx))
			op.Return, op.Result = w.Clock.Now(), classify(err)
			if err != nil {
				op.Error = err.Error()
			}
			w.Writes.Add(op)
			return err
		})
		if err != nil {
			return fmt.Errorf("create policy %s: %w", w.name(i), err)
		}
		w.policyIDs[i] = pol.ID
	}
	for _, obj := range w.objects() {
		err := untilOK(ctx, func() error {
			if res, _ := w.write(ctx, cl, a, primaryDC, obj); res != OK {
				return errors.New("not acknowledged")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("create %s: %w", obj, err)
		}
	}
	return nil
}

// untilOK calls op until it succeeds or ctx ends.
func untilOK(ctx context.Context, op func() error) error {
	for {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		clock.Sleep(ctx, 200*time.Millisecond)
	}
}

func (w *GlobalWorkload) rules(i int) string {
	return fmt.Sprintf("key_prefix %q { policy = \"read\" }", w.name(i)+"/")
}

// RunWriter writes until ctx ends: one process, one write at a time, a
// random object through a random agent of dc1 or (forwarded) of dc2.
func (w *GlobalWorkload) RunWriter(ctx context.Context, f *Federation, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 400))
	type via struct {
		a  *Agent
		dc string
		cl *api.Client
	}
	var vias []via
	for _, dc := range []string{primaryDC, secondaryDC} {
		for _, a := range f.DC(dc).All() {
			vias = append(vias, via{a, dc, APIClient(a, opTimeout)})
		}
	}
	objs := w.objects()
	for ctx.Err() == nil {
		v := vias[rng.IntN(len(vias))]
		obj := objs[rng.IntN(len(objs))]
		if res, ver := w.write(ctx, v.cl, v.a, v.dc, obj); res == Info || (res == OK && v.dc != primaryDC) {
			// Read dc1 before the next write can overwrite it: did the
			// primary commit it? A write acknowledged through dc2 must
			// be there (else dc2 wrote it itself), and an unknown one
			// may be, which dc2 may then show.
			p := vias[rng.IntN(len(f.DC1.All()))]
			w.checkRead(ctx, p.cl, p.a.Name, ver)
		}
		clock.Sleep(ctx, time.Duration(20+rng.IntN(30))*time.Millisecond)
	}
}

// checkRead reads every object in dc1 with ?consistent, retrying for a
// while (the primary may be between leaders), and records the reads as
// checks of write version ver.
func (w *GlobalWorkload) checkRead(ctx context.Context, cl *api.Client, agent, ver string) {
	for try := 0; try < 5 && ctx.Err() == nil; try++ {
		reads, err := w.readAll(ctx, cl, agent, primaryDC, Consistent)
		if err == nil {
			for _, r := range reads {
				r.Check = ver
				w.Reads.Add(r)
			}
			return
		}
		clock.Sleep(ctx, time.Second)
	}
}

// write writes a new version of obj through a (of datacenter dc) and
// returns the outcome and the version.
func (w *GlobalWorkload) write(ctx context.Context, cl *api.Client, a *Agent, dc, obj string) (Result, string) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ver := strconv.FormatInt(w.seq.Add(1), 10)
	kind, name, _ := strings.Cut(obj, "/")
	op := GlobalWrite{Object: obj, Version: ver, Via: dc, Agent: a.Name, Call: w.Clock.Now()}
	wo := (&api.WriteOptions{}).WithContext(ctx)
	var err error
	switch kind {
	case objPolicy:
		i, _ := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
		_, _, err = cl.ACL().PolicyUpdate(&api.ACLPolicy{ID: w.policyIDs[i], Name: name, Description: ver, Rules: w.rules(i)}, wo)
	case objDefaults:
		_, _, err = cl.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: kind, Name: name, Protocol: "tcp",
			Meta: map[string]string{"v": ver}}, wo)
	case objIntentions:
		_, _, err = cl.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: kind, Name: name,
			Sources: []*api.SourceIntention{{Name: w.Prefix + "-src", Action: api.IntentionActionAllow}},
			Meta:    map[string]string{"v": ver}}, wo)
	}
	op.Return, op.Result = w.Clock.Now(), classify(err)
	if err != nil {
		op.Error = err.Error()
	}
	w.Writes.Add(op)
	return op.Result, ver
}

// RunReader reads every object of datacenter dc through its agents
// (default and ?stale reads) until ctx ends, pausing up to pause between
// two reads.
func (w *GlobalWorkload) RunReader(ctx context.Context, c *Cluster, dc string, seed uint64, pause time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 500))
	agents := c.All()
	clients := make([]*api.Client, len(agents))
	for i, a := range agents {
		clients[i] = APIClient(a, opTimeout)
	}
	for ctx.Err() == nil {
		i := rng.IntN(len(agents))
		mode := []ReadMode{Default, Stale}[rng.IntN(2)]
		reads, _ := w.readAll(ctx, clients[i], agents[i].Name, dc, mode)
		for _, r := range reads {
			w.Reads.Add(r)
		}
		clock.Sleep(ctx, time.Duration(rng.Int64N(int64(pause))+1))
	}
}

// readAll lists the objects of every kind through cl, in one datacenter.
// It returns nothing when any list failed.
func (w *GlobalWorkload) readAll(ctx context.Context, cl *api.Client, agent, dc string, mode ReadMode) ([]GlobalRead, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	q := (&api.QueryOptions{AllowStale: mode == Stale, RequireConsistent: mode == Consistent}).WithContext(ctx)
	call := w.Clock.Now()
	seen := map[string]GlobalRead{}
	mk := func(obj, ver string, idx uint64) {
		seen[obj] = GlobalRead{Object: obj, Version: ver, DC: dc, Agent: agent, Mode: mode, Index: idx, Call: call}
	}
	pols, _, err := cl.ACL().PolicyList(q)
	if err != nil {
		return nil, err
	}
	for _, p := range pols {
		if strings.HasPrefix(p.Name, w.Prefix+"-") {
			mk(objPolicy+"/"+p.Name, p.Description, p.ModifyIndex)
		}
	}
	for _, kind := range []string{objDefaults, objIntentions} {
		entries, _, err := cl.ConfigEntries().List(kind, q)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.GetName(), w.Prefix+"-") {
				mk(kind+"/"+e.GetName(), e.GetMeta()["v"], e.GetModifyIndex())
			}
		}
	}
	ret := w.Clock.Now()
	var out []GlobalRead
	for _, obj := range w.objects() {
		r, ok := seen[obj]
		if !ok {
			r = GlobalRead{Object: obj, DC: dc, Agent: agent, Mode: mode, Call: call}
		}
		r.Return = ret
		out = append(out, r)
	}
	return out, nil
}

// FailoverExec is one execution of the failover prepared query in dc2.
type FailoverExec struct {
	Agent  string `json:"agent"`
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Result Result `json:"result"`
	Error  string `json:"error,omitempty"`
	// Datacenter and Failovers are the answer's.
	Datacenter string `json:"datacenter,omitempty"`
	Failovers  int    `json:"failovers,omitempty"`
	// Nodes are the answer's nodes, Versions their instances' "v" meta.
	Nodes    []string `json:"nodes,omitempty"`
	Versions []string `json:"versions,omitempty"`
}

// FailoverUpdate is one re-registration of dc1's instance with a new
// version.
type FailoverUpdate struct {
	Version string `json:"version"`
	Call    int64  `json:"call"`
	Return  int64  `json:"return"`
	Result  Result `json:"result"`
}

// FailoverWorkload runs a prepared query in dc2 whose service's only
// instance there is critical, so that every answer must fail over to dc1,
// while dc1's instance is re-registered with new versions.
type FailoverWorkload struct {
	Service string
	Clock   *Clock
	Execs   Log[FailoverExec]
	Updates Log[FailoverUpdate]

	queryID string
	seq     atomic.Int64
}

// node names the external node holding the service in datacenter dc.
func (w *FailoverWorkload) node(dc string) string { return w.Service + "-" + dc }

// Setup registers the instances (dc2's critical) and creates the query in
// dc2, failing over to dc1.
func (w *FailoverWorkload) Setup(ctx context.Context, f *Federation) error {
	cl2 := APIClient(f.DC2.Servers[0], opTimeout)
	err := untilOK(ctx, func() error {
		_, err := cl2.Catalog().Register(&api.CatalogRegistration{Node: w.node(secondaryDC), Address: "127.0.0.251",
			Service: &api.AgentService{ID: w.Service, Service: w.Service, Port: 9000, Meta: map[string]string{"dc": secondaryDC}},
			Check:   &api.AgentCheck{CheckID: w.Service + "-check", Name: "down", Status: api.HealthCritical, ServiceID: w.Service}},
			(&api.WriteOptions{}).WithContext(ctx))
		return err
	})
	if err != nil {
		return fmt.Errorf("register in %s: %w", secondaryDC, err)
	}
	cl1 := APIClient(f.DC1.Servers[0], opTimeout)
	if err := untilOK(ctx, func() error {
		if w.update(ctx, cl1) != OK {
			return errors.New("not acknowledged")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("register in %s: %w", primaryDC, err)
	}
	return untilOK(ctx, func() error {
		id, _, err := cl2.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: w.Service,
			Service: api.ServiceQuery{Service: w.Service, Failover: api.QueryFailoverOptions{Datacenters: []string{primaryDC}}}},
			(&api.WriteOptions{}).WithContext(ctx))
		w.queryID = id
		return err
	})
}

// update re-registers dc1's instance with a new version.
func (w *FailoverWorkload) update(ctx context.Context, cl *api.Client) Result {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	u := FailoverUpdate{Version: strconv.FormatInt(w.seq.Add(1), 10), Call: w.Clock.Now()}
	_, err := cl.Catalog().Register(&api.CatalogRegistration{Node: w.node(primaryDC), Address: "127.0.0.252",
		Service: &api.AgentService{ID: w.Service, Service: w.Service, Port: 9000, Meta: map[string]string{"dc": primaryDC, "v": u.Version}}},
		(&api.WriteOptions{}).WithContext(ctx))
	u.Return, u.Result = w.Clock.Now(), classify(err)
	w.Updates.Add(u)
	return u.Result
}

// RunUpdater re-registers dc1's instance through dc1's agents until ctx
// ends.
func (w *FailoverWorkload) RunUpdater(ctx context.Context, f *Federation, seed uint64) {
	onRandomAgents(ctx, f.DC1.All(), rand.New(rand.NewPCG(seed, 600)), 100*time.Millisecond,
		func(ctx context.Context, cl *api.Client, _ *Agent) { w.update(ctx, cl) })
}

// RunExecutor executes the query through dc2's agents until ctx ends.
func (w *FailoverWorkload) RunExecutor(ctx context.Context, f *Federation, seed uint64) {
	onRandomAgents(ctx, f.DC2.All(), rand.New(rand.NewPCG(seed, 700)), 50*time.Millisecond, w.execute)
}

func (w *FailoverWorkload) execute(ctx context.Context, cl *api.Client, a *Agent) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	e := FailoverExec{Agent: a.Name, Call: w.Clock.Now()}
	resp, _, err := cl.PreparedQuery().Execute(w.queryID, (&api.QueryOptions{}).WithContext(ctx))
	e.Return, e.Result = w.Clock.Now(), OK
	if err != nil {
		e.Result, e.Error = Fail, err.Error()
	} else {
		e.Datacenter, e.Failovers = resp.Datacenter, resp.Failovers
		for _, n := range resp.Nodes {
			e.Nodes = append(e.Nodes, n.Node.Node)
			e.Versions = append(e.Versions, n.Service.Meta["v"])
		}
	}
	w.Execs.Add(e)
}
