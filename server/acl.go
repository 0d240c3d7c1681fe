package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/catalog"
)

// ACLConfig is what a server needs to know about ACLs.
type ACLConfig struct {
	// Enabled makes the leader create the built-in policy and tokens.
	Enabled bool
	// InitialManagement is acl.tokens.initial_management: the SecretID of
	// a management token the leader creates (by bootstrapping when ACLs
	// were not bootstrapped yet).
	InitialManagement string
	// DefaultPolicy ("allow" or "deny") and EnableKeyListPolicy are
	// acl.default_policy and acl.enable_key_list_policy: the server checks
	// every RPC's token with them.
	DefaultPolicy       string
	EnableKeyListPolicy bool
	// AgentToken returns the token of the server's in-process callers
	// (its agent: acl.tokens.agent) for the calls it forwards to the
	// leader without a token of their own; nil forwards them without one.
	AgentToken func() string
}

// kindACLBootstrapped carries catalog.ErrACLBootstrapped across the RPC.
const kindACLBootstrapped = "acl_bootstrapped"

// aclLeader creates, once per leadership, what ACLs need to exist: the
// global-management policy, the anonymous token and the initial management
// token. It retries until it succeeds or ctx ends (leadership lost).
func (s *Server) aclLeader(ctx context.Context) {
	if !s.config.ACL.Enabled {
		return
	}
	backoff := 100 * time.Millisecond
	for {
		err := s.aclInitBuiltins(ctx)
		if err == nil {
			s.reapExpiredTokens(ctx)
			return
		}
		s.logger.Warn("ACL initialisation failed, retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Server) aclInitBuiltins(ctx context.Context) error {
	st := s.store
	apply := func(t catalog.CommandType, body any, what string) error {
		res, err := s.Apply(ctx, t, body)
		if err != nil {
			return fmt.Errorf("create %s: %w", what, err)
		}
		if e, ok := res.(error); ok && e != nil {
			return fmt.Errorf("create %s: %w", what, e)
		}
		s.logger.Info("created ACL built-in", "what", what)
		return nil
	}
	if _, p, err := st.ACLPolicyGet(nil, catalog.ACLGlobalManagementPolicyID, false); err != nil {
		return err
	} else if p == nil {
		pol := &catalog.ACLPolicy{
			ID: catalog.ACLGlobalManagementPolicyID, Name: catalog.ACLGlobalManagementPolicyName,
			Description: "Builtin Policy that grants unlimited access",
		}
		if err := apply(catalog.CmdACLPolicySet, pol, "global-management policy"); err != nil {
			return err
		}
	}
	if _, p, err := st.ACLPolicyGet(nil, catalog.ACLGlobalReadOnlyPolicyID, false); err != nil {
		return err
	} else if p == nil {
		pol := &catalog.ACLPolicy{
			ID: catalog.ACLGlobalReadOnlyPolicyID, Name: catalog.ACLGlobalReadOnlyPolicyName,
			Description: "Builtin Policy that grants unlimited read-only access to all components",
			Rules:       acl.GlobalReadOnlyRules,
		}
		if err := apply(catalog.CmdACLPolicySet, pol, "global-read-only policy"); err != nil {
			return err
		}
	}
	if _, tok, err := st.ACLTokenGet(nil, catalog.ACLAnonymousTokenID, false); err != nil {
		return err
	} else if tok == nil {
		anon := &catalog.ACLToken{
			AccessorID: catalog.ACLAnonymousTokenID, SecretID: catalog.ACLAnonymousTokenSecret,
			Description: "Anonymous Token", CreateTime: time.Now().UTC(),
		}
		if err := apply(catalog.CmdACLTokenSet, anon, "anonymous token"); err != nil {
			return err
		}
	}
	secret := s.config.ACL.InitialManagement
	if secret == "" {
		return nil
	}
	if _, tok, err := st.ACLTokenGet(nil, secret, true); err != nil || tok != nil {
		return err
	}
	accessor, err := newServerUUID()
	if err != nil {
		return err
	}
	mgmt := &catalog.ACLToken{
		AccessorID: accessor, SecretID: secret, Description: "Initial Management Token",
		Policies:   []catalog.ACLLink{{ID: catalog.ACLGlobalManagementPolicyID}},
		CreateTime: time.Now().UTC(),
	}
	// The first leader bootstraps with it, so that /v1/acl/bootstrap is
	// refused afterwards, as Consul does.
	cmd := catalog.CmdACLBootstrap
	if st.ACLBootstrapIndex(nil) != 0 {
		cmd = catalog.CmdACLTokenSet
	}
	// The secret never reaches the log line: only the accessor does.
	return apply(cmd, mgmt, "initial management token "+accessor)
}

// maxReapSleep bounds how long the reaper sleeps with no token expiring.
const maxReapSleep = time.Hour

// reapExpiredTokens deletes every token whose ExpirationTime has passed,
// waking at the next expiry or at any ACL change, until ctx ends. Agents
// refuse an expired token by themselves; reaping keeps the tables small.
func (s *Server) reapExpiredTokens(ctx context.Context) {
	now := s.clock.Now
	for {
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		_, toks, err := s.store.ACLTokenList(ws, "", "")
		if err != nil {
			s.logger.Error("list tokens to reap", "error", err)
			return
		}
		t := now()
		next := t.Add(maxReapSleep)
		for _, tok := range toks {
			switch {
			case tok.ExpirationTime == nil || tok.ExpirationTime.IsZero():
			case tok.Expired(t):
				res, err := s.Apply(ctx, catalog.CmdACLTokenDelete, &catalog.ACLDeleteRequest{ID: tok.AccessorID})
				if e, ok := res.(error); ok && err == nil {
					err = e
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					s.logger.Warn("reap expired token", "accessor", tok.AccessorID, "error", err)
					continue
				}
				s.logger.Debug("reaped expired token", "accessor", tok.AccessorID)
			case tok.ExpirationTime.Before(next):
				next = *tok.ExpirationTime
			}
		}
		wctx, cancel := context.WithTimeout(ctx, max(next.Sub(t), 10*time.Millisecond))
		_ = ws.WatchCtx(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

func newServerUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate ID: %w", err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}
