package acl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/catalog"
)

// ResolvedToken is what the servers answer for a secret: the token and
// every policy and role it links, at the ACL tables' index. Token is nil
// when no token has the secret.
type ResolvedToken struct {
	Index    uint64
	Token    *catalog.ACLToken
	Policies []*catalog.ACLPolicy
	Roles    []*catalog.ACLRole
}

// Policy implements Lookup.
func (r *ResolvedToken) Policy(id string) *catalog.ACLPolicy {
	for _, p := range r.Policies {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// Role implements Lookup.
func (r *ResolvedToken) Role(id string) *catalog.ACLRole {
	for _, x := range r.Roles {
		if x.ID == id {
			return x
		}
	}
	return nil
}

// Source is where a CachingResolver reads ACL state: the local server on a
// server agent, an RPC client to the servers on a client agent. Both honour
// ctx and are safe for concurrent use.
type Source interface {
	// ResolveToken returns the token with a SecretID and what it links.
	ResolveToken(ctx context.Context, secret string) (*ResolvedToken, error)
	// WaitACLIndex blocks until the index of the ACL tables exceeds
	// minIndex (or a server-side wait ends) and returns it.
	WaitACLIndex(ctx context.Context, minIndex uint64) (uint64, error)
}

// Down policies (acl.down_policy): what resolution does when the servers
// cannot be reached.
const (
	DownAllow       = "allow"
	DownDeny        = "deny"
	DownExtendCache = "extend-cache"
	DownAsyncCache  = "async-cache"
)

// ResolverConfig configures a CachingResolver.
type ResolverConfig struct {
	// Source reads tokens from the servers.
	Source Source
	// Datacenter and Options are the Compiler's.
	Datacenter string
	Options    PolicyOptions
	// DefaultToken is used for requests without a token
	// (acl.tokens.default); empty means the anonymous token.
	DefaultToken string
	// AgentRecovery is acl.tokens.agent_recovery: a secret resolved on the
	// agent alone, with servers or without, to agent:write on NodeName and
	// node:read on every node.
	AgentRecovery string
	NodeName      string
	// DownPolicy is acl.down_policy.
	DownPolicy string
	// TokenTTL is how long a cached token is trusted while the watch on
	// the ACL tables is failing (acl.token_ttl). While the watch is up, a
	// cached token is trusted until any ACL change.
	TokenTTL time.Duration
	// FetchTimeout bounds one resolution on the servers (the hold timeout).
	FetchTimeout time.Duration
	// MaxEntries bounds the cache; 0 means 65536.
	MaxEntries int
	// WatchTimeout bounds one blocking call of the watch (0: 75s), so a
	// server that vanished without closing the connection is noticed and
	// cached tokens fall back to TokenTTL. The Source's own server-side
	// wait must be shorter (the agent asks for 60s).
	WatchTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards. Secrets are never logged.
	Logger hclog.Logger
}

// CachingResolver resolves secrets into Authorizers through its Source and
// keeps them in memory. Run keeps a blocking query on the ACL tables' index
// open: any change to a token, policy or role drops every cached entry read
// before it, so a deleted token is refused as soon as the servers applied
// the delete (not after token_ttl, as with Consul). It is safe for
// concurrent use.
type CachingResolver struct {
	cfg      ResolverConfig
	compiler *Compiler
	// tokMu guards the tokens /v1/agent/token can change.
	tokMu        sync.Mutex
	defaultToken string
	recoverySec  string
	recovery     Authorizer // the agent recovery token's (nil: none)

	mu sync.Mutex
	// index is the ACL index the watch last saw; entries read at a lower
	// one are stale.
	index   uint64
	entries map[string]*cacheEntry
	// watching is true while the watch on the ACL index is up to date.
	watching bool
	// runCtx is Run's context: the owner of async-cache refreshes
	// (refreshing, one per secret at most, waited for by bg).
	runCtx     context.Context
	refreshing map[string]bool
	bg         sync.WaitGroup
}

type cacheEntry struct {
	index   uint64
	fetched time.Time
	authz   Authorizer // nil: no token has this secret
	expires *time.Time
}

// NewCachingResolver returns a resolver; call Run to keep it fresh.
func NewCachingResolver(cfg ResolverConfig) *CachingResolver {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 7 * time.Second
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 30 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 65536
	}
	if cfg.WatchTimeout <= 0 {
		cfg.WatchTimeout = 75 * time.Second
	}
	if cfg.DownPolicy == "" {
		cfg.DownPolicy = DownExtendCache
	}
	r := &CachingResolver{
		cfg:      cfg,
		compiler: &Compiler{Datacenter: cfg.Datacenter, Options: cfg.Options},
		entries:  map[string]*cacheEntry{},
	}
	r.SetDefaultToken(cfg.DefaultToken)
	r.SetAgentRecoveryToken(cfg.AgentRecovery)
	return r
}

// SetDefaultToken changes the token used for requests without one.
func (r *CachingResolver) SetDefaultToken(secret string) {
	r.tokMu.Lock()
	r.defaultToken = secret
	r.tokMu.Unlock()
}

// DefaultToken returns the token used for requests without one ("" for
// the anonymous token).
func (r *CachingResolver) DefaultToken() string {
	r.tokMu.Lock()
	defer r.tokMu.Unlock()
	return r.defaultToken
}

// SetAgentRecoveryToken changes the agent recovery token ("" disables it).
func (r *CachingResolver) SetAgentRecoveryToken(secret string) {
	var authz Authorizer
	if secret != "" {
		rules, err := ParseRules(fmt.Sprintf("agent %s { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }", strconv.Quote(r.cfg.NodeName)))
		if err != nil {
			r.cfg.Logger.Error("agent_recovery token disabled: node name does not make valid rules", "error", err)
			secret = ""
		} else {
			authz = NewPolicyAuthorizer([]*Rules{rules}, PolicyOptions{})
		}
	}
	r.tokMu.Lock()
	r.recoverySec, r.recovery = secret, authz
	r.tokMu.Unlock()
}

// Resolve implements Resolver with the fetch timeout as its only bound.
func (r *CachingResolver) Resolve(secret string) (Authorizer, error) {
	return r.ResolveContext(context.Background(), secret)
}

// ResolveContext returns the Authorizer of a secret: the default token's
// for "", the anonymous token's for the anonymous secret. An unknown or
// expired secret is an error wrapping ErrNotFound. When the servers cannot
// be reached, down_policy decides.
func (r *CachingResolver) ResolveContext(ctx context.Context, secret string) (Authorizer, error) {
	r.tokMu.Lock()
	dflt, recSecret, recovery := r.defaultToken, r.recoverySec, r.recovery
	r.tokMu.Unlock()
	if secret == "" {
		secret = dflt
	}
	if secret == "" {
		secret = catalog.ACLAnonymousTokenSecret
	}
	now := r.cfg.Now()
	r.mu.Lock()
	e := r.entries[secret]
	watching := r.watching
	fresh := e != nil && (watching || now.Sub(e.fetched) < r.cfg.TokenTTL)
	r.mu.Unlock()
	if recovery != nil && secret == recSecret {
		// The recovery secret may also be a real token (the official
		// client's tests set the management token as agent_recovery too):
		// while the servers answer, a token they know keeps its own rights,
		// as with Consul. Without servers the recovery rights apply at once.
		if watching || fresh {
			if authz, err := r.lookup(ctx, secret, e, fresh, now); err == nil {
				return authz, nil
			}
		}
		return recovery, nil
	}
	authz, err := r.lookup(ctx, secret, e, fresh, now)
	var down *serversDownError
	if errors.As(err, &down) {
		return r.down(e, now, down.cause)
	}
	return authz, err
}

// serversDownError is lookup's error when the servers could not be asked.
type serversDownError struct{ cause error }

func (e *serversDownError) Error() string { return "servers unreachable: " + e.cause.Error() }

// lookup answers a secret from the cache entry e when it is fresh, else from
// the servers, and caches what they say. It returns a *serversDownError
// when the servers could not be reached.
func (r *CachingResolver) lookup(ctx context.Context, secret string, e *cacheEntry, fresh bool, now time.Time) (Authorizer, error) {
	if fresh {
		return e.result(now)
	}
	if e != nil && r.cfg.DownPolicy == DownAsyncCache && r.refreshAsync(secret) {
		// async-cache: answer from the cache at once; the refresh
		// updates it for the next request.
		return e.result(now)
	}
	return r.fetch(ctx, secret, e, now)
}

// refreshAsync starts a background resolution of secret unless one is
// running; false when the resolver is not running (no owner for it).
func (r *CachingResolver) refreshAsync(secret string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runCtx == nil || r.runCtx.Err() != nil {
		return false
	}
	if r.refreshing[secret] {
		return true
	}
	if r.refreshing == nil {
		r.refreshing = map[string]bool{}
	}
	r.refreshing[secret] = true
	ctx := r.runCtx
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		r.mu.Lock()
		e := r.entries[secret]
		r.mu.Unlock()
		_, _ = r.fetch(ctx, secret, e, r.cfg.Now())
		r.mu.Lock()
		delete(r.refreshing, secret)
		r.mu.Unlock()
	}()
	return true
}

// fetch resolves secret on the Source and caches the answer; e is the
// cached entry, if any, that down_policy may fall back on.
func (r *CachingResolver) fetch(ctx context.Context, secret string, e *cacheEntry, now time.Time) (Authorizer, error) {
	fctx, cancel := context.WithTimeout(ctx, r.cfg.FetchTimeout)
	defer cancel()
	res, err := r.cfg.Source.ResolveToken(fctx, secret)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("resolve token: %w", ctx.Err())
		}
		return nil, &serversDownError{cause: err}
	}
	ne := &cacheEntry{index: res.Index, fetched: now}
	tok := res.Token
	if tok == nil && secret == catalog.ACLAnonymousTokenSecret {
		// Before the leader created it, the anonymous token has no
		// policies: default_policy decides everything.
		tok = &catalog.ACLToken{AccessorID: catalog.ACLAnonymousTokenID, SecretID: catalog.ACLAnonymousTokenSecret}
	}
	if tok != nil {
		pa, err := r.compiler.Compile(tok, res, now)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("compile token %s: %w", tok.AccessorID, err)
		default:
			ne.authz = &TokenAuthorizer{PolicyAuthorizer: pa, token: tok}
			ne.expires = tok.ExpirationTime
		}
	}
	r.mu.Lock()
	if res.Index >= r.index {
		if len(r.entries) >= r.cfg.MaxEntries {
			clear(r.entries)
		}
		r.entries[secret] = ne
	}
	r.mu.Unlock()
	return ne.result(now)
}

func (e *cacheEntry) result(now time.Time) (Authorizer, error) {
	if e.authz == nil {
		return nil, ErrNotFound
	}
	if e.expires != nil && !e.expires.IsZero() && !now.Before(*e.expires) {
		return nil, ErrTokenExpired
	}
	return e.authz, nil
}

// down answers when the servers could not be reached.
func (r *CachingResolver) down(e *cacheEntry, now time.Time, cause error) (Authorizer, error) {
	switch r.cfg.DownPolicy {
	case DownAllow:
		return AllowAll(), nil
	case DownExtendCache, DownAsyncCache:
		if e != nil {
			return e.result(now)
		}
	}
	r.cfg.Logger.Warn("cannot resolve token: servers unreachable; down_policy denies", "down_policy", r.cfg.DownPolicy, "error", cause)
	return DenyAll(), nil
}

// Index returns the ACL index the cache is valid at (tests, metrics).
func (r *CachingResolver) Index() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.index
}

// Run keeps the cache fresh until ctx ends: it blocks on the ACL tables'
// index and drops every entry read before each new index.
func (r *CachingResolver) Run(ctx context.Context) {
	r.mu.Lock()
	r.runCtx = ctx
	r.mu.Unlock()
	defer func() {
		// No refresh starts once runCtx is cleared (under mu).
		r.mu.Lock()
		r.runCtx = nil
		r.mu.Unlock()
		r.bg.Wait()
	}()
	var idx uint64
	backoff := 100 * time.Millisecond
	for {
		wctx, cancel := context.WithTimeout(ctx, r.cfg.WatchTimeout)
		next, err := r.cfg.Source.WaitACLIndex(wctx, idx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.mu.Lock()
			r.watching = false
			r.mu.Unlock()
			r.cfg.Logger.Warn("watch of ACL changes failed; cached tokens are trusted for token_ttl", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		r.mu.Lock()
		if next < idx {
			// A snapshot restore moved the index back: nothing cached
			// can be trusted.
			clear(r.entries)
		} else {
			for k, e := range r.entries {
				if e.index < next {
					delete(r.entries, k)
				}
			}
		}
		r.index = next
		r.watching = true
		r.mu.Unlock()
		idx = next
	}
}
