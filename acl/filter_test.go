package acl

import (
	"fmt"
	"testing"

	"github.com/tribune-mesh/tribune/catalog"
)

// FilterRead keeps exactly the rows the rules let the token read, says
// whether it dropped any, and never modifies what it was given.
func TestFilterRead(t *testing.T) {
	a := authz(t, PolicyOptions{}, `node "n1" { policy = "read" }
service "web" { policy = "read" }
key_prefix "app/" { policy = "read" }
session_prefix "n1" { policy = "read" }
query_prefix "web-" { policy = "read" }`)
	n1, n2 := &catalog.Node{Node: "n1"}, &catalog.Node{Node: "n2"}
	web, db := &catalog.Service{ID: "web1", Service: "web"}, &catalog.Service{ID: "db1", Service: "db"}
	nodes := []*catalog.Node{n1, n2}
	cases := []struct {
		name    string
		in      *catalog.ReadResponse
		dropped bool
		want    string
	}{
		{"nodes", &catalog.ReadResponse{Nodes: nodes}, true, "nodes=[n1]"},
		{"only readable nodes", &catalog.ReadResponse{Nodes: nodes[:1]}, false, "nodes=[n1]"},
		{"services map", &catalog.ReadResponse{Services: map[string][]string{"web": nil, "db": nil}}, true, "services=map[web:[]]"},
		{"instances need service and node", &catalog.ReadResponse{Instances: []*catalog.CheckServiceNode{
			{Node: n1, Service: web}, {Node: n2, Service: web}, {Node: n1, Service: db}}}, true, "instances=[n1/web]"},
		{"node services", &catalog.ReadResponse{NodeServices: &catalog.NodeServices{Node: n1, Services: []*catalog.Service{web, db}}}, true, "node=n1 services=[web]"},
		{"unreadable node", &catalog.ReadResponse{NodeServices: &catalog.NodeServices{Node: n2, Services: []*catalog.Service{web}}}, true, "empty"},
		{"checks", &catalog.ReadResponse{Checks: []*catalog.HealthCheck{{Node: "n1"}, {Node: "n1", ServiceName: "db"}, {Node: "n2"}}}, true, "checks=1"},
		{"kv entries and keys", &catalog.ReadResponse{KVs: []*catalog.KVEntry{{Key: "app/a"}, {Key: "x"}}, Keys: []string{"app/b", "y"}}, true, "kvs=[app/a] keys=[app/b]"},
		{"kv get", &catalog.ReadResponse{KV: &catalog.KVEntry{Key: "x"}}, true, "empty"},
		{"sessions", &catalog.ReadResponse{Sessions: []*catalog.Session{{Node: "n1"}, {Node: "n2"}}}, true, "sessions=1"},
		{"queries", &catalog.ReadResponse{PreparedQueries: []*catalog.PreparedQuery{{Name: "web-q", Token: "s"}, {Name: "db-q"}, {ID: "x"}}}, true, "queries=[web-q:<hidden> :]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := fmt.Sprint(c.in.Nodes, len(c.in.Services), c.in.Instances)
			keep := c.in.Nodes
			out := *c.in
			dropped := FilterRead(a, &out)
			if dropped != c.dropped {
				t.Fatalf("dropped = %v, want %v", dropped, c.dropped)
			}
			if got := describe(&out); got != c.want {
				t.Fatalf("kept %s, want %s", got, c.want)
			}
			if fmt.Sprint(keep, len(c.in.Services), c.in.Instances) != before {
				t.Fatalf("the input was modified")
			}
		})
	}
}

func describe(r *catalog.ReadResponse) string {
	switch {
	case r.Nodes != nil:
		var ns []string
		for _, n := range r.Nodes {
			ns = append(ns, n.Node)
		}
		return fmt.Sprintf("nodes=%v", ns)
	case r.Services != nil:
		return fmt.Sprintf("services=%v", r.Services)
	case r.Instances != nil:
		var out []string
		for _, in := range r.Instances {
			out = append(out, in.Node.Node+"/"+in.Service.Service)
		}
		return fmt.Sprintf("instances=%v", out)
	case r.Checks != nil:
		return fmt.Sprintf("checks=%d", len(r.Checks))
	case r.KVs != nil:
		return fmt.Sprintf("kvs=[%s] keys=%v", r.KVs[0].Key, r.Keys)
	case r.Sessions != nil:
		return fmt.Sprintf("sessions=%d", len(r.Sessions))
	case r.PreparedQueries != nil:
		var out []string
		for _, q := range r.PreparedQueries {
			out = append(out, q.Name+":"+q.Token)
		}
		return fmt.Sprintf("queries=%v", out)
	case r.NodeServices != nil:
		var out []string
		for _, s := range r.NodeServices.Services {
			out = append(out, s.Service)
		}
		return fmt.Sprintf("node=%s services=%v", r.NodeServices.Node.Node, out)
	}
	if r.KV != nil {
		return "kv=" + r.KV.Key
	}
	return "empty"
}
