package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tribune-mesh/tribune/acl"
)

// aclTokensFile is where the tokens set through /v1/agent/token are kept
// with acl.enable_token_persistence, as Consul names it.
const aclTokensFile = "acl-tokens.json"

// persistedTokens is the file's content.
type persistedTokens struct {
	Agent         string `json:"agent,omitempty"`
	AgentRecovery string `json:"agent_recovery,omitempty"`
	Default       string `json:"default,omitempty"`
	Replication   string `json:"replication,omitempty"`
	// ConfigFileRegistration is config_file_service_registration.
	ConfigFileRegistration string `json:"config_file_service_registration,omitempty"`
}

// errUnknownTokenKind is returned for a token kind the agent does not have.
var errUnknownTokenKind = errors.New("unknown token kind")

// agentTokens holds the agent's own tokens, changed through the API and
// persisted when asked to.
type agentTokens struct {
	mu   sync.Mutex
	path string // "" without persistence
	cur  persistedTokens
}

// loadAgentTokens starts from the configured tokens; with persistence, the
// tokens saved by an earlier run win, as with Consul.
func (a *Agent) loadAgentTokens() (*agentTokens, error) {
	t := &agentTokens{cur: persistedTokens{
		Agent: a.cfg.ACL.Tokens.Agent, AgentRecovery: a.cfg.ACL.Tokens.AgentRecovery,
		Default: a.cfg.ACL.Tokens.Default, Replication: a.cfg.ACL.Tokens.Replication,
		ConfigFileRegistration: a.cfg.ACL.Tokens.ConfigFileRegistration,
	}}
	if !a.cfg.ACL.EnableTokenPersistence || a.cfg.DataDir == "" {
		return t, nil
	}
	t.path = filepath.Join(a.cfg.DataDir, aclTokensFile)
	b, err := os.ReadFile(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read persisted ACL tokens: %w", err)
	}
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("persisted ACL tokens %s: file too large", t.path)
	}
	var saved persistedTokens
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("persisted ACL tokens %s: %w", t.path, err)
	}
	for _, p := range []struct {
		dst *string
		v   string
	}{
		{&t.cur.Agent, saved.Agent}, {&t.cur.AgentRecovery, saved.AgentRecovery},
		{&t.cur.Default, saved.Default}, {&t.cur.Replication, saved.Replication},
		{&t.cur.ConfigFileRegistration, saved.ConfigFileRegistration},
	} {
		if p.v != "" {
			*p.dst = p.v
		}
	}
	return t, nil
}

// set changes one token and persists the set; kind is Consul's name
// (default, agent, agent_recovery, replication, or a legacy acl_* name).
func (t *agentTokens) set(kind, secret string, saved func(persistedTokens)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := t.cur
	switch kind {
	case "default", "acl_token":
		next.Default = secret
	case "agent", "acl_agent_token":
		next.Agent = secret
	case "agent_recovery", "agent_master", "acl_agent_master_token":
		next.AgentRecovery = secret
	case "replication", "acl_replication_token":
		next.Replication = secret
	case "config_file_service_registration":
		next.ConfigFileRegistration = secret
	default:
		return fmt.Errorf("%w %q", errUnknownTokenKind, kind)
	}
	if t.path != "" {
		b, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode ACL tokens: %w", err)
		}
		tmp := t.path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return fmt.Errorf("persist ACL tokens: %w", err)
		}
		if err := os.Rename(tmp, t.path); err != nil {
			return fmt.Errorf("persist ACL tokens: %w", err)
		}
	}
	t.cur = next
	saved(next)
	return nil
}

// SetACLToken implements the agent side of PUT /v1/agent/token/<kind>.
func (c apiControl) SetACLToken(kind, secret string) error {
	a := c.a
	r, ok := a.acls.(*acl.CachingResolver)
	if !ok || a.tokens == nil {
		return errors.New("ACL support disabled")
	}
	return a.tokens.set(kind, secret, func(p persistedTokens) {
		r.SetDefaultToken(p.Default)
		r.SetAgentRecoveryToken(p.AgentRecovery)
	})
}
