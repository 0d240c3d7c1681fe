package agent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// Anti-entropy writes with acl.tokens.agent. Without it (the anonymous
// token under default_policy deny) the sync is refused and the agent logs
// why, naming the token's AccessorID and the permission it lacks but never
// a secret, once per throttle window however often it retries; with an
// agent token that may write the node and its services, the sync goes
// through.
func TestAntiEntropyWithAgentToken(t *testing.T) {
	cfg := aclConfig(agenttest.Config(t))
	logs := &lockedBuffer{}
	a := startLogged(t, cfg, logs)
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	if err := root.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web1", Name: "web", Port: 80}); err != nil {
		t.Fatal(err)
	}
	const line = "anti-entropy blocked by ACLs"
	wait.For(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), line) {
			return fmt.Errorf("no refusal line yet:\n%s", logs.String())
		}
		return nil
	})
	out := logs.String()
	t.Logf("refusal: %v", linesWith(out, line))
	for _, want := range []string{"token=anonymous", "accessor=00000000-0000-0000-0000-000000000002", "permission=node:write", "resource=" + cfg.NodeName} {
		if !strings.Contains(out, want) {
			t.Fatalf("refusal line without %q:\n%s", want, out)
		}
	}
	// Retries every second do not repeat the line within the window.
	time.Sleep(2500 * time.Millisecond)
	if n := strings.Count(logs.String(), line); n != 1 {
		t.Fatalf("refusal logged %d times in one window:\n%s", n, logs.String())
	}
	if _, _, err := root.Catalog().Service("web", "", nil); err != nil {
		t.Fatal(err)
	}

	agentTok := policyToken(t, root, "agent", fmt.Sprintf(`node %q { policy = "write" }
service_prefix "" { policy = "write" }`, cfg.NodeName))
	if _, err := root.Agent().UpdateAgentACLToken(agentTok, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		svcs, _, err := root.Catalog().Service("web", "", nil)
		if err != nil {
			return err
		}
		if len(svcs) != 1 || svcs[0].Node != cfg.NodeName {
			return fmt.Errorf("web in the catalog: %v", svcs)
		}
		return nil
	})
	for _, secret := range []string{rootSecret, agentTok} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a secret reached the log:\n%s", logs.String())
		}
	}
}
