package agent_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

func TestReloadAppliesConfigServices(t *testing.T) {
	cfg := agenttest.Config(t)
	cfg.Services = []config.ServiceDefinition{{Name: "alpha", Port: 1}, {Name: "beta", Port: 2}}
	a := agenttest.Start(t, cfg)
	c := apiClient(t, a)
	// An API-registered service is not touched by a reload.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "gamma", Port: 3}); err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.Services = []config.ServiceDefinition{{Name: "beta", Port: 22}, {Name: "delta", Port: 4}}
	a.SetReloader(func() (*config.Config, []string, error) { n := next; return &n, nil, nil })
	if err := c.Agent().Reload(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		svcs, _, err := c.Catalog().Services(nil)
		if err != nil {
			return err
		}
		for _, want := range []string{"beta", "delta", "gamma"} {
			if _, ok := svcs[want]; !ok {
				return fmt.Errorf("missing %s in %v", want, svcs)
			}
		}
		if _, ok := svcs["alpha"]; ok {
			return fmt.Errorf("alpha still registered")
		}
		beta, _, err := c.Catalog().Service("beta", "", nil)
		if err != nil || len(beta) != 1 || beta[0].ServicePort != 22 {
			return fmt.Errorf("beta %v %v", beta, err)
		}
		return nil
	})
}
