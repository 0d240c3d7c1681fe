package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
)

// aclWatchWait is the server-side wait of the token cache's blocking query,
// shorter than the resolver's WatchTimeout.
const aclWatchWait = time.Minute

// aclSource reads ACL state for the agent's token cache through the
// backend: the local server on a server agent, RPC on a client agent.
type aclSource struct {
	read func(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
}

// ResolveToken implements acl.Source.
func (s aclSource) ResolveToken(ctx context.Context, secret string) (*acl.ResolvedToken, error) {
	resp, err := s.read(ctx, &catalog.ReadRequest{Op: catalog.ReadACLResolve, Name: secret})
	if err != nil {
		return nil, fmt.Errorf("resolve token: %w", err)
	}
	out := &acl.ResolvedToken{Index: resp.Meta.Index, Policies: resp.ACLPolicies, Roles: resp.ACLRoles}
	if len(resp.ACLTokens) > 0 {
		out.Token = resp.ACLTokens[0]
	}
	return out, nil
}

// WaitACLIndex implements acl.Source with a blocking query.
func (s aclSource) WaitACLIndex(ctx context.Context, minIndex uint64) (uint64, error) {
	resp, err := s.read(ctx, &catalog.ReadRequest{Op: catalog.ReadACLIndex, Options: catalog.QueryOptions{
		MinQueryIndex: minIndex, MaxQueryTime: aclWatchWait,
	}})
	if err != nil {
		return 0, fmt.Errorf("watch ACL index: %w", err)
	}
	return resp.Meta.Index, nil
}

// setupACLs replaces the allow-all resolver with the caching one when ACLs
// are enabled; runACLs starts the watch that keeps it fresh.
func (a *Agent) setupACLs() error {
	if !a.cfg.ACL.Enabled {
		return nil
	}
	toks := a.tokens
	r := acl.NewCachingResolver(acl.ResolverConfig{
		Source:     aclSource{read: a.backend.Read},
		Datacenter: a.cfg.Datacenter,
		Options: acl.PolicyOptions{
			DefaultAllow:  a.cfg.ACL.DefaultPolicy != "deny",
			EnableKeyList: a.cfg.ACL.EnableKeyListPolicy,
		},
		DefaultToken:  toks.cur.Default,
		DownPolicy:    a.cfg.ACL.DownPolicy,
		AgentRecovery: toks.cur.AgentRecovery,
		NodeName:      a.cfg.NodeName,
		TokenTTL:      a.cfg.ACL.TokenTTL,
		FetchTimeout:  a.cfg.RPCHoldTimeout,
		Logger:        a.logger.Named("acl"),
	})
	a.acls = r
	return nil
}

// loadTokens loads the agent's own tokens (ACLs enabled), before the
// server or the client that sends them exists.
func (a *Agent) loadTokens() error {
	if !a.cfg.ACL.Enabled {
		return nil
	}
	toks, err := a.loadAgentTokens()
	if err != nil {
		return err
	}
	a.tokens = toks
	return nil
}

// agentToken is the token of the agent's own requests to the servers
// (anti-entropy, node registration, its views): acl.tokens.agent, else
// acl.tokens.default, as Consul uses them; "" is the anonymous token.
func (a *Agent) agentToken() string {
	if a.tokens == nil {
		return ""
	}
	a.tokens.mu.Lock()
	defer a.tokens.mu.Unlock()
	if a.tokens.cur.Agent != "" {
		return a.tokens.cur.Agent
	}
	return a.tokens.cur.Default
}

// syncToken describes the agent's token for anti-entropy's refusal log
// line: its setting and its Authorizer (local.SyncToken).
func (a *Agent) syncToken() (string, acl.Authorizer, error) {
	a.tokens.mu.Lock()
	setting, secret := "acl.tokens.agent", a.tokens.cur.Agent
	if secret == "" {
		setting, secret = "acl.tokens.default", a.tokens.cur.Default
	}
	a.tokens.mu.Unlock()
	if secret == "" {
		setting, secret = "anonymous", catalog.ACLAnonymousTokenSecret
	}
	authz, err := a.acls.Resolve(secret)
	return setting, authz, err
}

// agentTokenBackend gives the calls of the agent's own routines (here
// anti-entropy) the agent's token when they carry none.
type agentTokenBackend struct {
	inner interface {
		Apply(ctx context.Context, t catalog.CommandType, body any) (any, error)
		Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error)
	}
	token func() string
}

func (b agentTokenBackend) withToken(ctx context.Context) context.Context {
	if _, ok := server.TokenFrom(ctx); ok {
		return ctx
	}
	return server.WithToken(ctx, b.token())
}

// Apply implements local.Backend.
func (b agentTokenBackend) Apply(ctx context.Context, t catalog.CommandType, body any) (any, error) {
	return b.inner.Apply(b.withToken(ctx), t, body)
}

// Read implements local.Backend.
func (b agentTokenBackend) Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	return b.inner.Read(b.withToken(ctx), req)
}

// runACLs starts the token cache's watch, owned by the agent's wait group.
func (a *Agent) runACLs() {
	r, ok := a.acls.(*acl.CachingResolver)
	if !ok {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		r.Run(a.ctx)
	}()
}
