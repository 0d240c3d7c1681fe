package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden files of connect envoy")

// decodeBootstrap decodes a bootstrap strictly (unknown fields are errors)
// into Envoy's Bootstrap proto and validates it.
func decodeBootstrap(t *testing.T, b []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	var bs bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, &bs); err != nil {
		t.Fatalf("bootstrap does not decode into envoy's Bootstrap: %v\n%s", err, b)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("bootstrap invalid: %v", err)
	}
	return &bs
}

// The bootstrap has Consul's shape (golden files, -rewrite to update) and
// decodes strictly into Envoy's Bootstrap: admin, node, the static
// local_agent cluster over HTTP/2 (TLS with a CA file when the address is
// https://) and delta ADS with the token as initial metadata.
func TestEnvoyBootstrapGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args bootstrapArgs
	}{
		{"plain", bootstrapArgs{ProxyID: "web-sidecar-proxy", Cluster: "web", AdminHost: "localhost", AdminPort: 19000,
			GRPCHost: "127.0.0.1", GRPCPort: 8502, Token: "c0ffee00-1111-2222-3333-444455556666"}},
		{"tls", bootstrapArgs{ProxyID: "api-proxy", Cluster: "api", AdminHost: "0.0.0.0", AdminPort: 19001,
			GRPCHost: "10.0.0.5", GRPCPort: 8503, GRPCTLS: true, CAFile: "/etc/tribune/ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := envoyBootstrap(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "envoy-bootstrap-"+tc.name+".golden.json")
			if *rewrite {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("bootstrap differs from %s:\n%s", path, got)
			}
			bs := decodeBootstrap(t, got)
			ads := bs.GetDynamicResources().GetAdsConfig()
			if bs.GetNode().GetId() != tc.args.ProxyID || bs.GetNode().GetCluster() != tc.args.Cluster ||
				ads.GetApiType().String() != "DELTA_GRPC" || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "local_agent" ||
				ads.GetGrpcServices()[0].GetInitialMetadata()[0].GetValue() != tc.args.Token {
				t.Fatalf("bootstrap = %v", bs)
			}
			agent := bs.GetStaticResources().GetClusters()[0]
			if (agent.GetTransportSocket() != nil) != tc.args.GRPCTLS {
				t.Fatalf("local_agent TLS = %v, want %v", agent.GetTransportSocket(), tc.args.GRPCTLS)
			}
		})
	}
	if _, err := envoyBootstrap(bootstrapArgs{Cluster: "web"}); err == nil {
		t.Fatal("a bootstrap without a proxy ID was made")
	}
}

// Against a real agent: -sidecar-for finds the sidecar registered with a
// service, -proxy-id names one, and bad input is refused.
func TestConnectEnvoyCommand(t *testing.T) {
	a := agenttest.Start(t, nil)
	addr := "-http-addr=" + a.HTTPAddr()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 8080,
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{}}}); err != nil {
		t.Fatal(err)
	}
	r := mustExec(t, runConnectEnvoy, addr, "-sidecar-for=web", "-bootstrap", "-token=secret-1",
		"-grpc-addr=127.0.0.1:18502", "-admin-bind=127.0.0.1:19005")
	bs := decodeBootstrap(t, []byte(r.stdout))
	if bs.GetNode().GetId() != "web-sidecar-proxy" || bs.GetNode().GetCluster() != "web" ||
		bs.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 19005 ||
		!strings.Contains(r.stdout, `"value": "secret-1"`) || !strings.Contains(r.stdout, `"port_value": 18502`) {
		t.Fatalf("bootstrap for web:\n%s", r.stdout)
	}
	r = mustExec(t, runConnectEnvoy, addr, "-proxy-id=web-sidecar-proxy", "-bootstrap")
	if decodeBootstrap(t, []byte(r.stdout)).GetNode().GetId() != "web-sidecar-proxy" {
		t.Fatalf("bootstrap for the proxy ID:\n%s", r.stdout)
	}
	for _, bad := range [][]string{
		{addr, "-bootstrap"},
		{addr, "-sidecar-for=nothere", "-bootstrap"},
		{addr, "-proxy-id=web", "-bootstrap"},
		{addr, "-sidecar-for=web", "-bootstrap", "-admin-bind=nope"},
		{addr, "-sidecar-for=web", "-bootstrap", "-grpc-addr=127.0.0.1:99999"},
	} {
		if r := runCmd(runConnectEnvoy, bad...); r.code == 0 {
			t.Errorf("%v accepted:\n%v", bad, r)
		}
	}
	// Without -bootstrap it runs envoy: a missing binary is an error.
	if r := runCmd(runConnectEnvoy, addr, "-sidecar-for=web", "-envoy-binary="+filepath.Join(t.TempDir(), "envoy")); r.code == 0 {
		t.Errorf("ran a missing envoy:\n%v", r)
	}
}
