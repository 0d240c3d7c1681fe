package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// Backend is the part of the catalog that anti-entropy uses: the server when
// the agent is one, the RPC client to the servers otherwise.
// Implementations are safe for concurrent use and honour ctx.
type Backend interface {
	// Apply commits a write (here CmdRegister and CmdDeregister) and
	// returns the FSM's response: nil or an error for these commands.
	Apply(ctx context.Context, t catalog.CommandType, body any) (any, error)
	// Read runs a catalog read (here ReadNode and ReadNodeChecks, stale).
	Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
}

// Anti-entropy timing.
const (
	// fullSyncBase is the full-sync interval of a cluster of up to
	// fullSyncScaleAbove members.
	fullSyncBase       = time.Minute
	fullSyncScaleAbove = 128
	// retryWait is the pause after a failed sync.
	retryWait = time.Second
	// reapEvery is how often services whose check stayed critical are
	// looked for.
	reapEvery = time.Second
)

// FullSyncInterval is how long to wait between two full syncs in a cluster of
// members LAN members, jitter being a number in [0, 1). As Consul documents
// it: one minute up to 128 members, then one more minute each time the
// cluster doubles (2 min up to 256, 3 min up to 512, ...), so that the
// servers see about the same sync rate whatever the size. The jitter adds up
// to a quarter of the interval, so agents started together drift apart.
func FullSyncInterval(members int, jitter float64) time.Duration {
	base := fullSyncBase
	if members > fullSyncScaleAbove {
		steps := math.Ceil(math.Log2(float64(members)) - math.Log2(fullSyncScaleAbove))
		base = time.Duration(1+steps) * fullSyncBase
	}
	jitter = min(max(jitter, 0), 1)
	return base + time.Duration(jitter*float64(base/4))
}

func randFloat() float64 { return rand.Float64() }

// Run syncs the catalog with the local state until ctx ends: a full sync at
// once and then every FullSyncInterval, a partial sync after every local
// change. It then stops every check runner and TTL timer.
func (l *State) Run(ctx context.Context) {
	defer l.StopChecks()
	l.setRunning(true)
	defer l.setRunning(false)
	full := l.clock.NewTimer(0)
	defer full.Stop()
	reap := l.clock.NewTicker(reapEvery)
	defer reap.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case now := <-reap.C():
			l.reapCritical(now)
		case <-full.C():
			gen := l.generation()
			if err = l.syncFull(ctx); err == nil {
				l.synced(gen)
			}
			full.Reset(FullSyncInterval(l.members(), l.rand()))
		case <-l.triggerCh:
			gen := l.generation()
			if err = l.syncChanges(ctx); err == nil {
				l.synced(gen)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if aclRefused(err) {
				l.logACLRefusal(err)
			} else {
				l.logger.Warn("anti-entropy sync failed, retrying", "error", err, "in", retryWait)
			}
			select {
			case <-ctx.Done():
				return
			case <-l.clock.After(retryWait):
			}
			l.trigger()
		}
	}
}

// ErrNotSyncing is WaitSync's answer when Run is not running.
var ErrNotSyncing = errors.New("anti-entropy is not running")

// generation returns the count of changes made so far: a sync that starts
// after reading it covers all of them.
func (l *State) generation() uint64 {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.changeGen
}

func (l *State) setRunning(on bool) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.running = on
	if !on {
		// Wake waiters: nothing will sync any more.
		close(l.syncedCh)
		l.syncedCh = make(chan struct{})
	}
}

// synced records that a successful sync covered the changes up to gen and
// wakes WaitSync callers.
func (l *State) synced(gen uint64) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if gen <= l.syncedGen {
		return
	}
	l.syncedGen = gen
	close(l.syncedCh)
	l.syncedCh = make(chan struct{})
}

// WaitSync blocks until every local change made before the call has reached
// the catalog through a successful sync of Run, or ctx ends (its error is
// returned then), or Run is not running (ErrNotSyncing). It lets the HTTP API answer a registration once the
// catalog shows it; a sync that fails is still retried by Run after ctx
// ends.
func (l *State) WaitSync(ctx context.Context) error {
	l.syncMu.Lock()
	want := l.changeGen
	l.syncMu.Unlock()
	for {
		l.syncMu.Lock()
		done, running, ch := l.syncedGen >= want, l.running, l.syncedCh
		l.syncMu.Unlock()
		if done {
			return nil
		}
		if !running {
			return ErrNotSyncing
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for anti-entropy sync: %w", ctx.Err())
		case <-ch:
		}
	}
}

// syncFull marks every local entry out of sync when it differs from the
// catalog, removes what the agent no longer owns, then pushes the changes.
func (l *State) syncFull(ctx context.Context) error {
	node := l.node.Name
	resp, err := l.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNode, Name: node,
		Options: catalog.QueryOptions{AllowStale: true}})
	if err != nil {
		return fmt.Errorf("read node services: %w", err)
	}
	chk, err := l.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNodeChecks, Name: node,
		Options: catalog.QueryOptions{AllowStale: true}})
	if err != nil {
		return fmt.Errorf("read node checks: %w", err)
	}
	var remoteSvcs []*catalog.Service
	l.mu.Lock()
	if resp.NodeServices == nil {
		l.nodeInSync = false
	} else {
		n := resp.NodeServices.Node
		l.nodeInSync = n.Address == l.node.Address && mapsEqual(n.Meta, l.node.Meta) &&
			mapsEqual(n.TaggedAddresses, l.node.TaggedAddresses)
		remoteSvcs = resp.NodeServices.Services
	}
	remote := map[string]*catalog.Service{}
	for _, s := range remoteSvcs {
		remote[s.ID] = s
	}
	for id, ls := range l.services {
		ls.inSync = remote[id] != nil && serviceEqual(remote[id], ls.svc)
	}
	remoteChecks := map[string]*catalog.HealthCheck{}
	for _, c := range chk.Checks {
		remoteChecks[c.CheckID] = c
	}
	for id, lc := range l.checks {
		rc := remoteChecks[id]
		lc.inSync = rc != nil && rc.Status == lc.Health.Status && rc.Output == lc.Health.Output &&
			rc.Name == lc.Health.Name && rc.ServiceID == lc.Health.ServiceID
	}
	var extraSvcs, extraChecks []string
	for id := range remote {
		if id != "" && id == l.node.LeaderService {
			continue // registered by the leader for every server
		}
		if _, ok := l.services[id]; !ok {
			extraSvcs = append(extraSvcs, id)
		}
	}
	for id, rc := range remoteChecks {
		if _, ok := l.checks[id]; !ok && id != catalog.SerfCheckID && (rc.ServiceID == "" || l.services[rc.ServiceID] != nil) {
			extraChecks = append(extraChecks, id)
		}
	}
	l.mu.Unlock()
	// What the catalog has and the agent does not is deleted with the
	// agent's token: the agent knows no other for it.
	var rs []removal
	for _, id := range extraSvcs {
		rs = append(rs, removal{req: &catalog.DeregisterRequest{Node: node, ServiceID: id}, what: "service " + id})
	}
	for _, id := range extraChecks {
		rs = append(rs, removal{req: &catalog.DeregisterRequest{Node: node, CheckID: id}, what: "check " + id})
	}
	var refused []error
	if err := l.deregisterAll(ctx, rs); err != nil {
		if !aclRefused(err) {
			return err
		}
		refused = append(refused, err)
	}
	if err := l.syncChanges(ctx); err != nil {
		if !aclRefused(err) {
			return err
		}
		refused = append(refused, err)
	}
	return errors.Join(refused...)
}

// syncError is a sync write that failed, with what it wrote and the token
// it wrote with, so that a refusal by ACLs can name that token. Its text
// never holds the secret.
type syncError struct {
	// what is "node", "service <id>" or "check <id>".
	what string
	// service is the name of the service written, "" for the node.
	service string
	// token is the registration's own token; "" for the agent's.
	token string
	err   error
}

func (e *syncError) Error() string { return fmt.Sprintf("sync %s: %v", e.what, e.err) }

// Unwrap returns the Backend's error.
func (e *syncError) Unwrap() error { return e.err }

// tokenContext returns ctx carrying token for the Backend's calls; ctx as
// it is for "" (the Backend adds the agent's token) or with ACLs off.
func (l *State) tokenContext(ctx context.Context, token string) context.Context {
	if token == "" || l.withToken == nil {
		return ctx
	}
	return l.withToken(ctx, token)
}

// syncRemovals deregisters the services and checks removed locally since
// the last sync. An ID added again meanwhile is no longer marked and is left
// to the registrations.
func (l *State) syncRemovals(ctx context.Context) error {
	node := l.node.Name
	var rs []removal
	l.mu.Lock()
	for id, token := range l.removedServices {
		rs = append(rs, removal{req: &catalog.DeregisterRequest{Node: node, ServiceID: id}, token: token,
			what: "service " + id, done: func() {
				if l.services[id] == nil {
					delete(l.removedServices, id)
				}
			}})
	}
	for id, token := range l.removedChecks {
		rs = append(rs, removal{req: &catalog.DeregisterRequest{Node: node, CheckID: id}, token: token,
			what: "check " + id, done: func() {
				if l.checks[id] == nil {
					delete(l.removedChecks, id)
				}
			}})
	}
	l.mu.Unlock()
	return l.deregisterAll(ctx, rs)
}

// removal is one catalog delete of anti-entropy.
type removal struct {
	req *catalog.DeregisterRequest
	// token is the one to delete with, "" for the agent's.
	token string
	what  string
	// done, if set, runs under mu once the delete went through.
	done func()
}

// deregisterAll makes the deletes in order. A refusal by ACLs of one does
// not hold back the others: the refusals are returned at the end, joined;
// any other error stops at once.
func (l *State) deregisterAll(ctx context.Context, rs []removal) error {
	var refused []error
	for _, r := range rs {
		if err := l.deregister(ctx, r.req, r.token, r.what); err != nil {
			if !aclRefused(err) {
				return err
			}
			refused = append(refused, err)
			continue
		}
		if r.done != nil {
			l.mu.Lock()
			r.done()
			l.mu.Unlock()
		}
	}
	return errors.Join(refused...)
}

// deregister deletes what req names from the catalog with token ("" for
// the agent's); what names it for a refusal's log line.
func (l *State) deregister(ctx context.Context, req *catalog.DeregisterRequest, token, what string) error {
	resp, err := l.backend.Apply(l.tokenContext(ctx, token), catalog.CmdDeregister, req)
	if err == nil {
		if e, ok := resp.(error); ok && e != nil {
			err = e
		}
	}
	if err != nil {
		return &syncError{what: "deregistration of " + what, token: token, err: err}
	}
	return nil
}

// syncChanges deregisters what was removed locally, then pushes every
// out-of-sync entry: one registration for the node and its node checks
// synced with the agent's token, one per other token of node checks, and
// per service one for each token among the service's (its own) and its
// checks' (theirs, else the service's). A refusal by ACLs of one write does
// not hold back the others; all of them are returned at the end (joined).
func (l *State) syncChanges(ctx context.Context) error {
	var refused []error
	if err := l.syncRemovals(ctx); err != nil {
		if !aclRefused(err) {
			return err
		}
		refused = append(refused, err)
	}
	type marker struct {
		svc   *service
		check *Check
	}
	// write is one registration and the entries it carries.
	type write struct {
		req   *catalog.RegisterRequest
		marks []marker
		token string
		what  string
		// node is set on the registration of the node itself.
		node bool
	}
	l.mu.Lock()
	base := func() *catalog.RegisterRequest {
		return &catalog.RegisterRequest{ID: l.node.ID, Node: l.node.Name, Address: l.node.Address,
			Datacenter: l.node.Datacenter, NodeMeta: l.node.Meta, TaggedAddresses: l.node.TaggedAddresses}
	}
	var writes []*write
	nodeWrite := &write{req: base(), what: "node", node: true}
	nodeByToken := map[string]*write{}
	for _, lc := range l.checks {
		if lc.inSync || lc.Health.ServiceID != "" {
			continue
		}
		w := nodeWrite
		if lc.token != "" {
			if w = nodeByToken[lc.token]; w == nil {
				w = &write{req: base(), token: lc.token, what: "check " + lc.Health.CheckID}
				nodeByToken[lc.token] = w
			}
		}
		c := *lc.Health
		w.req.Checks = append(w.req.Checks, &c)
		w.marks = append(w.marks, marker{check: lc})
	}
	if !l.nodeInSync || len(nodeWrite.req.Checks) > 0 {
		writes = append(writes, nodeWrite)
	}
	for _, w := range nodeByToken {
		writes = append(writes, w)
	}
	for _, ls := range l.services {
		byToken := map[string]*write{}
		group := func(token, what string) *write {
			w := byToken[token]
			if w == nil {
				w = &write{req: base(), token: token, what: what}
				s := *ls.svc
				w.req.Service = &s
				byToken[token] = w
			}
			return w
		}
		if !ls.inSync {
			w := group(ls.token, "service "+ls.svc.ID)
			w.marks = append(w.marks, marker{svc: ls})
		}
		for _, lc := range l.checks {
			if lc.Health.ServiceID != ls.svc.ID || (lc.inSync && ls.inSync) {
				continue
			}
			w := group(cmp.Or(lc.token, ls.token), "check "+lc.Health.CheckID)
			c := *lc.Health
			w.req.Checks = append(w.req.Checks, &c)
			w.marks = append(w.marks, marker{check: lc})
		}
		for _, w := range byToken {
			writes = append(writes, w)
		}
	}
	l.mu.Unlock()

	for _, w := range writes {
		req := w.req
		resp, err := l.backend.Apply(l.tokenContext(ctx, w.token), catalog.CmdRegister, req)
		if err == nil {
			if e, ok := resp.(error); ok && e != nil {
				err = e
			}
		}
		if err != nil {
			svcName := ""
			if req.Service != nil {
				svcName = req.Service.Service
			}
			err = &syncError{what: "registration of " + w.what, service: svcName, token: w.token, err: err}
			if !aclRefused(err) {
				return err
			}
			refused = append(refused, err)
			continue
		}
		if req.Service != nil {
			l.logger.Debug("synced service", "service", req.Service.ID)
		} else {
			l.logger.Debug("synced node info")
		}
		l.mu.Lock()
		if w.node {
			l.nodeInSync = true
		}
		for _, m := range w.marks {
			// Only mark what still is what we sent.
			if m.svc != nil && l.services[m.svc.svc.ID] == m.svc && serviceEqual(m.svc.svc, req.Service) {
				m.svc.inSync = true
			}
			if m.check != nil && l.checks[m.check.Health.CheckID] == m.check && checkSent(req, m.check.Health) {
				m.check.inSync = true
			}
		}
		l.mu.Unlock()
	}
	return errors.Join(refused...)
}

func checkSent(req *catalog.RegisterRequest, c *catalog.HealthCheck) bool {
	for _, s := range req.Checks {
		if s.CheckID == c.CheckID {
			return s.Status == c.Status && s.Output == c.Output
		}
	}
	return false
}

func serviceEqual(a, b *catalog.Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID && a.Service == b.Service && a.Port == b.Port && a.Address == b.Address &&
		a.Kind == b.Kind && a.EnableTagOverride == b.EnableTagOverride &&
		strings.Join(a.Tags, "\x00") == strings.Join(b.Tags, "\x00") && mapsEqual(a.Meta, b.Meta) &&
		a.Weights == b.Weights && a.SocketPath == b.SocketPath && reflect.DeepEqual(a.Locality, b.Locality) &&
		reflect.DeepEqual(a.TaggedAddresses, b.TaggedAddresses) &&
		reflect.DeepEqual(a.Proxy, b.Proxy) && reflect.DeepEqual(a.Connect, b.Connect)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
