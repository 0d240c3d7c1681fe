package agenttest

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
)

// StartACL starts a dev agent with ACLs on (default deny) whose initial
// management token is secret, waits until the leader has created that
// token, and returns the agent with an official client holding it.
func StartACL(t testing.TB, secret string) (*agent.Agent, *api.Client) {
	t.Helper()
	cfg := Config(t)
	cfg.ACL.Enabled = true
	cfg.ACL.DefaultPolicy = "deny"
	cfg.ACL.Tokens.InitialManagement = secret
	a := Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Token: secret})
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, _, err := c.ACL().TokenReadSelf(nil)
		if err == nil {
			return a, c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent %s: the management token never resolved: %v", cfg.NodeName, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
