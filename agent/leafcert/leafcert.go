// Package leafcert keeps the agent's Connect leaf certificates: one per
// service, made from a key and CSR of the agent's own and signed by a server,
// held in memory and renewed before it expires, at a jittered point between
// half and three quarters of its lifetime (connect.RenewAt), and at once
// whenever the CA's active root changes. GET /v1/agent/connect/ca/leaf
// answers from it, blocking on its index.
//
// The Manager owns one goroutine that watches the CA roots with blocking
// reads, and a goroutine per renewal while it signs (a service waiting for
// its renewal time holds a timer, not a goroutine); Close stops and waits
// for them. Every renewal timer comes from the injected clock. It must not
// import agent or agent/httpapi.
package leafcert

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/connect"
	"github.com/tribune-mesh/tribune/server"
)

// Errors callers branch on.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("leaf certificate manager closed")
	// ErrTooManyServices is returned when Get names one service more than
	// MaxServices.
	ErrTooManyServices = errors.New("too many services with a leaf certificate on this agent")
)

// Signer has a server sign a CSR. *server.Server and *server.Client
// implement it. Safe for concurrent use; honours ctx.
type Signer interface {
	SignLeaf(ctx context.Context, req *server.SignLeafRequest) (*server.SignLeafResponse, error)
}

// Reader runs catalog reads, blocking when MinQueryIndex is set (the
// agent's backend).
type Reader interface {
	Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
}

// Config configures a Manager.
type Config struct {
	Signer     Signer
	Reader     Reader
	Datacenter string
	// Clock drives renewals and retries; nil is the real clock.
	Clock  clock.Clock
	Logger hclog.Logger
	// Jitter returns a number in [0, 1) that places a renewal between
	// half and three quarters of a leaf's life; nil is math/rand.
	Jitter func() float64
	// MaxServices bounds the services with a leaf; 0 means 4096.
	MaxServices int
}

// Leaf is a leaf certificate in Consul's LeafCert JSON form.
type Leaf struct {
	SerialNumber  string
	CertPEM       string
	PrivateKeyPEM string
	Service       string
	ServiceURI    string
	ValidAfter    time.Time
	ValidBefore   time.Time
	CreateIndex   uint64
	ModifyIndex   uint64

	// RootID is the ID of the root that signed it; RenewAt is when it is
	// replaced.
	RootID  string    `json:"-"`
	RenewAt time.Time `json:"-"`
}

// roots is what the manager knows of the CA.
type roots struct {
	index       uint64
	activeID    string
	trustDomain string
	keyType     string
	keyBits     int
	// intermediates of the active root, appended to each leaf's chain.
	intermediates []string
}

// entry is one service's leaf.
type entry struct {
	leaf *Leaf
	err  error
	// ch is closed when leaf or err changes.
	ch chan struct{}
	// token is the ACL token of the last Get that carried one
	// (server.WithToken): the servers sign with its service:write, also
	// for renewals, as Consul signs with the requester's token.
	token    string
	hasToken bool
	// listeners are the callbacks of Notify (guarded by the Manager's
	// mu).
	listeners map[*func()]struct{}

	// The renewal, without a goroutine while it waits: timer renews at
	// the leaf's renewal time (or retries a failed signing after
	// backoff); signing is set while a goroutine signs, again when
	// another renewal was asked for meanwhile; waitingRoots when no
	// roots are known yet (watchRoots renews it when they are).
	timer                        clock.Timer
	signing, again, waitingRoots bool
	backoff                      time.Duration
}

// Manager holds the leaf certificates of an agent's services.
type Manager struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	leaves  map[string]*entry
	roots   *roots
	rootsCh chan struct{} // closed when roots change
	started bool
	closed  bool
}

// New returns a Manager; it starts its goroutines at the first Get.
func New(cfg Config) *Manager {
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.MaxServices <= 0 {
		cfg.MaxServices = 4096
	}
	m := &Manager{cfg: cfg, leaves: map[string]*entry{}, rootsCh: make(chan struct{})}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

// Close stops every goroutine and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for _, e := range m.leaves {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// maxFirstWait bounds how long Get waits for a service's first leaf.
const maxFirstWait = 30 * time.Second

// Get returns the service's current leaf. With minIndex > 0 it waits until
// the leaf's ModifyIndex passes minIndex, wait ends or ctx ends, then
// answers with the current leaf (a blocking query). The first Get of a
// service starts its renewals and waits for its first leaf.
func (m *Manager) Get(ctx context.Context, service string, minIndex uint64, wait time.Duration) (*Leaf, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	e := m.leaves[service]
	if e == nil {
		if len(m.leaves) >= m.cfg.MaxServices {
			m.mu.Unlock()
			return nil, ErrTooManyServices
		}
		e = &entry{ch: make(chan struct{})}
		m.leaves[service] = e
		if !m.started {
			m.started = true
			m.wg.Add(1)
			go m.watchRoots()
		}
		m.kickLocked(service, e)
	}
	if tok, ok := server.TokenFrom(ctx); ok {
		e.token, e.hasToken = tok, true
	}
	m.mu.Unlock()

	if minIndex == 0 || wait <= 0 {
		wait = maxFirstWait
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		m.mu.Lock()
		leaf, err, ch := e.leaf, e.err, e.ch
		m.mu.Unlock()
		if leaf != nil && (minIndex == 0 || leaf.ModifyIndex > minIndex) {
			c := *leaf
			return &c, nil
		}
		if leaf == nil && err != nil {
			return nil, err
		}
		select {
		case <-ch:
		case <-timer.C:
			if leaf == nil {
				return nil, fmt.Errorf("leaf certificate for %q: timed out waiting for the first one", service)
			}
			c := *leaf
			return &c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// Changed returns a channel closed when the service's leaf is no longer
// the one of ModifyIndex modifyIndex (already closed when it is not), for
// readers that select on several inputs; nil when the service has no leaf
// entry (Get starts one).
func (m *Manager) Changed(service string, modifyIndex uint64) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.leaves[service]
	if e == nil {
		return nil
	}
	if e.leaf != nil && e.leaf.ModifyIndex != modifyIndex {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return e.ch
}

// Notify calls fn, on the goroutine of the renewal, each time the
// service's leaf (or its error) changes, until cancel is called; fn must not
// block or call back into the Manager. It returns false and does nothing
// when the service has no leaf entry (Get starts one). It is how many
// readers follow leaves without a goroutine each waiting on Changed.
func (m *Manager) Notify(service string, fn func()) (cancel func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.leaves[service]
	if e == nil {
		return nil, false
	}
	if e.listeners == nil {
		e.listeners = map[*func()]struct{}{}
	}
	key := &fn
	e.listeners[key] = struct{}{}
	return func() {
		m.mu.Lock()
		delete(e.listeners, key)
		m.mu.Unlock()
	}, true
}

// watchRoots follows the CA roots with blocking reads.
func (m *Manager) watchRoots() {
	defer m.wg.Done()
	var index uint64
	backoff := time.Second
	for m.ctx.Err() == nil {
		resp, err := m.cfg.Reader.Read(m.ctx, &catalog.ReadRequest{Op: catalog.ReadCARoots,
			Options: catalog.QueryOptions{MinQueryIndex: index, MaxQueryTime: 5 * time.Minute}})
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			m.cfg.Logger.Warn("watching the CA roots failed, retrying", "error", err, "in", backoff)
			select {
			case <-m.ctx.Done():
				return
			case <-m.cfg.Clock.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		index = resp.Meta.Index
		r := &roots{index: index}
		for _, root := range resp.CARoots {
			if root.Active {
				r.activeID = root.ID
				r.keyType, r.keyBits = root.PrivateKeyType, root.PrivateKeyBits
				r.intermediates = root.IntermediateCerts
			}
		}
		if resp.CAConfig != nil && resp.CAConfig.ClusterID != "" {
			r.trustDomain = connect.TrustDomain(resp.CAConfig.ClusterID)
		}
		if r.activeID == "" || r.trustDomain == "" {
			continue
		}
		m.mu.Lock()
		if m.roots == nil || m.roots.activeID != r.activeID || m.roots.index != r.index {
			m.roots = r
			close(m.rootsCh)
			m.rootsCh = make(chan struct{})
			// Renew the leaves waiting for roots and those of another
			// active root.
			for service, e := range m.leaves {
				if e.waitingRoots || (e.leaf != nil && e.leaf.RootID != r.activeID) {
					e.waitingRoots = false
					if e.timer != nil {
						e.timer.Stop()
					}
					m.kickLocked(service, e)
				}
			}
		}
		m.mu.Unlock()
	}
}

// kickLocked starts a renewal of the service's leaf on a goroutine of its
// own, unless one runs (it then runs once more) or the manager closed.
func (m *Manager) kickLocked(service string, e *entry) {
	if m.closed {
		return
	}
	if e.signing {
		e.again = true
		return
	}
	e.signing = true
	m.wg.Add(1)
	go m.renew(service, e)
}

func (m *Manager) kick(service string, e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kickLocked(service, e)
}

// renew signs a new leaf for the service and arms the timer of the next
// renewal (or of the retry, after a failure). With no roots known yet, it
// leaves the entry to watchRoots.
func (m *Manager) renew(service string, e *entry) {
	defer m.wg.Done()
	m.mu.Lock()
	r := m.roots
	if r == nil {
		e.signing, e.again, e.waitingRoots = false, false, true
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	leaf, err := m.sign(service, e, r)
	m.mu.Lock()
	if err != nil {
		e.err = err
	} else {
		if e.leaf != nil {
			leaf.CreateIndex = e.leaf.CreateIndex
			leaf.ModifyIndex = max(leaf.ModifyIndex, e.leaf.ModifyIndex+1)
		} else {
			leaf.CreateIndex = leaf.ModifyIndex
		}
		e.leaf, e.err = leaf, nil
	}
	close(e.ch)
	e.ch = make(chan struct{})
	fns := make([]func(), 0, len(e.listeners))
	for fn := range e.listeners {
		fns = append(fns, *fn)
	}
	// Once more at once when asked meanwhile, or when the active root
	// changed under the signing.
	again := e.again || (err == nil && m.roots != nil && m.roots.activeID != leaf.RootID)
	e.signing, e.again = false, false
	if e.backoff == 0 {
		e.backoff = time.Second
	}
	wait := e.backoff
	at := m.cfg.Clock.Now().Add(wait)
	if err != nil {
		e.backoff = min(2*e.backoff, 30*time.Second)
	} else {
		e.backoff = time.Second
		at = leaf.RenewAt
	}
	m.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	if m.ctx.Err() != nil {
		return
	}
	if err != nil {
		m.cfg.Logger.Warn("signing a leaf certificate failed, retrying", "service", service, "error", err, "in", wait)
	}
	if again {
		m.kick(service, e)
		return
	}
	m.schedule(service, e, at)
}

// schedule arms the entry's timer to renew its leaf at at. The delay is
// taken from the clock right before the timer is armed: computed earlier,
// a clock that moved meanwhile (a fake one in tests, a stalled goroutine)
// would put the renewal late.
func (m *Manager) schedule(service string, e *entry, at time.Time) {
	// Made without the lock: a fake clock may fire it at once.
	t := m.cfg.Clock.AfterFunc(max(at.Sub(m.cfg.Clock.Now()), 0), func() { m.kick(service, e) })
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		t.Stop()
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	e.timer = t
}

// sign makes a key and CSR for service and has a server sign it.
func (m *Manager) sign(service string, e *entry, r *roots) (*Leaf, error) {
	id := connect.ServiceID(r.trustDomain, m.cfg.Datacenter, service)
	csr, keyPEM, err := connect.NewLeafCSR(id, r.keyType, r.keyBits)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	m.mu.Lock()
	if e.hasToken {
		ctx = server.WithToken(ctx, e.token)
	}
	m.mu.Unlock()
	resp, err := m.cfg.Signer.SignLeaf(ctx, &server.SignLeafRequest{Service: service, CSR: csr})
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %q: %w", service, err)
	}
	chain := resp.Leaf.CertPEM
	if resp.RootID == r.activeID {
		for _, ic := range r.intermediates {
			chain += ic
		}
	}
	return &Leaf{
		SerialNumber:  resp.Leaf.SerialNumber,
		CertPEM:       chain,
		PrivateKeyPEM: keyPEM,
		Service:       service,
		ServiceURI:    resp.ServiceURI,
		ValidAfter:    resp.Leaf.ValidAfter,
		ValidBefore:   resp.Leaf.ValidBefore,
		ModifyIndex:   max(resp.RootsIndex, 1),
		RootID:        resp.RootID,
		// From now rather than ValidAfter, which the CA backdates to
		// absorb clock skew: the jitter spreads over the life ahead.
		RenewAt: connect.RenewAt(m.cfg.Clock.Now(), resp.Leaf.ValidBefore, m.cfg.Jitter()),
	}, nil
}
