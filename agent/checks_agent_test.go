package agent_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// checkStatus returns the catalog status of a check, "" when missing.
func checkStatus(c *api.Client, service, checkID string) string {
	checks, _, err := c.Health().Checks(service, nil)
	if err != nil {
		return ""
	}
	for _, ch := range checks {
		if ch.CheckID == checkID {
			return ch.Status
		}
	}
	return ""
}

func TestAgentRunsHTTPAndTCPChecks(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 80,
		Checks: api.AgentServiceChecks{
			{CheckID: "web-http", HTTP: srv.URL, Interval: "1s", Timeout: "1s"},
			{CheckID: "web-tcp", TCP: srv.Listener.Addr().String(), Interval: "1s"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		code   int32
		status string
	}{{200, api.HealthPassing}, {429, api.HealthWarning}, {503, api.HealthCritical}, {200, api.HealthPassing}} {
		code.Store(want.code)
		wait.For(t, 15*time.Second, func() error {
			if s := checkStatus(c, "web", "web-http"); s != want.status {
				return fmt.Errorf("status %q", s)
			}
			return nil
		})
	}
	wait.For(t, 15*time.Second, func() error {
		if s := checkStatus(c, "web", "web-tcp"); s != api.HealthPassing {
			return fmt.Errorf("status %q", s)
		}
		return nil
	})
	// Output reaches the catalog.
	checks, _, _ := c.Health().Checks("web", nil)
	for _, ch := range checks {
		if ch.CheckID == "web-http" && !strings.Contains(ch.Output, "hello") {
			t.Fatalf("HTTP check output %q", ch.Output)
		}
	}
}

func TestAgentTCPCheckClosedPortCritical(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := c.Agent().CheckRegister(&api.AgentCheckRegistration{ID: "closed", Name: "closed",
		AgentServiceCheck: api.AgentServiceCheck{TCP: addr, Interval: "1s", Timeout: "500ms", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, func() error {
		checks, err := c.Agent().Checks()
		if err != nil {
			return err
		}
		if ch := checks["closed"]; ch == nil || ch.Status != api.HealthCritical {
			return fmt.Errorf("check %+v", ch)
		}
		return nil
	})
}

func TestScriptChecksRefusedWhenDisabled(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	err := c.Agent().CheckRegister(&api.AgentCheckRegistration{ID: "script", Name: "script",
		AgentServiceCheck: api.AgentServiceCheck{Args: []string{"true"}, Interval: "1s"}})
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "enable_script_checks") {
		t.Fatalf("script check when disabled: %v", err)
	}
	checks, _ := c.Agent().Checks()
	if _, ok := checks["script"]; ok {
		t.Fatal("refused script check was registered")
	}
}

func TestScriptCheckRunsWhenEnabled(t *testing.T) {
	cfg := agenttest.Config(t)
	cfg.EnableScriptChecks = true
	a := agenttest.Start(t, cfg)
	c := apiClient(t, a)
	for _, tc := range []struct {
		args   []string
		status string
	}{{[]string{"sh", "-c", "exit 0"}, api.HealthPassing}, {[]string{"sh", "-c", "echo warn; exit 1"}, api.HealthWarning}, {[]string{"sh", "-c", "exit 2"}, api.HealthCritical}} {
		id := "script-" + tc.status
		if err := c.Agent().CheckRegister(&api.AgentCheckRegistration{ID: id, Name: id,
			AgentServiceCheck: api.AgentServiceCheck{Args: tc.args, Interval: "1s"}}); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 15*time.Second, func() error {
			checks, err := c.Agent().Checks()
			if err != nil {
				return err
			}
			if ch := checks[id]; ch == nil || ch.Status != tc.status {
				return fmt.Errorf("check %+v", ch)
			}
			return nil
		})
	}
}

func TestAliasCheckFollowsService(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "db", Port: 5432,
		Check: &api.AgentServiceCheck{CheckID: "db-ttl", TTL: "60s", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "db-proxy", Port: 6432,
		Check: &api.AgentServiceCheck{CheckID: "db-alias", AliasService: "db"}}); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{api.HealthPassing, api.HealthCritical, api.HealthPassing} {
		if err := c.Agent().UpdateTTL("db-ttl", "", st); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 15*time.Second, func() error {
			if s := checkStatus(c, "db-proxy", "db-alias"); s != st {
				return fmt.Errorf("alias %q", s)
			}
			return nil
		})
	}
}

func TestMaintenanceMode(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "api", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().EnableServiceMaintenance("api", "deploy"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		entries, _, err := c.Health().Service("api", "", true, nil)
		if err != nil || len(entries) != 0 {
			return fmt.Errorf("passing entries %d %v", len(entries), err)
		}
		if s := checkStatus(c, "api", "_service_maintenance:api"); s != api.HealthCritical {
			return fmt.Errorf("maintenance check %q", s)
		}
		return nil
	})
	if err := c.Agent().DisableServiceMaintenance("api"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		entries, _, err := c.Health().Service("api", "", true, nil)
		if err != nil || len(entries) != 1 {
			return fmt.Errorf("passing entries %d %v", len(entries), err)
		}
		return nil
	})
	if err := c.Agent().EnableNodeMaintenance(""); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		entries, _, err := c.Health().Service("api", "", true, nil)
		if err != nil || len(entries) != 0 {
			return fmt.Errorf("passing entries %d %v", len(entries), err)
		}
		return nil
	})
}

func TestDeregisterCriticalServiceAfter(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "flaky", Port: 1,
		Check: &api.AgentServiceCheck{TTL: "30s", DeregisterCriticalServiceAfter: "1s"}}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 15*time.Second, func() error {
		svcs, err := c.Agent().Services()
		if err != nil {
			return err
		}
		if _, ok := svcs["flaky"]; ok {
			return fmt.Errorf("still registered")
		}
		return nil
	})
}
