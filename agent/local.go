package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tribune-mesh/tribune/agent/checks"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// maxCheckOutput bounds the output kept for a check (check_output_max_size).
const maxCheckOutput = 4096

// errUnknownCheck is returned for a check ID the agent does not own.
var errUnknownCheck = errors.New("Unknown check ID")

// localCheck is a check the agent owns, with what it needs to run.
type localCheck struct {
	check *catalog.HealthCheck
	ttl   time.Duration
	timer *time.Timer
	// probe is what the runner checks; nil for TTL and API-set checks.
	probe  *checks.Definition
	runner *checks.Check
	// deregisterAfter removes the check's service after it has been
	// critical this long (deregister_critical_service_after).
	deregisterAfter time.Duration
	criticalSince   time.Time
	inSync          bool
}

// localService is a service the agent owns.
type localService struct {
	svc    *catalog.Service
	inSync bool
}

// localState holds the agent's own services and checks and keeps the
// catalog in step with them (anti-entropy): a partial sync after every local
// change, a full comparison with the catalog on a schedule.
type localState struct {
	agent *Agent

	mu         sync.Mutex
	services   map[string]*localService
	checks     map[string]*localCheck
	nodeInSync bool
	// removedServices and removedChecks are IDs deleted locally and not
	// yet deregistered from the catalog: the next partial sync removes
	// them, so a deregistration does not wait for the full sync.
	removedServices map[string]bool
	removedChecks   map[string]bool

	triggerCh chan struct{}
	// toStop holds check runners removed under mu; they are stopped after
	// mu is released because a stopping runner may be waiting for mu.
	toStop []*checks.Check
}

func newLocalState(a *Agent) *localState {
	return &localState{
		agent:           a,
		services:        map[string]*localService{},
		checks:          map[string]*localCheck{},
		removedServices: map[string]bool{},
		removedChecks:   map[string]bool{},
		triggerCh:       make(chan struct{}, 1),
	}
}

// trigger asks for a sync soon; it never blocks.
func (l *localState) trigger() {
	select {
	case l.triggerCh <- struct{}{}:
	default:
	}
}

// fullSyncInterval is how often the whole catalog view of this node is
// compared with the local state; it grows with the cluster as Consul's does
// (one minute up to 128 nodes).
func fullSyncInterval(nodes int) time.Duration {
	base := time.Minute
	if nodes > 128 {
		base = time.Duration(float64(base) * float64(nodes) / 128)
	}
	return base
}

// run syncs until stop is closed.
func (l *localState) run(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer l.stopAll()
	go func() {
		<-stop
		cancel()
	}()
	full := time.NewTimer(0)
	defer full.Stop()
	reap := time.NewTicker(time.Second)
	defer reap.Stop()
	retry := time.Second
	for {
		var err error
		select {
		case <-stop:
			return
		case <-reap.C:
			l.reapCritical(time.Now())
		case <-full.C:
			err = l.syncFull(ctx)
			full.Reset(fullSyncInterval(1))
		case <-l.triggerCh:
			err = l.syncChanges(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.agent.logger.Warn("anti-entropy sync failed, retrying", "error", err, "in", retry)
			select {
			case <-stop:
				return
			case <-time.After(retry):
			}
			l.trigger()
		}
	}
}

// syncFull marks every local entry out of sync when it differs from the
// catalog, registers what is missing and removes what the agent no longer
// owns, then pushes the changes.
func (l *localState) syncFull(ctx context.Context) error {
	a := l.agent
	resp, err := a.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNode, Name: a.cfg.NodeName,
		Options: catalog.QueryOptions{AllowStale: true}})
	if err != nil {
		return fmt.Errorf("read node services: %w", err)
	}
	chk, err := a.backend.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadNodeChecks, Name: a.cfg.NodeName,
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
		l.nodeInSync = n.Address == a.advertiseHost() && mapsEqual(n.Meta, a.cfg.NodeMeta)
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
		lc.inSync = rc != nil && rc.Status == lc.check.Status && rc.Output == lc.check.Output &&
			rc.Name == lc.check.Name && rc.ServiceID == lc.check.ServiceID
	}
	var extraSvcs, extraChecks []string
	for id := range remote {
		if id == server.ServerServiceName && a.cfg.Server {
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
	for _, id := range extraSvcs {
		if err := l.deregister(ctx, &catalog.DeregisterRequest{Node: a.cfg.NodeName, ServiceID: id}); err != nil {
			return err
		}
	}
	for _, id := range extraChecks {
		if err := l.deregister(ctx, &catalog.DeregisterRequest{Node: a.cfg.NodeName, CheckID: id}); err != nil {
			return err
		}
	}
	return l.syncChanges(ctx)
}

// syncRemovals deregisters the services and checks removed locally since
// the last sync. An ID added again meanwhile is no longer marked and is left
// to the registrations.
func (l *localState) syncRemovals(ctx context.Context) error {
	node := l.agent.cfg.NodeName
	l.mu.Lock()
	var svcs, checks []string
	for id := range l.removedServices {
		svcs = append(svcs, id)
	}
	for id := range l.removedChecks {
		checks = append(checks, id)
	}
	l.mu.Unlock()
	for _, id := range svcs {
		if err := l.deregister(ctx, &catalog.DeregisterRequest{Node: node, ServiceID: id}); err != nil {
			return err
		}
		l.mu.Lock()
		if l.services[id] == nil {
			delete(l.removedServices, id)
		}
		l.mu.Unlock()
	}
	for _, id := range checks {
		if err := l.deregister(ctx, &catalog.DeregisterRequest{Node: node, CheckID: id}); err != nil {
			return err
		}
		l.mu.Lock()
		if l.checks[id] == nil {
			delete(l.removedChecks, id)
		}
		l.mu.Unlock()
	}
	return nil
}

func (l *localState) deregister(ctx context.Context, req *catalog.DeregisterRequest) error {
	resp, err := l.agent.backend.Apply(ctx, catalog.CmdDeregister, req)
	if err != nil {
		return fmt.Errorf("deregister: %w", err)
	}
	if e, ok := resp.(error); ok && e != nil {
		return fmt.Errorf("deregister: %w", e)
	}
	return nil
}

// syncChanges deregisters what was removed locally, then pushes every
// out-of-sync entry in one registration per service (with its checks) plus
// one for the node and its node checks.
func (l *localState) syncChanges(ctx context.Context) error {
	if err := l.syncRemovals(ctx); err != nil {
		return err
	}
	a := l.agent
	l.mu.Lock()
	var reqs []*catalog.RegisterRequest
	base := func() *catalog.RegisterRequest {
		return &catalog.RegisterRequest{ID: a.cfg.NodeID, Node: a.cfg.NodeName, Address: a.advertiseHost(),
			Datacenter: a.cfg.Datacenter, NodeMeta: a.cfg.NodeMeta, TaggedAddresses: a.taggedAddresses()}
	}
	type marker struct {
		svc   *localService
		check *localCheck
	}
	var marks [][]marker
	nodeReq := base()
	var nodeMarks []marker
	for _, lc := range l.checks {
		if lc.inSync || lc.check.ServiceID != "" {
			continue
		}
		c := *lc.check
		nodeReq.Checks = append(nodeReq.Checks, &c)
		nodeMarks = append(nodeMarks, marker{check: lc})
	}
	if !l.nodeInSync || len(nodeReq.Checks) > 0 {
		reqs = append(reqs, nodeReq)
		marks = append(marks, nodeMarks)
	}
	for _, ls := range l.services {
		req := base()
		var m []marker
		if !ls.inSync {
			s := *ls.svc
			req.Service = &s
			m = append(m, marker{svc: ls})
		}
		for _, lc := range l.checks {
			if lc.check.ServiceID != ls.svc.ID || (lc.inSync && ls.inSync) {
				continue
			}
			c := *lc.check
			req.Checks = append(req.Checks, &c)
			m = append(m, marker{check: lc})
		}
		if len(m) > 0 {
			if req.Service == nil {
				s := *ls.svc
				req.Service = &s
			}
			reqs = append(reqs, req)
			marks = append(marks, m)
		}
	}
	l.mu.Unlock()

	for i, req := range reqs {
		resp, err := a.backend.Apply(ctx, catalog.CmdRegister, req)
		if err == nil {
			if e, ok := resp.(error); ok && e != nil {
				err = e
			}
		}
		if err != nil {
			return fmt.Errorf("sync registration: %w", err)
		}
		l.mu.Lock()
		if i == 0 && req.Service == nil {
			l.nodeInSync = true
		}
		for _, m := range marks[i] {
			// Only mark what still is what we sent.
			if m.svc != nil && l.services[m.svc.svc.ID] == m.svc && serviceEqual(m.svc.svc, req.Service) {
				m.svc.inSync = true
			}
			if m.check != nil && l.checks[m.check.check.CheckID] == m.check && checkSent(req, m.check.check) {
				m.check.inSync = true
			}
		}
		l.mu.Unlock()
	}
	return nil
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
		a.Weights == b.Weights
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

// addService adds or replaces a local service and its checks.
func (l *localState) addService(svc *catalog.Service, checks []*localCheck) {
	l.mu.Lock()
	if old := l.services[svc.ID]; old != nil {
		svc.CreateIndex, svc.ModifyIndex = old.svc.CreateIndex, old.svc.ModifyIndex
	}
	l.services[svc.ID] = &localService{svc: svc}
	delete(l.removedServices, svc.ID)
	for _, c := range checks {
		// A re-registered check keeps its current status and output, as
		// Consul's does, rather than flapping to its initial status.
		if old := l.checks[c.check.CheckID]; old != nil {
			c.check.Status, c.check.Output = old.check.Status, old.check.Output
			c.criticalSince = old.criticalSince
		}
		l.addCheckLocked(c)
	}
	l.mu.Unlock()
	l.trigger()
}

// removeService removes a local service and its checks; false when unknown.
func (l *localState) removeService(id string) bool {
	l.mu.Lock()
	_, ok := l.services[id]
	if ok {
		delete(l.services, id)
		l.removedServices[id] = true
		for cid, c := range l.checks {
			if c.check.ServiceID == id {
				// Deregistering the service removes its checks from
				// the catalog too; marking them as well clears them
				// when the service is added back without them first.
				l.stopCheckLocked(c)
				delete(l.checks, cid)
				l.removedChecks[cid] = true
			}
		}
	}
	l.mu.Unlock()
	l.stopPending()
	if ok {
		l.trigger()
	}
	return ok
}

func (l *localState) addCheck(c *localCheck) error {
	l.mu.Lock()
	if c.check.ServiceID != "" {
		s := l.services[c.check.ServiceID]
		if s == nil {
			l.mu.Unlock()
			return badRequest("ServiceID %q does not exist", c.check.ServiceID)
		}
		c.check.ServiceName = s.svc.Service
		c.check.ServiceTags = s.svc.Tags
	}
	l.addCheckLocked(c)
	l.mu.Unlock()
	l.stopPending()
	l.trigger()
	return nil
}

func (l *localState) addCheckLocked(c *localCheck) {
	if old := l.checks[c.check.CheckID]; old != nil {
		l.stopCheckLocked(old)
	}
	c.check.Node = l.agent.cfg.NodeName
	if c.check.Status == "" {
		c.check.Status = catalog.HealthCritical
	}
	if s := l.services[c.check.ServiceID]; s != nil {
		c.check.ServiceName = s.svc.Service
		c.check.ServiceTags = s.svc.Tags
	}
	if c.check.Status == catalog.HealthCritical && c.criticalSince.IsZero() {
		c.criticalSince = time.Now()
	}
	l.checks[c.check.CheckID] = c
	delete(l.removedChecks, c.check.CheckID)
	if c.ttl > 0 {
		id := c.check.CheckID
		c.timer = time.AfterFunc(c.ttl, func() { l.ttlExpired(id, c) })
	}
	if c.probe != nil {
		r, err := checks.New(*c.probe, &checkNotifier{l: l, c: c}, checks.Options{
			EnableScriptChecks: true, // gated when the check was defined
			OutputMaxSize:      l.agent.cfg.CheckOutputMaxSize,
			AliasSource:        aliasSource{a: l.agent},
			Logger:             l.agent.logger,
		})
		if err != nil {
			l.agent.logger.Error("check cannot run", "check", c.check.CheckID, "error", err)
			c.check.Output = err.Error()
			return
		}
		c.runner = r
		r.Start()
	}
}

func (l *localState) stopCheckLocked(c *localCheck) {
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.runner != nil {
		l.toStop = append(l.toStop, c.runner)
		c.runner = nil
	}
}

// stopPending stops the runners removed under mu. Call without mu.
func (l *localState) stopPending() {
	l.mu.Lock()
	stops := l.toStop
	l.toStop = nil
	l.mu.Unlock()
	for _, r := range stops {
		r.Stop()
	}
}

// reapCritical removes services whose check has been critical longer than
// its deregister_critical_service_after.
func (l *localState) reapCritical(now time.Time) {
	l.mu.Lock()
	var reap []string
	for _, c := range l.checks {
		if c.deregisterAfter > 0 && c.check.ServiceID != "" && c.check.Status == catalog.HealthCritical &&
			!c.criticalSince.IsZero() && now.Sub(c.criticalSince) > c.deregisterAfter {
			reap = append(reap, c.check.ServiceID)
		}
	}
	l.mu.Unlock()
	for _, id := range reap {
		if l.removeService(id) {
			l.agent.logger.Info("deregistered service whose check stayed critical", "service", id)
		}
	}
}

// stopAll stops every check runner and TTL timer (agent shutdown).
func (l *localState) stopAll() {
	l.mu.Lock()
	for _, c := range l.checks {
		l.stopCheckLocked(c)
	}
	l.mu.Unlock()
	l.stopPending()
}

// checkNotifier receives a runner's results for one local check.
type checkNotifier struct {
	l *localState
	c *localCheck
}

// UpdateCheck implements checks.Notifier.
func (n *checkNotifier) UpdateCheck(id, status, output string) {
	n.l.mu.Lock()
	if n.l.checks[id] != n.c {
		n.l.mu.Unlock()
		return
	}
	n.l.setStatusLocked(n.c, status, output)
	n.l.mu.Unlock()
	n.l.trigger()
}

func (l *localState) removeCheck(id string) bool {
	l.mu.Lock()
	c, ok := l.checks[id]
	if ok {
		l.stopCheckLocked(c)
		delete(l.checks, id)
		l.removedChecks[id] = true
	}
	l.mu.Unlock()
	l.stopPending()
	if ok {
		l.trigger()
	}
	return ok
}

func (l *localState) ttlExpired(id string, c *localCheck) {
	l.mu.Lock()
	if l.checks[id] != c {
		l.mu.Unlock()
		return
	}
	l.setStatusLocked(c, catalog.HealthCritical, fmt.Sprintf("TTL expired (last output before timeout follows): %s", c.check.Output))
	l.mu.Unlock()
	l.trigger()
}

// updateCheck sets a check's status and output (TTL checks from the API); it
// resets the TTL.
func (l *localState) updateCheck(id, status, output string) error {
	l.mu.Lock()
	c, ok := l.checks[id]
	if !ok {
		l.mu.Unlock()
		return notFound("%s %q", errUnknownCheck, id)
	}
	if c.ttl == 0 {
		l.mu.Unlock()
		return badRequest("check %q is not a TTL check", id)
	}
	c.timer.Reset(c.ttl)
	l.setStatusLocked(c, status, output)
	l.mu.Unlock()
	l.trigger()
	return nil
}

func (l *localState) setStatusLocked(c *localCheck, status, output string) {
	if len(output) > maxCheckOutput {
		output = output[:maxCheckOutput] + " ... (captured " + fmt.Sprint(maxCheckOutput) + " of " + fmt.Sprint(len(output)) + " bytes)"
	}
	if c.check.Status == status && c.check.Output == output {
		return
	}
	if status == catalog.HealthCritical && c.check.Status != catalog.HealthCritical {
		c.criticalSince = time.Now()
	}
	cp := *c.check
	cp.Status, cp.Output = status, output
	c.check = &cp
	c.inSync = false
}

// snapshot returns copies of the local services and checks.
func (l *localState) snapshot() (map[string]*catalog.Service, map[string]*catalog.HealthCheck) {
	l.mu.Lock()
	defer l.mu.Unlock()
	svcs := make(map[string]*catalog.Service, len(l.services))
	for id, s := range l.services {
		c := *s.svc
		svcs[id] = &c
	}
	checks := make(map[string]*catalog.HealthCheck, len(l.checks))
	for id, c := range l.checks {
		cp := *c.check
		checks[id] = &cp
	}
	return svcs, checks
}
