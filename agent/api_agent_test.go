package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

func TestAPIAgent_SelfMembers(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	name, _ := self["Config"]["NodeName"].(string)
	if !strings.HasPrefix(name, "test-") {
		t.Fatalf("Config.NodeName = %q", name)
	}
	if dc, _ := self["Config"]["Datacenter"].(string); dc != "dc1" {
		t.Fatalf("Config.Datacenter = %q", dc)
	}
	if srv, _ := self["Config"]["Server"].(bool); !srv {
		t.Fatal("Config.Server false on a dev agent")
	}
	nodeName, err := c.Agent().NodeName()
	if err != nil || nodeName != name {
		t.Fatalf("Agent().NodeName() = %q, %v; want %q", nodeName, err, name)
	}

	members, err := c.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	var me *api.AgentMember
	for _, m := range members {
		if m.Name == name {
			me = m
		}
	}
	if me == nil {
		t.Fatalf("members %v lack %s", members, name)
	}
	if me.Status != 1 /* serf StatusAlive */ || me.Addr != "127.0.0.1" || me.Tags["role"] != "consul" ||
		me.Tags["dc"] != "dc1" {
		t.Fatalf("self member = %+v", me)
	}
}

// waitHealthStatus waits until the health of service name on node shows
// check checkID in status want.
func waitHealthStatus(t *testing.T, c *api.Client, service, checkID, want string) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		es, _, err := c.Health().Service(service, "", false, nil)
		if err != nil {
			return err
		}
		for _, e := range es {
			for _, ch := range e.Checks {
				if ch.CheckID == checkID {
					if ch.Status == want {
						return nil
					}
					return fmt.Errorf("check %s is %s in health/service/%s", checkID, ch.Status, service)
				}
			}
		}
		return fmt.Errorf("check %s not in health/service/%s", checkID, service)
	})
}

func agentCheckStatus(t *testing.T, c *api.Client, id string) string {
	t.Helper()
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if checks[id] == nil {
		return ""
	}
	return checks[id].Status
}

func TestAPIAgent_ServiceTTLLifecycle(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	node := selfNode(t, c)

	err := ag.ServiceRegister(&api.AgentServiceRegistration{
		ID: "api-1", Name: "api", Tags: []string{"blue"}, Port: 9090, Meta: map[string]string{"team": "x"},
		Check: &api.AgentServiceCheck{CheckID: "api-ttl", Name: "api ttl", TTL: "30s"},
	})
	if err != nil {
		t.Fatal(err)
	}

	// Local view, at once.
	svcs, err := ag.Services()
	if err != nil {
		t.Fatal(err)
	}
	s := svcs["api-1"]
	if s == nil || s.Service != "api" || s.Port != 9090 || len(s.Tags) != 1 || s.Tags[0] != "blue" || s.Meta["team"] != "x" {
		t.Fatalf("agent services[api-1] = %+v", s)
	}
	got, _, err := ag.Service("api-1", nil)
	if err != nil || got.ID != "api-1" || got.Port != 9090 {
		t.Fatalf("agent service api-1 = %+v, %v", got, err)
	}
	checks, err := ag.Checks()
	if err != nil {
		t.Fatal(err)
	}
	chk := checks["api-ttl"]
	if chk == nil || chk.ServiceID != "api-1" || chk.ServiceName != "api" || chk.Status != api.HealthCritical ||
		chk.Type != "ttl" {
		t.Fatalf("agent checks[api-ttl] = %+v (a new TTL check starts critical)", chk)
	}

	// Anti-entropy puts it in the catalog.
	wait.For(t, 10*time.Second, func() error {
		cs, _, err := c.Catalog().Service("api", "", nil)
		if err != nil {
			return err
		}
		if len(cs) != 1 || cs[0].ServiceID != "api-1" || cs[0].Node != node || cs[0].ServicePort != 9090 {
			return fmt.Errorf("catalog service api = %+v", cs)
		}
		return nil
	})
	waitHealthStatus(t, c, "api", "api-ttl", api.HealthCritical)
	if es, _, err := c.Health().Service("api", "", true, nil); err != nil || len(es) != 0 {
		t.Fatalf("passing api while its TTL check is critical = %v, %v", serviceIDs(es), err)
	}

	// PassTTL -> passing everywhere.
	if err := ag.PassTTL("api-ttl", "all good"); err != nil {
		t.Fatal(err)
	}
	if st := agentCheckStatus(t, c, "api-ttl"); st != api.HealthPassing {
		t.Fatalf("agent check after PassTTL = %s", st)
	}
	waitHealthStatus(t, c, "api", "api-ttl", api.HealthPassing)
	wait.For(t, 10*time.Second, func() error {
		es, _, err := c.Health().Service("api", "", true, nil)
		if err != nil || len(es) != 1 {
			return fmt.Errorf("passing api = %v, %v", serviceIDs(es), err)
		}
		for _, ch := range es[0].Checks {
			if ch.CheckID == "api-ttl" && ch.Output != "all good" {
				return fmt.Errorf("output %q, want the note", ch.Output)
			}
		}
		return nil
	})

	// UpdateTTL warning with output.
	if err := ag.UpdateTTL("api-ttl", "slow", api.HealthWarning); err != nil {
		t.Fatal(err)
	}
	waitHealthStatus(t, c, "api", "api-ttl", api.HealthWarning)
	wait.For(t, 10*time.Second, func() error {
		hc, _, err := c.Health().Checks("api", nil)
		if err != nil || len(hc) != 1 || hc[0].Output != "slow" || hc[0].Status != api.HealthWarning {
			return fmt.Errorf("health checks api = %+v, %v", hc, err)
		}
		return nil
	})

	// FailTTL -> critical.
	if err := ag.FailTTL("api-ttl", "broken"); err != nil {
		t.Fatal(err)
	}
	waitHealthStatus(t, c, "api", "api-ttl", api.HealthCritical)
	if err := ag.UpdateTTL("api-ttl", "", "bogus"); err == nil {
		t.Fatal("UpdateTTL with an invalid status succeeded")
	}
	if err := ag.PassTTL("no-such-check", ""); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("PassTTL on unknown check = %v, want 404", err)
	}

	// Deregister removes it from the agent and the catalog.
	if err := ag.ServiceDeregister("api-1"); err != nil {
		t.Fatal(err)
	}
	if svcs, _ := ag.Services(); svcs["api-1"] != nil {
		t.Fatal("service still local after deregistration")
	}
	if st := agentCheckStatus(t, c, "api-ttl"); st != "" {
		t.Fatalf("service check still local after deregistration (%s)", st)
	}
	wait.For(t, 10*time.Second, func() error {
		cs, _, err := c.Catalog().Service("api", "", nil)
		if err != nil || len(cs) != 0 {
			return fmt.Errorf("catalog service api = %d, %v", len(cs), err)
		}
		hc, _, err := c.Health().Node(node, nil)
		if err != nil {
			return err
		}
		for _, ch := range hc {
			if ch.CheckID == "api-ttl" {
				return errors.New("api-ttl still in the catalog")
			}
		}
		return nil
	})
	if err := ag.ServiceDeregister("api-1"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("deregistering an unknown service = %v, want 404", err)
	}
}

func TestAPIAgent_TTLExpiry(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	err := ag.ServiceRegister(&api.AgentServiceRegistration{
		ID: "short", Name: "short",
		Check: &api.AgentServiceCheck{CheckID: "short-ttl", TTL: "1s", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := agentCheckStatus(t, c, "short-ttl"); st != api.HealthPassing {
		t.Fatalf("initial status %q, want passing (Status given)", st)
	}
	// No wait for the catalog here: under load it could outlast the TTL.
	// The catalog must not show critical before the TTL runs out, which
	// the elapsed-time check below asserts.
	passedAt := time.Now()
	if err := ag.PassTTL("short-ttl", "fresh"); err != nil {
		t.Fatal(err)
	}
	waitHealthStatus(t, c, "short", "short-ttl", api.HealthCritical)
	if el := time.Since(passedAt); el < 900*time.Millisecond {
		t.Fatalf("TTL check went critical %v after a pass, before its 1s TTL", el)
	}
	checks, err := ag.Checks()
	if err != nil {
		t.Fatal(err)
	}
	if c := checks["short-ttl"]; c == nil || c.Status != api.HealthCritical || !strings.Contains(c.Output, "TTL expired") {
		t.Fatalf("expired check = %+v", c)
	}
	// A pass revives it.
	if err := ag.PassTTL("short-ttl", "back"); err != nil {
		t.Fatal(err)
	}
	if st := agentCheckStatus(t, c, "short-ttl"); st != api.HealthPassing {
		t.Fatalf("status after reviving pass = %q", st)
	}
}

func TestAPIAgent_NodeCheck(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	node := selfNode(t, c)
	err := ag.CheckRegister(&api.AgentCheckRegistration{
		ID: "node-ttl", Name: "node ttl", Notes: "maintained by cron",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "30s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	chk := func() *api.HealthCheck {
		hc, _, err := c.Health().Node(node, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hc {
			if h.CheckID == "node-ttl" {
				return h
			}
		}
		return nil
	}
	wait.For(t, 10*time.Second, func() error {
		if h := chk(); h == nil || h.Status != api.HealthCritical || h.ServiceID != "" || h.Notes != "maintained by cron" {
			return fmt.Errorf("node-ttl in catalog = %+v", h)
		}
		return nil
	})
	if err := ag.UpdateTTL("node-ttl", "ok", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		if h := chk(); h == nil || h.Status != api.HealthPassing || h.Output != "ok" {
			return fmt.Errorf("node-ttl in catalog = %+v", h)
		}
		return nil
	})
	// The node check counts toward every service instance on the node.
	if err := ag.ServiceRegister(&api.AgentServiceRegistration{Name: "onnode", Port: 1}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		es, _, err := c.Health().Service("onnode", "", false, nil)
		if err != nil || len(es) != 1 {
			return fmt.Errorf("onnode = %v, %v", serviceIDs(es), err)
		}
		for _, h := range es[0].Checks {
			if h.CheckID == "node-ttl" {
				return nil
			}
		}
		return errors.New("node check missing from the service's health")
	})

	if err := ag.CheckDeregister("node-ttl"); err != nil {
		t.Fatal(err)
	}
	if st := agentCheckStatus(t, c, "node-ttl"); st != "" {
		t.Fatal("check still local after deregistration")
	}
	wait.For(t, 10*time.Second, func() error {
		if h := chk(); h != nil {
			return errors.New("node-ttl still in the catalog")
		}
		return nil
	})
	if err := ag.CheckDeregister("node-ttl"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("deregistering an unknown check = %v, want 404", err)
	}
}

func TestAPIAgent_ServiceMissing(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	s, _, err := c.Agent().Service("nope", nil)
	if err == nil {
		t.Fatalf("Agent().Service(nope) = %+v, want an error", s)
	}
	var se api.StatusError
	if !asStatusError(err, &se) || se.Code != 404 {
		t.Fatalf("Agent().Service(nope) error = %v, want a 404 StatusError", err)
	}
}

func asStatusError(err error, out *api.StatusError) bool {
	return errors.As(err, out)
}

// TestAPIAgent_HealthBlockingOnTTL drives a blocking health query with an
// agent TTL check: a status change of one service's check wakes that
// service's watchers promptly and leaves another service's asleep.
func TestAPIAgent_HealthBlockingOnTTL(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	for _, name := range []string{"alpha", "beta"} {
		err := ag.ServiceRegister(&api.AgentServiceRegistration{
			Name: name, Port: 80,
			Check: &api.AgentServiceCheck{CheckID: name + "-ttl", TTL: "30s"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitHealthStatus(t, c, "alpha", "alpha-ttl", api.HealthCritical)
	waitHealthStatus(t, c, "beta", "beta-ttl", api.HealthCritical)
	h := c.Health()
	_, ma, err := h.Service("alpha", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, mb, err := h.Service("beta", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}

	alphaCh := goBlock(func() ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return h.Service("alpha", "", true, &api.QueryOptions{WaitIndex: ma.LastIndex, WaitTime: 10 * time.Second})
	})
	betaCh := goBlock(func() ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return h.Service("beta", "", false, &api.QueryOptions{WaitIndex: mb.LastIndex, WaitTime: 800 * time.Millisecond})
	})
	time.Sleep(100 * time.Millisecond)
	select {
	case r := <-alphaCh:
		t.Fatalf("alpha query returned before any change: %+v", r)
	default:
	}
	passAt := time.Now()
	if err := ag.PassTTL("alpha-ttl", "up"); err != nil {
		t.Fatal(err)
	}
	ra := recvBlock(t, alphaCh, 5*time.Second)
	if lag := time.Since(passAt); lag > 2*time.Second {
		t.Fatalf("alpha woke %v after PassTTL", lag)
	}
	if ra.meta.LastIndex <= ma.LastIndex {
		t.Fatalf("alpha LastIndex %d, want > %d", ra.meta.LastIndex, ma.LastIndex)
	}
	if len(ra.val) != 1 || ra.val[0].Checks.AggregatedStatus() != api.HealthPassing {
		t.Fatalf("alpha after PassTTL = %v", serviceIDs(ra.val))
	}
	rb := recvBlock(t, betaCh, 5*time.Second)
	if rb.elapsed < 750*time.Millisecond || rb.meta.LastIndex != mb.LastIndex {
		t.Fatalf("beta's watcher woke after %v with index %d (was %d) on alpha's check change",
			rb.elapsed, rb.meta.LastIndex, mb.LastIndex)
	}
}

// TestAPIAgent_ReRegisterDropsOldChecks deregisters a service and registers
// it again at once with another check: the catalog must converge on the new
// definition without the old check (and well before a full sync).
func TestAPIAgent_ReRegisterDropsOldChecks(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	reg := func(check string) {
		t.Helper()
		err := ag.ServiceRegister(&api.AgentServiceRegistration{ID: "re", Name: "re", Port: 1,
			Check: &api.AgentServiceCheck{CheckID: check, TTL: "30s", Status: api.HealthPassing}})
		if err != nil {
			t.Fatal(err)
		}
	}
	reg("re-a")
	waitHealthStatus(t, c, "re", "re-a", api.HealthPassing)
	if err := ag.ServiceDeregister("re"); err != nil {
		t.Fatal(err)
	}
	reg("re-b")
	wait.For(t, 10*time.Second, func() error {
		es, _, err := c.Health().Service("re", "", false, nil)
		if err != nil || len(es) != 1 {
			return fmt.Errorf("health service re = %v, %v", serviceIDs(es), err)
		}
		var ids []string
		for _, h := range es[0].Checks {
			if h.ServiceID != "" {
				ids = append(ids, h.CheckID)
			}
		}
		if len(ids) != 1 || ids[0] != "re-b" {
			return fmt.Errorf("service checks of re = %v, want [re-b]", ids)
		}
		return nil
	})
}

// TestAPIAgent_ReRegisterKeepsCheckStatus re-registers a service with the
// same TTL check: as in Consul, the check keeps its current status and
// output instead of falling back to critical until the next TTL update.
func TestAPIAgent_ReRegisterKeepsCheckStatus(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	reg := func(port int) {
		t.Helper()
		err := ag.ServiceRegister(&api.AgentServiceRegistration{ID: "keep", Name: "keep", Port: port,
			Check: &api.AgentServiceCheck{CheckID: "keep-ttl", TTL: "30s"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	reg(1)
	if err := ag.UpdateTTL("keep-ttl", "healthy", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	waitHealthStatus(t, c, "keep", "keep-ttl", api.HealthPassing)
	reg(2)
	checks, err := ag.Checks()
	if err != nil {
		t.Fatal(err)
	}
	if ch := checks["keep-ttl"]; ch == nil || ch.Status != api.HealthPassing || ch.Output != "healthy" {
		t.Fatalf("check after re-registration = %+v, want passing with its output", ch)
	}
	wait.For(t, 10*time.Second, func() error {
		es, _, err := c.Health().Service("keep", "", true, nil)
		if err != nil || len(es) != 1 || es[0].Service.Port != 2 {
			return fmt.Errorf("passing keep = %v, %v", serviceIDs(es), err)
		}
		return nil
	})
}

// The official client joins the agent to itself from the gossip address of
// /v1/agent/self's DebugConfig (its own test suite does), and reads Stats as
// `consul info` prints them.
func TestAPIAgent_SelfDebugConfigAndStats(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := self["DebugConfig"]["SerfAdvertiseAddrLAN"].(string)
	if !strings.HasPrefix(addr, "tcp://127.0.0.1:") {
		t.Fatalf("DebugConfig.SerfAdvertiseAddrLAN = %q", addr)
	}
	if err := c.Agent().Join(strings.TrimPrefix(addr, "tcp://"), false); err != nil {
		t.Fatalf("join self at %s: %v", addr, err)
	}
	if rpc, _ := self["DebugConfig"]["RPCAdvertiseAddr"].(string); !strings.HasPrefix(rpc, "tcp://127.0.0.1:") {
		t.Fatalf("DebugConfig.RPCAdvertiseAddr = %q", rpc)
	}
	stats, ok := self["Stats"]
	if !ok {
		t.Fatal("no Stats")
	}
	section := func(name string) map[string]any {
		m, _ := stats[name].(map[string]any)
		if m == nil {
			t.Fatalf("Stats has no %s section: %v", name, stats)
		}
		return m
	}
	if v := section("consul")["server"]; v != "true" {
		t.Fatalf("Stats.consul.server = %v", v)
	}
	if v := section("consul")["leader"]; v != "true" {
		t.Fatalf("Stats.consul.leader = %v", v)
	}
	if v := section("raft")["state"]; v != "Leader" {
		t.Fatalf("Stats.raft.state = %v", v)
	}
	if v, _ := section("runtime")["goroutines"].(string); v == "" || v == "0" {
		t.Fatalf("Stats.runtime.goroutines = %q", v)
	}
	if v := section("serf_lan")["members"]; v != "1" {
		t.Fatalf("Stats.serf_lan.members = %v", v)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "counted"}); err != nil {
		t.Fatal(err)
	}
	self, err = c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	agentStats, _ := self["Stats"]["agent"].(map[string]any)
	if agentStats["services"] != "1" {
		t.Fatalf("Stats.agent after one registration = %v", agentStats)
	}
}

// A service registered through the agent is in the catalog when the
// registration answers: the client's tests read it back at once and index
// the answer.
func TestAPIAgent_RegistrationVisibleInCatalogOnReturn(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("svc-%d", i)
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: name, Tags: []string{"bar"},
			Check: &api.AgentServiceCheck{TTL: "15s"}}); err != nil {
			t.Fatal(err)
		}
		checks, _, err := c.Health().Checks(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(checks) != 1 || checks[0].CheckID != "service:"+name || checks[0].Type != "ttl" {
			t.Fatalf("health checks of %s right after registration = %+v", name, checks)
		}
		if err := c.Agent().ServiceDeregister(name); err != nil {
			t.Fatal(err)
		}
		svcs, _, err := c.Catalog().Service(name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(svcs) != 0 {
			t.Fatalf("catalog still has %s right after deregistration: %+v", name, svcs)
		}
	}
}

// /v1/agent/health/service/id/<id> and /name/<name> answer from the agent's
// own checks, with 200/429/503 for passing/warning/critical, and the status
// word alone for ?format=text.
func TestAPIAgent_HealthServiceByIDAndName(t *testing.T) {
	t.Parallel()
	a, c := startAPI(t)
	ag := c.Agent()
	if st, out, err := ag.AgentHealthServiceByID("nope"); err != nil || st != api.HealthCritical || out != nil {
		t.Fatalf("unknown id: %q %+v %v", st, out, err)
	}
	if st, outs, err := ag.AgentHealthServiceByName("nope"); err != nil || st != api.HealthCritical || len(outs) != 0 {
		t.Fatalf("unknown name: %q %+v %v", st, outs, err)
	}
	for _, id := range []string{"bar-1", "bar-2"} {
		if err := ag.ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "bar", Port: 8000,
			Check: &api.AgentServiceCheck{TTL: "15s"}}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(wantID, wantName string) {
		t.Helper()
		st, out, err := ag.AgentHealthServiceByID("bar-1")
		if err != nil || st != wantID || out == nil || out.Service.ID != "bar-1" || len(out.Checks) != 1 ||
			out.AggregatedStatus != wantID {
			t.Fatalf("by id: %q %+v %v; want %s", st, out, err, wantID)
		}
		st, outs, err := ag.AgentHealthServiceByName("bar")
		if err != nil || st != wantName || len(outs) != 2 {
			t.Fatalf("by name: %q %+v %v; want %s", st, outs, err, wantName)
		}
	}
	check(api.HealthCritical, api.HealthCritical)
	if err := ag.PassTTL("service:bar-1", ""); err != nil {
		t.Fatal(err)
	}
	check(api.HealthPassing, api.HealthCritical)
	if err := ag.WarnTTL("service:bar-2", ""); err != nil {
		t.Fatal(err)
	}
	check(api.HealthPassing, api.HealthWarning)
	if err := ag.PassTTL("service:bar-2", ""); err != nil {
		t.Fatal(err)
	}
	check(api.HealthPassing, api.HealthPassing)

	res := httpString(t, a, "GET", "/v1/agent/health/service/id/bar-1?format=text", "")
	if res.code != 200 || res.body != "passing" {
		t.Fatalf("text form: %d %q", res.code, res.body)
	}
	if err := ag.EnableServiceMaintenance("bar-1", "upgrade"); err != nil {
		t.Fatal(err)
	}
	res = httpString(t, a, "GET", "/v1/agent/health/service/id/bar-1?format=text", "")
	if res.code != 503 || res.body != "maintenance" {
		t.Fatalf("text form in maintenance: %d %q", res.code, res.body)
	}
}

// A Docker check registers as on a Consul agent without Docker: shown with
// type docker, and critical, since Tribune never runs its script.
func TestAPIAgent_DockerCheckRegistersCritical(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	cfg.EnableScriptChecks = true
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	ag := c.Agent()
	if err := ag.ServiceRegister(&api.AgentServiceRegistration{Name: "redis"}); err != nil {
		t.Fatal(err)
	}
	err = ag.CheckRegister(&api.AgentCheckRegistration{Name: "redischeck", ServiceID: "redis",
		AgentServiceCheck: api.AgentServiceCheck{DockerContainerID: "f972c95ebf0e", Args: []string{"/bin/true"},
			Shell: "/bin/bash", Interval: "10s"}})
	if err != nil {
		t.Fatal(err)
	}
	checks, err := ag.Checks()
	if err != nil {
		t.Fatal(err)
	}
	ch := checks["redischeck"]
	if ch == nil || ch.ServiceID != "redis" || ch.Type != "docker" || ch.Status != api.HealthCritical || ch.Output == "" {
		t.Fatalf("docker check = %+v", ch)
	}
	// Without args it is refused, as Consul refuses it.
	err = ag.CheckRegister(&api.AgentCheckRegistration{Name: "bad", AgentServiceCheck: api.AgentServiceCheck{
		DockerContainerID: "f972c95ebf0e", Interval: "10s"}})
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("docker check without args: %v", err)
	}
}

// /v1/agent/service/<id> blocks on ?hash= until the definition changes (the
// agent_service watch of the official client relies on it), and returns the
// same hash when the wait ends without a change.
func TestAPIAgent_ServiceBlocksOnHash(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	reg := &api.AgentServiceRegistration{Name: "web", Port: 8080}
	if err := ag.ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	svc, meta, err := ag.Service("web", nil)
	if err != nil || meta.LastContentHash == "" || svc.ContentHash != meta.LastContentHash {
		t.Fatalf("first read: %+v %+v %v", svc, meta, err)
	}
	first := meta.LastContentHash

	idle := recvBlock(t, goBlock(func() (*api.AgentService, *api.QueryMeta, error) {
		return ag.Service("web", &api.QueryOptions{WaitHash: first, WaitTime: 300 * time.Millisecond})
	}), 10*time.Second)
	if idle.meta.LastContentHash != first || idle.elapsed < 250*time.Millisecond {
		t.Fatalf("unchanged wait: hash %q after %v", idle.meta.LastContentHash, idle.elapsed)
	}

	ch := goBlock(func() (*api.AgentService, *api.QueryMeta, error) {
		return ag.Service("web", &api.QueryOptions{WaitHash: first, WaitTime: time.Minute})
	})
	select {
	case r := <-ch:
		t.Fatalf("returned before any change: %+v %v", r.val, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	reg.Port = 9090
	if err := ag.ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	got := recvBlock(t, ch, 10*time.Second)
	if got.val.Port != 9090 || got.meta.LastContentHash == first {
		t.Fatalf("after the change: port %d hash %q", got.val.Port, got.meta.LastContentHash)
	}
}

// ?replace-existing-checks drops the checks a re-registered service no
// longer names; without it they stay.
func TestAPIAgent_ReplaceExistingChecks(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	reg := &api.AgentServiceRegistration{ID: "foo", Name: "foo", Port: 8000, Check: &api.AgentServiceCheck{TTL: "15s"}}
	if err := ag.ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	plain := &api.AgentServiceRegistration{ID: "foo", Name: "foo", Port: 9000}
	if err := ag.ServiceRegister(plain); err != nil {
		t.Fatal(err)
	}
	if checks, err := ag.Checks(); err != nil || checks["service:foo"] == nil {
		t.Fatalf("check gone without replace-existing-checks: %v %v", checks, err)
	}
	if err := ag.ServiceRegisterOpts(plain, api.ServiceRegisterOpts{ReplaceExistingChecks: true}); err != nil {
		t.Fatal(err)
	}
	if checks, err := ag.Checks(); err != nil || len(checks) != 0 {
		t.Fatalf("checks after replace-existing-checks: %v %v", checks, err)
	}
	// The catalog follows: the answer came after the sync.
	if hc, _, err := c.Health().Checks("foo", nil); err != nil || len(hc) != 0 {
		t.Fatalf("catalog checks of foo: %+v %v", hc, err)
	}
}

// /v1/agent/host describes the machine with the time of collection.
func TestAPIAgent_Host(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	host, err := c.Agent().Host()
	if err != nil {
		t.Fatal(err)
	}
	if host["CollectionTime"] == nil || host["Host"] == nil || host["CPU"] == nil {
		t.Fatalf("host = %v", host)
	}
	if errs, _ := host["Errors"].([]any); len(errs) != 0 && runtime.GOOS == "linux" {
		t.Fatalf("errors collecting host facts on linux: %v", errs)
	}
	mem, _ := host["Memory"].(map[string]any)
	if total, _ := mem["total"].(float64); runtime.GOOS == "linux" && total <= 0 {
		t.Fatalf("memory = %v", mem)
	}
}

// /debug/pprof/* answers Go's profiles with enable_debug, and does not exist
// without it (ACLs off).
func TestAPIAgent_DebugPprof(t *testing.T) {
	t.Parallel()
	cfg := agenttest.Config(t)
	cfg.EnableDebug = true
	a := agenttest.Start(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	heap, err := c.Debug().Heap()
	if err != nil || len(heap) == 0 {
		t.Fatalf("heap: %d bytes, %v", len(heap), err)
	}
	gr, err := c.Debug().Goroutine()
	if err != nil || len(gr) == 0 {
		t.Fatalf("goroutine: %d bytes, %v", len(gr), err)
	}
	if res := httpString(t, a, "GET", "/debug/pprof/profile?seconds=100000", ""); res.code != 400 {
		t.Fatalf("unbounded profile: %d %s", res.code, res.body)
	}

	off, _ := startAPI(t)
	if res := httpString(t, off, "GET", "/debug/pprof/heap", ""); res.code != 404 {
		t.Fatalf("heap without enable_debug: %d", res.code)
	}
}

// A service's socket path and locality (Consul 1.16 fields) are kept by the
// agent and reach the catalog.
func TestAPIAgent_ServiceSocketPathAndLocality(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	loc := &api.Locality{Region: "us-west-1", Zone: "us-west-1a"}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "foo1", Name: "foo", Tags: []string{"bar"},
		SocketPath: "/tmp/foo.sock", Locality: loc}); err != nil {
		t.Fatal(err)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if s := svcs["foo1"]; s == nil || s.SocketPath != "/tmp/foo.sock" || !reflect.DeepEqual(s.Locality, loc) || s.Address != "" {
		t.Fatalf("agent service = %+v", s)
	}
	cs, _, err := c.Catalog().Service("foo", "bar", nil)
	if err != nil || len(cs) != 1 || !reflect.DeepEqual(cs[0].ServiceLocality, loc) {
		t.Fatalf("catalog service = %+v, %v", cs, err)
	}
}

// /v1/agent/monitor streams the agent's log lines, as text or JSON.
func TestAPIAgent_Monitor(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	for _, asJSON := range []bool{false, true} {
		stop := make(chan struct{})
		var lines chan string
		var err error
		if asJSON {
			lines, err = c.Agent().MonitorJSON("debug", stop, nil)
		} else {
			lines, err = c.Agent().Monitor("debug", stop, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "redis"}); err != nil {
			t.Fatal(err)
		}
		select {
		case line := <-lines:
			var obj map[string]any
			if asJSON && json.Unmarshal([]byte(line), &obj) != nil {
				t.Fatalf("not a JSON line: %q", line)
			}
			if !asJSON && !strings.Contains(line, "[DEBUG]") && !strings.Contains(line, "[INFO]") {
				t.Fatalf("text line %q", line)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no log line (json %v)", asJSON)
		}
		close(stop)
	}
	if _, err := c.Agent().Monitor("loud", nil, nil); err == nil {
		t.Fatal("unknown log level accepted")
	}
}

// connect.sidecar_service registers the sidecar proxy as a service of its
// own with Consul's defaults, and deregistering the parent removes it.
func TestAPIAgent_SidecarService(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t)
	ag := c.Agent()
	if err := ag.ServiceRegister(&api.AgentServiceRegistration{Name: "foo", Port: 8000, Tags: []string{"t"},
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{}}}); err != nil {
		t.Fatal(err)
	}
	svcs, err := ag.Services()
	if err != nil {
		t.Fatal(err)
	}
	sc := svcs["foo-sidecar-proxy"]
	if svcs["foo"] == nil || sc == nil {
		t.Fatalf("services = %v", svcs)
	}
	if sc.Kind != api.ServiceKindConnectProxy || sc.Service != "foo-sidecar-proxy" || sc.Port < 21000 || sc.Port > 21255 ||
		sc.Proxy == nil || sc.Proxy.DestinationServiceID != "foo" || sc.Proxy.LocalServicePort != 8000 ||
		!reflect.DeepEqual(sc.Tags, []string{"t"}) {
		t.Fatalf("sidecar = %+v (proxy %+v)", sc, sc.Proxy)
	}
	if svcs["foo"].Connect != nil && svcs["foo"].Connect.SidecarService != nil {
		t.Fatalf("parent keeps its sidecar_service: %+v", svcs["foo"].Connect)
	}
	checks, err := ag.Checks()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ch := range checks {
		if ch.ServiceID == "foo-sidecar-proxy" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("sidecar checks: %d of %v", n, checks)
	}
	if cs, _, err := c.Catalog().Service("foo-sidecar-proxy", "", nil); err != nil || len(cs) != 1 {
		t.Fatalf("sidecar in the catalog: %+v %v", cs, err)
	}
	if err := ag.ServiceDeregister("foo"); err != nil {
		t.Fatal(err)
	}
	if svcs, err := ag.Services(); err != nil || len(svcs) != 0 {
		t.Fatalf("services after deregistering the parent: %v %v", svcs, err)
	}
}
