package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/procs"
)

// TestTwoDatacenters federates two real datacenters: dc1 (the primary, a
// server and a client agent) and dc2 (a server). It checks the WAN pool,
// ?dc= reads and writes through dc1's client, the replication of a config
// entry written in dc1, and what dc1 answers once dc2's server is killed;
// it logs how long the WAN pool took to see that server failed.
func TestTwoDatacenters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dc1 := procs.StartCluster(t, procs.Options{Servers: 1, Clients: 1, ExtraArgs: []string{"-datacenter", "dc1"}})
	dc2 := procs.StartCluster(t, procs.Options{Servers: 1, ExtraArgs: []string{"-datacenter", "dc2", "-primary-datacenter", "dc1"}})
	s1, s2, cl := dc1.Servers[0].Client(t), dc2.Servers[0].Client(t), dc1.Clients[0].Client(t)

	wan, err := s2.Agent().Members(true)
	if err != nil || len(wan) != 1 || wan[0].Name != "s1.dc2" {
		t.Fatalf("dc2's WAN pool: %+v %v", wan, err)
	}
	if err := s1.Agent().Join(fmt.Sprintf("127.0.0.1:%d", wan[0].Port), true); err != nil {
		t.Fatalf("WAN join: %v", err)
	}
	waitUntil(t, 30*time.Second, "dc1's client to list both datacenters", func() error {
		dcs, err := cl.Catalog().Datacenters()
		if err != nil || strings.Join(dcs, ",") != "dc1,dc2" {
			return fmt.Errorf("datacenters %v %v", dcs, err)
		}
		return nil
	})

	if _, err := cl.KV().Put(&api.KVPair{Key: "cross", Value: []byte("to-dc2")}, &api.WriteOptions{Datacenter: "dc2"}); err != nil {
		t.Fatalf("put ?dc=dc2: %v", err)
	}
	if p, _, err := s2.KV().Get("cross", nil); err != nil || p == nil || string(p.Value) != "to-dc2" {
		t.Fatalf("dc2 did not get the write: %+v %v", p, err)
	}
	if p, _, err := cl.KV().Get("cross", nil); err != nil || p != nil {
		t.Fatalf("dc1 has dc2's key: %+v %v", p, err)
	}

	if _, _, err := cl.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the config entry to reach dc2", func() error {
		e, _, err := s2.ConfigEntries().Get(api.ServiceDefaults, "web", nil)
		if err != nil || e == nil {
			return fmt.Errorf("%v %v", e, err)
		}
		return nil
	})

	dc2.Servers[0].Kill()
	killed := time.Now()
	waitUntil(t, 60*time.Second, "dc1 to see dc2's server failed", func() error {
		members, err := s1.Agent().Members(true)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Name == "s1.dc2" && m.Status == 4 {
				return nil
			}
		}
		return fmt.Errorf("members %+v", members)
	})
	t.Logf("WAN failure detection of a SIGKILLed remote server: %s", time.Since(killed).Round(time.Millisecond))
	start := time.Now()
	_, _, err = cl.KV().Get("cross", &api.QueryOptions{Datacenter: "dc2"})
	if err == nil || time.Since(start) > 20*time.Second {
		t.Fatalf("?dc=dc2 with dc2 down: %v after %s", err, time.Since(start))
	}
	t.Logf("?dc=dc2 with dc2 down answered in %s: %v", time.Since(start).Round(time.Millisecond), err)
}
