package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

// startLogged starts an agent whose warnings go to logs and stops it at
// the end of the test unless the test did.
func startLogged(t *testing.T, cfg *config.Config, logs io.Writer) *agent.Agent {
	t.Helper()
	a, err := agent.New(cfg, hclog.New(&hclog.LoggerOptions{Name: cfg.NodeName, Level: hclog.Warn, Output: logs}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return a
}

// waitCheckStatus waits until the catalog shows a check of service with
// this status.
func waitCheckStatus(t *testing.T, c *api.Client, service, checkID, status string) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		if st, err := catalogCheck(c, service, checkID); err != nil || st != status {
			return fmt.Errorf("%s in the catalog: %q %v, want %q", checkID, st, err, status)
		}
		return nil
	})
}

// startACLAgentWithDataDir starts a single server agent with ACLs deny, a
// data dir and no agent token, and waits for the management token.
func startACLAgentWithDataDir(t *testing.T) (*config.Config, *lockedBuffer, *agent.Agent, *api.Client) {
	t.Helper()
	cfg := aclConfig(agenttest.ClusterConfig(t, "s1", true, 1, ""))
	logs := &lockedBuffer{}
	a := startLogged(t, cfg, logs)
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	return cfg, logs, a, root
}

// catalogCheck returns the status of a check in the catalog ("" if absent).
func catalogCheck(c *api.Client, service, checkID string) (string, error) {
	checks, _, err := c.Health().Checks(service, nil)
	if err != nil {
		return "", err
	}
	for _, ch := range checks {
		if ch.CheckID == checkID {
			return ch.Status, nil
		}
	}
	return "", nil
}

// Issue 11: a service and a check registered through the agent with a token
// are synced to the catalog with that token, as Consul does, not with the
// agent's: this agent has no acl.tokens.agent (the anonymous token, which
// default_policy deny refuses), yet the service appears. A token without
// service:write is refused at registration (403; Consul documents the
// endpoint as needing service:write). The token is never shown by the API,
// is kept with the service in the data dir (0600), and after a restart the
// service and its check are synced with it again; a deregistration through
// the agent uses it too.
func TestServiceSyncedWithRegistrationToken(t *testing.T) {
	cfg, logs, a, root := startACLAgentWithDataDir(t)

	webTok := policyToken(t, root, "web-writer", fmt.Sprintf(`node %q { policy = "write" }
service "web" { policy = "write" }`, cfg.NodeName))
	readTok := policyToken(t, root, "web-reader", `service "web" { policy = "read" }`)
	if err := tokenClient(t, a, readTok).Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web1", Name: "web"}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("registration with a token without service:write: %v, want 403", err)
	}

	web := tokenClient(t, a, webTok)
	if err := web.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web1", Name: "web", Port: 80}); err != nil {
		t.Fatal(err)
	}
	if err := web.Agent().CheckRegister(&api.AgentCheckRegistration{ID: "web-ttl", Name: "web ttl", ServiceID: "web1",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "5m"}}); err != nil {
		t.Fatal(err)
	}
	if err := web.Agent().UpdateTTL("web-ttl", "up", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	waitCheckStatus(t, root, "web", "web-ttl", api.HealthPassing)

	// Never shown: not in the agent's answers about the service.
	for _, path := range []string{"/v1/agent/services", "/v1/agent/service/web1", "/v1/agent/checks"} {
		if body := getBody(t, a, path, rootSecret); strings.Contains(body, webTok) {
			t.Fatalf("%s shows the registration token: %s", path, body)
		}
	}
	// Kept with the service, readable by the agent's user only.
	for _, dir := range []string{"services", "checks"} {
		files, err := os.ReadDir(filepath.Join(cfg.DataDir, dir))
		if err != nil || len(files) != 1 {
			t.Fatalf("%s in the data dir: %v %v", dir, files, err)
		}
		info, err := files[0].Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("%s file mode %v, want 0600", dir, info.Mode().Perm())
		}
	}

	// Restart: the service, its check and their token come back from the
	// data dir; the check starts critical again and that state is synced
	// with the token (the agent's own is still anonymous), then a TTL
	// update is.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b := startLogged(t, cfg, logs)
	root = tokenClient(t, b, rootSecret)
	web = tokenClient(t, b, webTok)
	wait.For(t, 20*time.Second, func() error {
		svcs, err := root.Agent().Services()
		if err != nil {
			return err
		}
		if svcs["web1"] == nil {
			return fmt.Errorf("web1 not registered again: %v", svcs)
		}
		if st, err := catalogCheck(root, "web", "web-ttl"); err != nil || st != api.HealthCritical {
			return fmt.Errorf("web-ttl in the catalog after the restart: %q %v", st, err)
		}
		return nil
	})
	if err := web.Agent().UpdateTTL("web-ttl", "up again", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	waitCheckStatus(t, root, "web", "web-ttl", api.HealthPassing)

	// A maintenance check is synced with the token that enabled it.
	if err := web.Agent().EnableNodeMaintenance("test"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		checks, _, err := root.Health().Node(cfg.NodeName, nil)
		if err != nil {
			return err
		}
		for _, c := range checks {
			if c.CheckID == "_node_maintenance" {
				return nil
			}
		}
		return fmt.Errorf("no maintenance check in the catalog: %v", checks)
	})

	// Deregistration through the agent: the catalog delete is made with
	// the request's token, and the data dir forgets the service.
	if err := web.Agent().ServiceDeregister("web1"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		svcs, _, err := root.Catalog().Service("web", "", nil)
		if err != nil {
			return err
		}
		if len(svcs) != 0 {
			return fmt.Errorf("web still in the catalog: %v", svcs)
		}
		return nil
	})
	for _, dir := range []string{"services", "checks"} {
		if files, _ := os.ReadDir(filepath.Join(cfg.DataDir, dir)); len(files) != 0 {
			t.Fatalf("%s left in the data dir after deregistration: %v", dir, files)
		}
	}
	for _, secret := range []string{rootSecret, webTok, readTok} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a secret reached the log:\n%s", logs.String())
		}
	}
}

// A sync refused with a service's registration token names that token by
// its AccessorID and the permission it lacks (here node:write: the token
// may write the service, which the agent checks, but the servers also ask
// for the node), never the secret.
func TestServiceTokenRefusalLogged(t *testing.T) {
	cfg, logs, a, root := startACLAgentWithDataDir(t)
	pol, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "db-only", Rules: `service "db" { policy = "write" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tokenClient(t, a, tok.SecretID).Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db1", Name: "db"}); err != nil {
		t.Fatal(err)
	}
	const line = "the token a service or check was registered with may not write it"
	wait.For(t, 20*time.Second, func() error {
		if len(linesWith(logs.String(), line, "accessor="+tok.AccessorID)) == 0 {
			return fmt.Errorf("no refusal line naming the token yet:\n%s", logs.String())
		}
		return nil
	})
	got := linesWith(logs.String(), line, "accessor="+tok.AccessorID)[0]
	for _, want := range []string{"permission=node:write", "resource=" + cfg.NodeName, "registration of service db1"} {
		if !strings.Contains(got, want) {
			t.Fatalf("refusal line without %q: %s", want, got)
		}
	}
	if strings.Contains(logs.String(), tok.SecretID) {
		t.Fatalf("the secret reached the log:\n%s", logs.String())
	}
}

func getBody(t *testing.T, a *agent.Agent, path, secret string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+a.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Consul-Token", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", path, resp.StatusCode, err, b)
	}
	return string(b)
}

// A service from the config files without a token of its own is synced
// with acl.tokens.config_file_service_registration (the agent has no
// acl.tokens.agent); the token is created after the agent started, and the
// retried sync goes through once it exists.
func TestConfigServiceSyncedWithConfigFileToken(t *testing.T) {
	const secret = "3b8ee1f4-0000-4000-8000-000000000011"
	cfg := aclConfig(agenttest.Config(t))
	cfg.ACL.Tokens.ConfigFileRegistration = secret
	cfg.Services = []config.ServiceDefinition{{ID: "cfgweb1", Name: "cfgweb", Port: 8080}}
	a := startLogged(t, cfg, io.Discard)
	root := tokenClient(t, a, rootSecret)
	waitManagement(t, root)
	pol, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "cfgweb", Rules: fmt.Sprintf(`node %q { policy = "write" }
service "cfgweb" { policy = "write" }`, cfg.NodeName)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := root.ACL().TokenCreate(&api.ACLToken{SecretID: secret, Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		svcs, _, err := root.Catalog().Service("cfgweb", "", nil)
		if err != nil {
			return err
		}
		if len(svcs) != 1 {
			return fmt.Errorf("cfgweb in the catalog: %v", svcs)
		}
		return nil
	})
}
