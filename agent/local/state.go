// Package local owns an agent's own services and checks and keeps the
// catalog in step with them (anti-entropy): a partial sync after every local
// change, a full comparison with the catalog on a schedule that grows with
// the cluster.
//
// It reaches the catalog only through a narrow Backend, reads time only from
// the clock.Clock it is given, and knows the node only by the identity in its
// Config. It must not import agent, its HTTP API or the server.
package local

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/checks"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
)

// Errors a caller branches on; the ones returned wrap them with the words
// that the HTTP API answers.
var (
	// ErrNotFound is wrapped when a service or check ID is not local.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is wrapped when a request cannot be carried out as given.
	ErrInvalid = errors.New("invalid request")
)

// Error is an error with the words shown to the user and the sentinel
// (ErrNotFound or ErrInvalid) it wraps.
type Error struct {
	kind error
	msg  string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns ErrNotFound or ErrInvalid.
func (e *Error) Unwrap() error { return e.kind }

func invalid(format string, args ...any) error {
	return &Error{kind: ErrInvalid, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &Error{kind: ErrNotFound, msg: fmt.Sprintf(format, args...)}
}

// Node is the identity the agent registers its node with.
type Node struct {
	ID         string
	Name       string
	Datacenter string
	// Address is the advertised LAN address.
	Address         string
	Meta            map[string]string
	TaggedAddresses map[string]string
	// LeaderService is set on a server agent: the service that the leader
	// registers for every server ("consul"), which anti-entropy must leave
	// alone.
	LeaderService string
}

// Config is what a State needs. Backend and Node.Name are required.
type Config struct {
	Node    Node
	Backend Backend
	// Clock decides anti-entropy timing, TTLs and critical reaping; nil
	// means the real clock.
	Clock  clock.Clock
	Logger hclog.Logger
	// Members returns the number of LAN members, which scales the full
	// sync interval; nil counts one.
	Members func() int
	// CheckOutputMaxSize bounds the output stored for a check that sets no
	// limit of its own (check_output_max_size); 0 means
	// checks.DefaultOutputMaxSize.
	CheckOutputMaxSize int
	// EnableScriptChecks permits script checks from any source;
	// EnableLocalScriptChecks only from configuration files.
	EnableScriptChecks      bool
	EnableLocalScriptChecks bool
	// Rand returns a uniformly random number in [0, 1), for the full-sync
	// jitter; nil means math/rand.
	Rand func() float64
	// SidecarMinPort and SidecarMaxPort are the range sidecar proxies
	// registered through connect.sidecar_service take a port from when
	// they name none (ports.sidecar_min_port/max_port); zero means
	// Consul's 21000-21255.
	SidecarMinPort, SidecarMaxPort int
	// ExposeMinPort and ExposeMaxPort are the range the checks a sidecar
	// exposes (Proxy.Expose.Checks) take a listener port from
	// (ports.expose_min_port/max_port); zero means Consul's 21500-21755.
	ExposeMinPort, ExposeMaxPort int
	// SyncToken, with ACLs on, describes the token the Backend's writes
	// carry, to explain a sync the servers refuse (aclblock.go).
	SyncToken SyncToken
	// WithToken returns ctx carrying secret as the ACL token of the
	// Backend calls made with it (server.WithToken). A service or check
	// registered with a token of its own is synced with it; nil (ACLs
	// off) ignores those tokens and every call carries the Backend's.
	WithToken func(ctx context.Context, secret string) context.Context
	// ResolveToken resolves a registration's token for the line that
	// explains a refusal (its AccessorID and the permission it lacks);
	// nil logs the refusal without them.
	ResolveToken func(secret string) (acl.Authorizer, error)
	// DataDir, when set, is where the services and checks registered
	// through the API are kept with their tokens (persist.go), so that
	// a restarted agent has them again; "" keeps them in memory only.
	DataDir string
}

// Check is a check the agent owns, with what it needs to run. Callers build
// it (or get it from CheckFromDefinition) and hand it to AddCheck or
// AddService, after which the State owns it.
type Check struct {
	// Health is the check as the catalog shows it.
	Health *catalog.HealthCheck
	// TTL is set for a TTL check, which turns critical unless updated
	// within it.
	TTL time.Duration
	// Probe is what the runner checks; nil for TTL and API-set checks.
	Probe *checks.Definition
	// DeregisterAfter removes the check's service after it has been
	// critical this long (deregister_critical_service_after).
	DeregisterAfter time.Duration

	timer         clock.Timer
	runner        *checks.Check
	runs          int // runners started, guarded by State.mu
	criticalSince time.Time
	inSync        bool
	// token is the ACL token the check was registered with, synced with
	// it ("" syncs with the agent's token). Never shown by the API.
	token string
}

// WithToken sets the ACL token the check is synced with ("" for the
// agent's, or its service's) and returns c, for a check built by hand.
func (c *Check) WithToken(secret string) *Check {
	c.token = secret
	return c
}

// service is a service the agent owns.
type service struct {
	svc    *catalog.Service
	inSync bool
	// token is the ACL token the service was registered with (see
	// Check.token).
	token string
}

// State holds the agent's own services and checks. Safe for concurrent use.
type State struct {
	node    Node
	backend Backend
	clock   clock.Clock
	logger  hclog.Logger
	// syncToken is Config.SyncToken (nil: ACLs off).
	syncToken SyncToken
	// withToken and resolveToken are Config.WithToken and ResolveToken.
	withToken    func(ctx context.Context, secret string) context.Context
	resolveToken func(secret string) (acl.Authorizer, error)
	// dataDir is Config.DataDir.
	dataDir  string
	members  func() int
	rand     func() float64
	checkOpt checks.Options
	// outputMax bounds the output stored for a check without a limit of
	// its own.
	outputMax int
	scripts   bool
	// localScripts permits script checks from configuration files.
	localScripts bool
	// sidecarMin and sidecarMax bound the ports given to sidecars;
	// exposeMin and exposeMax those of exposed checks (expose.go).
	sidecarMin, sidecarMax int
	exposeMin, exposeMax   int

	mu         sync.Mutex
	services   map[string]*service
	checks     map[string]*Check
	nodeInSync bool
	// removedServices and removedChecks are IDs deleted locally and not
	// yet deregistered from the catalog, with the token to deregister
	// them with ("" for the agent's): the next partial sync removes them,
	// so a deregistration does not wait for the full sync.
	removedServices map[string]string
	removedChecks   map[string]string
	// toStop holds check runners removed under mu; they are stopped after
	// mu is released because a stopping runner may be waiting for mu.
	toStop []*checks.Check

	triggerCh chan struct{}

	// syncMu guards the change generations that WaitSync waits on.
	syncMu sync.Mutex
	// changeGen counts the changes that asked for a sync; syncedGen is the
	// highest generation a successful sync has covered; syncedCh is closed
	// (and replaced) whenever syncedGen grows.
	changeGen, syncedGen uint64
	syncedCh             chan struct{}
	// changeCh is closed (and replaced) at every local change.
	changeCh chan struct{}
	// running is true while Run syncs; WaitSync does not wait without it.
	running bool
}

// New returns an empty State. It syncs nothing until Run is called.
func New(cfg Config) *State {
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Members == nil {
		cfg.Members = func() int { return 1 }
	}
	if cfg.Rand == nil {
		cfg.Rand = randFloat
	}
	if cfg.SidecarMinPort <= 0 || cfg.SidecarMaxPort < cfg.SidecarMinPort {
		cfg.SidecarMinPort, cfg.SidecarMaxPort = 21000, 21255
	}
	if cfg.ExposeMinPort <= 0 || cfg.ExposeMaxPort < cfg.ExposeMinPort {
		cfg.ExposeMinPort, cfg.ExposeMaxPort = 21500, 21755
	}
	limit := cfg.CheckOutputMaxSize
	if limit <= 0 {
		limit = checks.DefaultOutputMaxSize
	}
	return &State{
		node:         cfg.Node,
		backend:      cfg.Backend,
		clock:        cfg.Clock,
		logger:       cfg.Logger,
		syncToken:    cfg.SyncToken,
		withToken:    cfg.WithToken,
		resolveToken: cfg.ResolveToken,
		dataDir:      cfg.DataDir,
		members:      cfg.Members,
		rand:         cfg.Rand,
		outputMax:    limit,
		scripts:      cfg.EnableScriptChecks,
		localScripts: cfg.EnableLocalScriptChecks,
		sidecarMin:   cfg.SidecarMinPort,
		sidecarMax:   cfg.SidecarMaxPort,
		exposeMin:    cfg.ExposeMinPort,
		exposeMax:    cfg.ExposeMaxPort,
		checkOpt: checks.Options{
			EnableScriptChecks: true, // gated when the check was defined
			OutputMaxSize:      limit,
			AliasSource:        aliasSource{backend: cfg.Backend, node: cfg.Node.Name},
			Logger:             cfg.Logger,
		},
		services:        map[string]*service{},
		checks:          map[string]*Check{},
		removedServices: map[string]string{},
		removedChecks:   map[string]string{},
		triggerCh:       make(chan struct{}, 1),
		syncedCh:        make(chan struct{}),
		changeCh:        make(chan struct{}),
	}
}

// trigger asks for a sync soon; it never blocks.
func (l *State) trigger() {
	l.syncMu.Lock()
	l.changeGen++
	close(l.changeCh)
	l.changeCh = make(chan struct{})
	l.syncMu.Unlock()
	select {
	case l.triggerCh <- struct{}{}:
	default:
	}
}

// Changed returns a channel closed at the next change of a local service
// or check (registration, removal, status or output), for readers that
// block on the agent's own state.
func (l *State) Changed() <-chan struct{} {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.changeCh
}

// AddService adds or replaces a local service and its checks, synced with
// the agent's token.
func (l *State) AddService(svc *catalog.Service, checks []*Check) {
	l.addService(svc, checks, "")
}

// addService is AddService for a service registered with token.
func (l *State) addService(svc *catalog.Service, checks []*Check, token string) {
	l.mu.Lock()
	if old := l.services[svc.ID]; old != nil {
		svc.CreateIndex, svc.ModifyIndex = old.svc.CreateIndex, old.svc.ModifyIndex
	}
	l.services[svc.ID] = &service{svc: svc, token: token}
	delete(l.removedServices, svc.ID)
	for _, c := range checks {
		// A re-registered check keeps its current status and output, as
		// Consul's does, rather than flapping to its initial status.
		if old := l.checks[c.Health.CheckID]; old != nil {
			c.Health.Status, c.Health.Output = old.Health.Status, old.Health.Output
			c.Health.ExposedPort = old.Health.ExposedPort
			c.criticalSince = old.criticalSince
		}
		l.addCheckLocked(c)
	}
	if p := svc.Proxy; svc.Kind == catalog.ServiceKindConnectProxy && p != nil {
		// The sidecar may start or stop exposing its service's checks.
		l.reexposeLocked(p.DestinationServiceID)
	}
	l.mu.Unlock()
	l.stopPending()
	l.trigger()
}

// RemoveService removes a local service and its checks; false when unknown.
// The catalog delete uses the token the service was registered with.
func (l *State) RemoveService(id string) bool {
	return l.RemoveServiceWithToken(id, "")
}

// RemoveServiceWithToken is RemoveService for a deregistration made with
// token (through the API): the catalog delete uses it, or when it is ""
// the service's own token, else the agent's.
func (l *State) RemoveServiceWithToken(id, token string) bool {
	l.mu.Lock()
	s, ok := l.services[id]
	var checkIDs []string
	if ok {
		if token == "" {
			token = s.token
		}
		delete(l.services, id)
		l.removedServices[id] = token
		for cid, c := range l.checks {
			if c.Health.ServiceID == id {
				// Deregistering the service removes its checks from
				// the catalog too; marking them as well clears them
				// when the service is added back without them first.
				l.stopCheckLocked(c)
				delete(l.checks, cid)
				l.removedChecks[cid] = token
				checkIDs = append(checkIDs, cid)
			}
		}
	}
	if ok && s.svc.Kind == catalog.ServiceKindConnectProxy && s.svc.Proxy != nil {
		// Its service's checks are probed directly again.
		l.reexposeLocked(s.svc.Proxy.DestinationServiceID)
	}
	sidecar := ""
	if sc := l.services[id+sidecarSuffix]; ok && sc != nil && sc.svc.Kind == "connect-proxy" &&
		sc.svc.Proxy != nil && sc.svc.Proxy.DestinationServiceID == id {
		sidecar = sc.svc.ID
	}
	l.mu.Unlock()
	l.stopPending()
	if ok {
		l.unpersist(servicesDir, id)
		for _, cid := range checkIDs {
			l.unpersist(checksDir, cid)
		}
		l.trigger()
	}
	if sidecar != "" {
		// A sidecar registered with its service goes with it.
		l.RemoveServiceWithToken(sidecar, token)
	}
	return ok
}

// AddCheck adds or replaces a local check. A check of a service that is not
// local is refused with an error wrapping ErrInvalid.
func (l *State) AddCheck(c *Check) error {
	l.mu.Lock()
	if c.Health.ServiceID != "" {
		s := l.services[c.Health.ServiceID]
		if s == nil {
			l.mu.Unlock()
			return invalid("ServiceID %q does not exist", c.Health.ServiceID)
		}
		c.Health.ServiceName = s.svc.Service
		c.Health.ServiceTags = s.svc.Tags
	}
	l.addCheckLocked(c)
	l.mu.Unlock()
	l.stopPending()
	l.trigger()
	return nil
}

func (l *State) addCheckLocked(c *Check) {
	if old := l.checks[c.Health.CheckID]; old != nil {
		l.stopCheckLocked(old)
	}
	c.Health.Node = l.node.Name
	if c.Health.Status == "" {
		c.Health.Status = catalog.HealthCritical
	}
	if s := l.services[c.Health.ServiceID]; s != nil {
		c.Health.ServiceName = s.svc.Service
		c.Health.ServiceTags = s.svc.Tags
	}
	if c.Health.Status == catalog.HealthCritical && c.criticalSince.IsZero() {
		c.criticalSince = l.clock.Now()
	}
	l.checks[c.Health.CheckID] = c
	delete(l.removedChecks, c.Health.CheckID)
	if c.TTL > 0 {
		id := c.Health.CheckID
		c.timer = l.clock.AfterFunc(c.TTL, func() { l.ttlExpired(id, c) })
	}
	l.startRunnerLocked(c)
}

// startRunnerLocked starts the runner of a check that has a probe.
func (l *State) startRunnerLocked(c *Check) {
	if c.Probe == nil {
		return
	}
	c.runs++
	exposed := c.Health.ExposedPort
	probe := l.probeLocked(c)
	if c.Health.ExposedPort != exposed {
		c.inSync = false // the catalog shows the exposed port
	}
	r, err := checks.New(probe, &notifier{l: l, c: c, gen: c.runs}, l.checkOpt)
	if err != nil {
		l.logger.Error("check cannot run", "check", c.Health.CheckID, "error", err)
		c.Health.Output = err.Error()
		return
	}
	c.runner = r
	r.Start()
}

func (l *State) stopCheckLocked(c *Check) {
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.runner != nil {
		l.toStop = append(l.toStop, c.runner)
		c.runner = nil
	}
}

// stopPending stops the runners removed under mu. Call without mu.
func (l *State) stopPending() {
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
func (l *State) reapCritical(now time.Time) {
	l.mu.Lock()
	var reap []string
	for _, c := range l.checks {
		if c.DeregisterAfter > 0 && c.Health.ServiceID != "" && c.Health.Status == catalog.HealthCritical &&
			!c.criticalSince.IsZero() && now.Sub(c.criticalSince) > c.DeregisterAfter {
			reap = append(reap, c.Health.ServiceID)
		}
	}
	l.mu.Unlock()
	for _, id := range reap {
		if l.RemoveService(id) {
			l.logger.Info("deregistered service whose check stayed critical", "service", id)
		}
	}
}

// StopChecks stops every check runner and TTL timer and waits for the
// runners. Run calls it when it returns; an agent that fails to start before
// it runs Run calls it itself.
func (l *State) StopChecks() {
	l.mu.Lock()
	for _, c := range l.checks {
		l.stopCheckLocked(c)
	}
	l.mu.Unlock()
	l.stopPending()
}

// notifier receives a runner's results for one local check.
type notifier struct {
	l *State
	c *Check
	// gen is c.runs when the runner started: a runner replaced on the
	// same check (expose.go) reports nothing more.
	gen int
}

// UpdateCheck implements checks.Notifier.
func (n *notifier) UpdateCheck(id, status, output string) {
	n.l.mu.Lock()
	if n.l.checks[id] != n.c || n.c.runs != n.gen {
		n.l.mu.Unlock()
		return
	}
	n.l.setStatusLocked(n.c, status, output)
	n.l.mu.Unlock()
	n.l.trigger()
}

// RemoveCheck removes a local check; false when unknown. The catalog delete
// uses the token the check was registered with.
func (l *State) RemoveCheck(id string) bool {
	return l.RemoveCheckWithToken(id, "")
}

// RemoveCheckWithToken is RemoveCheck for a deregistration made with token
// (see RemoveServiceWithToken).
func (l *State) RemoveCheckWithToken(id, token string) bool {
	l.mu.Lock()
	c, ok := l.checks[id]
	if ok {
		if token == "" {
			token = c.token
		}
		l.stopCheckLocked(c)
		delete(l.checks, id)
		l.removedChecks[id] = token
	}
	l.mu.Unlock()
	l.stopPending()
	if ok {
		l.unpersist(checksDir, id)
		l.trigger()
	}
	return ok
}

func (l *State) ttlExpired(id string, c *Check) {
	l.mu.Lock()
	if l.checks[id] != c {
		l.mu.Unlock()
		return
	}
	l.setStatusLocked(c, catalog.HealthCritical, fmt.Sprintf("TTL expired (last output before timeout follows): %s", c.Health.Output))
	l.mu.Unlock()
	l.trigger()
}

// UpdateCheck sets a TTL check's status and output and restarts its TTL. An
// unknown ID is an error wrapping ErrNotFound; a check without a TTL one
// wrapping ErrInvalid.
func (l *State) UpdateCheck(id, status, output string) error {
	l.mu.Lock()
	c, ok := l.checks[id]
	if !ok {
		l.mu.Unlock()
		return notFound("Unknown check ID %q", id)
	}
	if c.TTL == 0 {
		l.mu.Unlock()
		return invalid("check %q is not a TTL check", id)
	}
	c.timer.Reset(c.TTL)
	l.setStatusLocked(c, status, output)
	l.mu.Unlock()
	l.trigger()
	return nil
}

// setStatusLocked records a result, its output cut to the check's own limit
// or check_output_max_size.
func (l *State) setStatusLocked(c *Check, status, output string) {
	limit := l.outputMax
	if c.Probe != nil && c.Probe.OutputMaxSize > 0 {
		limit = c.Probe.OutputMaxSize
	}
	if len(output) > limit {
		output = output[:limit] + " ... (captured " + fmt.Sprint(limit) + " of " + fmt.Sprint(len(output)) + " bytes)"
	}
	if c.Health.Status == status && c.Health.Output == output {
		return
	}
	if status == catalog.HealthCritical && c.Health.Status != catalog.HealthCritical {
		c.criticalSince = l.clock.Now()
	}
	cp := *c.Health
	cp.Status, cp.Output = status, output
	c.Health = &cp
	c.inSync = false
}

// Service returns a copy of the local service with this ID, nil when there is
// none.
func (l *State) Service(id string) *catalog.Service {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.services[id]
	if s == nil {
		return nil
	}
	cp := *s.svc
	return &cp
}

// Services returns copies of the local services by ID.
func (l *State) Services() map[string]*catalog.Service {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*catalog.Service, len(l.services))
	for id, s := range l.services {
		cp := *s.svc
		out[id] = &cp
	}
	return out
}

// Checks returns copies of the local checks by ID.
func (l *State) Checks() map[string]*catalog.HealthCheck {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*catalog.HealthCheck, len(l.checks))
	for id, c := range l.checks {
		cp := *c.Health
		out[id] = &cp
	}
	return out
}
