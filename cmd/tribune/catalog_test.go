package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

func TestCatalog(t *testing.T) {
	a := agenttest.Start(t, nil)
	addr := "-http-addr=" + a.HTTPAddr()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.HTTPAddr()
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	self, err := client.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	nodeName, _ := self["Config"]["NodeName"].(string)
	nodeID, _ := self["Config"]["NodeID"].(string)
	dc, _ := self["Config"]["Datacenter"].(string)
	if nodeName == "" || len(nodeID) < 8 || dc == "" {
		t.Fatalf("agent self: name %q id %q dc %q", nodeName, nodeID, dc)
	}

	t.Run("datacenters", func(t *testing.T) {
		r := mustExec(t, runCatalogDatacenters, addr)
		if r.stdout != dc+"\n" {
			t.Errorf("stdout = %q, want %q", r.stdout, dc+"\n")
		}
	})

	t.Run("nodes", func(t *testing.T) {
		var r result
		waitFor(t, 10*time.Second, func() (bool, string) {
			r = runCmd(runCatalogNodes, addr)
			return r.code == 0 && strings.Contains(r.stdout, nodeName), r.String()
		})
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if got := strings.Fields(lines[0]); strings.Join(got, " ") != "Node ID Address DC" {
			t.Errorf("header = %q", lines[0])
		}
		row := strings.Fields(lines[1])
		if want := []string{nodeName, nodeID[:8], "127.0.0.1", dc}; strings.Join(row, " ") != strings.Join(want, " ") {
			t.Errorf("row = %q, want %q", row, want)
		}
		r = mustExec(t, runCatalogNodes, addr, "-detailed")
		assertContains(t, "detailed", r.stdout, "TaggedAddresses")
		assertContains(t, "detailed", r.stdout, nodeID)
	})

	reg := &api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 8080, Tags: []string{"v2", "primary"}}
	if err := client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register web: %v", err)
	}
	reg = &api.AgentServiceRegistration{ID: "web-2", Name: "web", Port: 8081, Tags: []string{"v1", "primary"}}
	if err := client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register web-2: %v", err)
	}
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db", Name: "db", Port: 5432}); err != nil {
		t.Fatalf("register db: %v", err)
	}
	// Anti-entropy copies the agent's services to the catalog asynchronously.
	waitFor(t, 15*time.Second, func() (bool, string) {
		r := runCmd(runCatalogServices, addr, "-tags")
		web := false
		for _, line := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "web" && f[1] == "primary,v1,v2" {
				web = true
			}
		}
		return r.code == 0 && strings.Contains(r.stdout, "db") && web, r.String()
	})

	t.Run("services", func(t *testing.T) {
		r := mustExec(t, runCatalogServices, addr)
		names := strings.Split(strings.TrimSpace(r.stdout), "\n")
		want := map[string]bool{"db": true, "web": true}
		for i, n := range names {
			if i > 0 && names[i-1] >= n {
				t.Errorf("services not sorted: %q", names)
			}
			delete(want, n)
		}
		if len(want) > 0 {
			t.Errorf("services %q lack %v", names, want)
		}
	})

	t.Run("services with tags", func(t *testing.T) {
		r := mustExec(t, runCatalogServices, addr, "-tags")
		var web string
		for _, line := range strings.Split(r.stdout, "\n") {
			if strings.HasPrefix(line, "web ") {
				web = line
			}
		}
		if f := strings.Fields(web); len(f) != 2 || f[1] != "primary,v1,v2" {
			t.Errorf("web line = %q, want tags primary,v1,v2", web)
		}
	})

	t.Run("services of a node", func(t *testing.T) {
		r := mustExec(t, runCatalogServices, addr, "-node="+nodeName)
		assertContains(t, "stdout", r.stdout, "db\n")
		assertContains(t, "stdout", r.stdout, "web\n")
		r = mustExec(t, runCatalogServices, addr, "-node=no-such-node")
		if r.stdout != "" || !strings.Contains(r.stderr, "No services match") {
			t.Errorf("unknown node: %v", r)
		}
	})

	t.Run("nodes of a service", func(t *testing.T) {
		r := mustExec(t, runCatalogNodes, addr, "-service=web")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		// Two instances on one node: the node is listed once.
		if len(lines) != 2 || !strings.HasPrefix(lines[1], nodeName+" ") {
			t.Errorf("stdout = %q", r.stdout)
		}
		r = mustExec(t, runCatalogNodes, addr, "-service=nothing")
		if r.stdout != "" || !strings.Contains(r.stderr, "No nodes match") {
			t.Errorf("unknown service: %v", r)
		}
	})

	t.Run("dispatcher", func(t *testing.T) {
		r := runCmd(run, "catalog", "datacenters", addr)
		if r.code != 0 || r.stdout != dc+"\n" {
			t.Errorf("got %v", r)
		}
		r = runCmd(run, "catalog")
		if r.code != 1 || !strings.Contains(r.stderr, "services") || !strings.Contains(r.stderr, "datacenters") {
			t.Errorf("bare catalog: %v", r)
		}
	})
}
