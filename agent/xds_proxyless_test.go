package agent_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	"github.com/tribune-mesh/tribune/agent/agenttest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// greeter is a real gRPC server that answers with its name.
type greeter struct {
	testpb.UnimplementedTestServiceServer
	name string
	port int
}

func (g *greeter) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Hostname: g.name}, nil
}

func startGreeter(t *testing.T, name string) *greeter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &greeter{name: name, port: ln.Addr().(*net.TCPAddr).Port}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, g)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return g
}

// registerGreeter puts a greeter in the catalog under its own node, with a
// check in status.
func registerGreeter(t *testing.T, c *api.Client, g *greeter, status string) {
	t.Helper()
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: g.name, Address: "127.0.0.1",
		Service: &api.AgentService{ID: g.name, Service: "greeter", Address: "127.0.0.1", Port: g.port},
		Check:   &api.AgentCheck{Node: g.name, CheckID: "grpc", Name: "grpc", Status: status, ServiceID: g.name},
	}, nil); err != nil {
		t.Fatal(err)
	}
}

// dialGreeter returns a client of xds:///greeter through grpc-go's own xDS
// resolver, bootstrapped to the agent's xDS port as node.
func dialGreeter(t *testing.T, xdsAddr, node string) testpb.TestServiceClient {
	t.Helper()
	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q}}`, xdsAddr, node)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///greeter", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

// grpc-go's own xDS client, bootstrapped to the agent's xDS port, dials
// xds:///greeter and is balanced over the 3 greeters of the catalog; one
// going critical gets no more calls within 2 s; a new instance gets calls.
func TestXDSProxylessGRPC(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, nil)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	gs := []*greeter{startGreeter(t, "g1"), startGreeter(t, "g2"), startGreeter(t, "g3")}
	for _, g := range gs {
		registerGreeter(t, c, g, api.HealthPassing)
	}
	client := dialGreeter(t, a.XDSAddr(), "greeter-client")
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			return "", err
		}
		return r.GetHostname(), nil
	}
	// reached returns which greeters n calls reached.
	reached := func(n int) (map[string]int, error) {
		seen := map[string]int{}
		for range n {
			h, err := call()
			if err != nil {
				return nil, err
			}
			seen[h]++
		}
		return seen, nil
	}
	wait.For(t, 30*time.Second, func() error {
		seen, err := reached(30)
		if err != nil {
			return err
		}
		if len(seen) != 3 {
			return fmt.Errorf("calls reached %v, want g1, g2 and g3", seen)
		}
		return nil
	})

	registerGreeter(t, c, gs[1], api.HealthCritical)
	failed := time.Now()
	wait.For(t, 10*time.Second, func() error {
		seen, err := reached(30)
		if err != nil {
			return err
		}
		if seen["g2"] > 0 || len(seen) != 2 {
			return fmt.Errorf("calls reached %v after g2 went critical", seen)
		}
		return nil
	})
	if el := time.Since(failed); el > 2*time.Second {
		t.Fatalf("calls stopped reaching the critical instance after %v, want within 2s", el)
	} else {
		t.Logf("calls stopped reaching the critical instance within %v", el)
	}

	g4 := startGreeter(t, "g4")
	registerGreeter(t, c, g4, api.HealthPassing)
	wait.For(t, 10*time.Second, func() error {
		seen, err := reached(30)
		if err != nil {
			return err
		}
		if seen["g4"] == 0 {
			return fmt.Errorf("calls reached %v, none the new g4", seen)
		}
		return nil
	})
}

// A proxyless gRPC client follows the discovery chain of a grpc service:
// a splitter sending 100% to the v1 subset (by a resolver's meta filter)
// and 0% to v2 has every call reach the v1 instance; turned around, every
// call reaches v2.
func TestXDSProxylessGRPCSplitter(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, nil)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range []*greeter{startGreeter(t, "v1-a"), startGreeter(t, "v2-a")} {
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: g.name, Address: "127.0.0.1",
			Service: &api.AgentService{ID: g.name, Service: "greeter", Address: "127.0.0.1", Port: g.port, Meta: map[string]string{"version": fmt.Sprint(i + 1)}},
			Check:   &api.AgentCheck{Node: g.name, CheckID: "grpc", Name: "grpc", Status: api.HealthPassing, ServiceID: g.name},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "greeter", Protocol: "grpc"},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "greeter", Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version == "1"`}, "v2": {Filter: `Service.Meta.version == "2"`}}},
	} {
		if _, _, err := c.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	split := func(v1, v2 float32) {
		t.Helper()
		if _, _, err := c.ConfigEntries().Set(&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "greeter",
			Splits: []api.ServiceSplit{{Weight: v1, ServiceSubset: "v1"}, {Weight: v2, ServiceSubset: "v2"}}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	split(100, 0)
	client := dialGreeter(t, a.XDSAddr(), "greeter-split-client")
	onlyReaches(t, client, "v1-a")
	split(0, 100)
	onlyReaches(t, client, "v2-a")
}

// onlyReaches waits until 20 calls in a row of client all reach the
// greeter named want.
func onlyReaches(t *testing.T, client testpb.TestServiceClient, want string) {
	t.Helper()
	wait.For(t, 30*time.Second, func() error {
		for range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
			cancel()
			if err != nil {
				return err
			}
			if r.GetHostname() != want {
				return fmt.Errorf("a call reached %s, want only %s", r.GetHostname(), want)
			}
		}
		return nil
	})
}

// A proxyless gRPC client follows a resolver's failover: while greeter has
// no healthy instance, calls reach greeter-backup's; once greeter's is
// healthy again, they reach it again.
func TestXDSProxylessGRPCFailover(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, nil)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	primary, backup := startGreeter(t, "primary"), startGreeter(t, "backup")
	registerGreeter(t, c, primary, api.HealthPassing)
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: backup.name, Address: "127.0.0.1",
		Service: &api.AgentService{ID: backup.name, Service: "greeter-backup", Address: "127.0.0.1", Port: backup.port},
		Check:   &api.AgentCheck{Node: backup.name, CheckID: "grpc", Name: "grpc", Status: api.HealthPassing, ServiceID: backup.name},
	}, nil); err != nil {
		t.Fatal(err)
	}
	for _, e := range []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "greeter", Protocol: "grpc"},
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "greeter-backup", Protocol: "grpc"},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "greeter",
			Failover: map[string]api.ServiceResolverFailover{"*": {Service: "greeter-backup"}}},
	} {
		if _, _, err := c.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	client := dialGreeter(t, a.XDSAddr(), "greeter-failover-client")
	onlyReaches(t, client, "primary")
	registerGreeter(t, c, primary, api.HealthCritical)
	onlyReaches(t, client, "backup")
	registerGreeter(t, c, primary, api.HealthPassing)
	onlyReaches(t, client, "primary")
}
