package agent_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"

	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/wait"
)

// With default_policy deny, DNS answers with the agent's default token:
// without one (the anonymous token) every service is NXDOMAIN; once the
// default token may read web and the nodes, web answers and db, which it
// may not read, stays NXDOMAIN, directly and through a prepared query.
// /v1/agent/self says which default policy applies.
func TestDNSWithACLs(t *testing.T) {
	d := startDNSAgent(t, func(c *config.Config) { aclConfig(c) })
	root := tokenClient(t, d.a, rootSecret)
	waitManagement(t, root)
	d.api = root
	d.webCatalog(t)
	d.register(t, &api.CatalogRegistration{Node: "n3", Address: "10.0.0.3",
		Service: &api.AgentService{ID: "db1", Service: "db", Port: 5432}})
	if _, _, err := root.PreparedQuery().Create(&api.PreparedQueryDefinition{Name: "dbq", Service: api.ServiceQuery{Service: "db"}}, nil); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest(http.MethodGet, "http://"+d.a.HTTPAddr()+"/v1/agent/self", nil)
	req.Header.Set("X-Consul-Token", rootSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Consul-Default-ACL-Policy"); res.StatusCode != http.StatusOK || got != "deny" {
		t.Fatalf("agent self: %d, default policy %q", res.StatusCode, got)
	}

	dnsWantRcode(t, d.query(t, "udp", "web.service.consul", dns.TypeA), dns.RcodeNameError)
	dnsWantRcode(t, d.query(t, "udp", "n1.node.consul", dns.TypeA), dns.RcodeNameError)

	secret := policyToken(t, root, "dns", `service "web" { policy = "read" }
node_prefix "" { policy = "read" }
query_prefix "" { policy = "read" }`)
	if _, err := root.Agent().UpdateDefaultACLToken(secret, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		m, err := d.tryQuery("udp", "web.service.consul", dns.TypeA)
		if err != nil {
			return err
		}
		if got := dnsAddrs(m.Answer); len(got) != 2 {
			return fmt.Errorf("web answers %v (rcode %s)", got, dns.RcodeToString[m.Rcode])
		}
		return nil
	})
	dnsWant(t, "n1.node", dnsAddrs(d.query(t, "udp", "n1.node.consul", dns.TypeA).Answer), []string{"10.0.0.1"})
	dnsWantRcode(t, d.query(t, "udp", "db.service.consul", dns.TypeA), dns.RcodeNameError)
	dnsWantRcode(t, d.query(t, "udp", "dbq.query.consul", dns.TypeA), dns.RcodeNameError)
}
