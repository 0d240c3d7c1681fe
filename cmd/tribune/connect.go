package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Defaults of "connect envoy", as Consul's.
const (
	defaultEnvoyAdminBind = "localhost:19000"
	defaultGRPCAddr       = "127.0.0.1:8502"
	// envGRPCAddr is Consul's variable for the agent's gRPC address.
	envGRPCAddr = "CONSUL_GRPC_ADDR"
	// localAgentCluster is the static cluster Envoy reaches the agent's
	// xDS server through.
	localAgentCluster = "local_agent"
)

// bootstrapArgs is what an Envoy bootstrap is made of.
type bootstrapArgs struct {
	// ProxyID is the proxy's service ID (the node id); Cluster the
	// service it fronts.
	ProxyID, Cluster string
	// AdminHost and AdminPort are where Envoy's admin interface listens.
	AdminHost string
	AdminPort int
	// GRPCHost and GRPCPort are the agent's xDS server; GRPCTLS says to
	// reach it over TLS, verified with CAFile when set.
	GRPCHost string
	GRPCPort int
	GRPCTLS  bool
	CAFile   string
	// Token is sent as x-consul-token on the ADS stream.
	Token string
}

// envoyBootstrap returns the Envoy bootstrap configuration Consul's
// `connect envoy -bootstrap` prints for a sidecar: the admin listener, the
// node (id = proxy ID, cluster = its service), a static local_agent
// cluster to the agent's gRPC port over HTTP/2, and delta ADS through it
// with the token as initial metadata; listeners and clusters come over ADS.
func envoyBootstrap(b bootstrapArgs) ([]byte, error) {
	if b.ProxyID == "" || b.Cluster == "" {
		return nil, errors.New("a proxy ID and its service are required")
	}
	socket := func(host string, port int) map[string]any {
		return map[string]any{"socket_address": map[string]any{"address": host, "port_value": port}}
	}
	agent := map[string]any{
		"name":                          localAgentCluster,
		"ignore_health_on_host_removal": false,
		"connect_timeout":               "1s",
		"type":                          "STATIC",
		"typed_extension_protocol_options": map[string]any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
				"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
				"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
			},
		},
		"load_assignment": map[string]any{
			"cluster_name": localAgentCluster,
			"endpoints": []any{map[string]any{"lb_endpoints": []any{map[string]any{
				"endpoint": map[string]any{"address": socket(b.GRPCHost, b.GRPCPort)},
			}}}},
		},
	}
	if b.GRPCTLS {
		tlsCtx := map[string]any{"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}
		if b.CAFile != "" {
			tlsCtx["common_tls_context"] = map[string]any{
				"validation_context": map[string]any{"trusted_ca": map[string]any{"filename": b.CAFile}},
			}
		}
		agent["transport_socket"] = map[string]any{"name": "tls", "typed_config": tlsCtx}
	}
	ads := map[string]any{"ads": map[string]any{}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
	out := map[string]any{
		"admin": map[string]any{
			"access_log_path": os.DevNull,
			"address":         socket(b.AdminHost, b.AdminPort),
		},
		"node": map[string]any{
			"cluster":  b.Cluster,
			"id":       b.ProxyID,
			"metadata": map[string]any{"namespace": "default", "partition": "default"},
		},
		"static_resources": map[string]any{"clusters": []any{agent}},
		"dynamic_resources": map[string]any{
			"lds_config": ads,
			"cds_config": ads,
			"ads_config": map[string]any{
				"api_type":              "DELTA_GRPC",
				"transport_api_version": "V3",
				"grpc_services": []any{map[string]any{
					"initial_metadata": []any{map[string]any{"key": "x-consul-token", "value": b.Token}},
					"envoy_grpc":       map[string]any{"cluster_name": localAgentCluster},
				}},
			},
		},
	}
	j, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode bootstrap: %w", err)
	}
	return append(j, '\n'), nil
}

// splitHostPort splits "host:port" (an http:// or https:// scheme allowed,
// https meaning TLS).
func splitHostPort(addr string) (host string, port int, tls bool, err error) {
	switch {
	case strings.HasPrefix(addr, "https://"):
		addr, tls = strings.TrimPrefix(addr, "https://"), true
	case strings.HasPrefix(addr, "http://"):
		addr = strings.TrimPrefix(addr, "http://")
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, false, fmt.Errorf("address %q: bad port", addr)
	}
	return h, port, tls, nil
}

// findSidecar returns the ID and destination of the one connect-proxy of
// the agent that fronts service ID id.
func findSidecar(services map[string]*api.AgentService, id string) (string, string, error) {
	var found []*api.AgentService
	for _, s := range services {
		if s.Kind == api.ServiceKindConnectProxy && s.Proxy != nil && s.Proxy.DestinationServiceID == id {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return "", "", fmt.Errorf("no sidecar proxy registered for %s", id)
	case 1:
		return found[0].ID, found[0].Proxy.DestinationServiceName, nil
	}
	ids := make([]string, 0, len(found))
	for _, s := range found {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	return "", "", fmt.Errorf("more than one sidecar proxy registered for %s: %s; use -proxy-id", id, strings.Join(ids, ", "))
}

// runConnectEnvoy implements "connect envoy": print the bootstrap of a
// sidecar's Envoy (-bootstrap), or run envoy with it.
func runConnectEnvoy(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("connect envoy", "connect envoy [options] [-- envoy options]",
		"Generates the bootstrap configuration of a sidecar's Envoy from the local agent and runs envoy with it,\n"+
			"or prints it with -bootstrap.", stderr, &hf)
	proxyID := fs.String("proxy-id", os.Getenv("CONNECT_PROXY_ID"), "The proxy's service `ID` on the local agent. Defaults to CONNECT_PROXY_ID.")
	sidecarFor := fs.String("sidecar-for", os.Getenv("CONNECT_SIDECAR_FOR"), "The `ID` of the service whose sidecar to configure. Defaults to CONNECT_SIDECAR_FOR.")
	adminBind := fs.String("admin-bind", defaultEnvoyAdminBind, "The `host:port` of Envoy's admin interface.")
	grpcAddr := fs.String("grpc-addr", "", "The agent's gRPC (xDS) `address`, optionally with http:// or https://. "+
		"Defaults to CONSUL_GRPC_ADDR, then "+defaultGRPCAddr+".")
	bootstrap := fs.Bool("bootstrap", false, "Print the bootstrap configuration instead of running envoy.")
	envoyBin := fs.String("envoy-binary", "", "The envoy `binary` to run. Defaults to envoy on PATH.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *proxyID == "" && *sidecarFor == "" {
		fmt.Fprintln(stderr, "No proxy ID specified. One of -proxy-id or -sidecar-for is required")
		return 1
	}
	host, port, err := parseHostPort(*adminBind)
	if err != nil {
		fmt.Fprintf(stderr, "Invalid -admin-bind: %v\n", err)
		return 1
	}
	addr := *grpcAddr
	if addr == "" {
		addr = os.Getenv(envGRPCAddr)
	}
	if addr == "" {
		addr = defaultGRPCAddr
	}
	gHost, gPort, gTLS, err := splitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "Invalid -grpc-addr: %v\n", err)
		return 1
	}
	cfg := hf.apiConfig()
	client, err := api.NewClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	services, err := client.Agent().Services()
	if err != nil {
		fmt.Fprintf(stderr, "Error reading the agent's services: %v\n", err)
		return 1
	}
	id, cluster := *proxyID, ""
	if id == "" {
		if id, cluster, err = findSidecar(services, *sidecarFor); err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return 1
		}
	} else {
		svc := services[id]
		if svc == nil || svc.Kind != api.ServiceKindConnectProxy || svc.Proxy == nil {
			fmt.Fprintf(stderr, "Error: %s is not a connect-proxy registered on the agent\n", id)
			return 1
		}
		cluster = svc.Proxy.DestinationServiceName
	}
	token := cfg.Token
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "Error reading the token file: %v\n", err)
			return 1
		}
		token = strings.TrimSpace(string(b))
	}
	caFile := cfg.TLSConfig.CAFile
	out, err := envoyBootstrap(bootstrapArgs{ProxyID: id, Cluster: cluster, AdminHost: host, AdminPort: port,
		GRPCHost: gHost, GRPCPort: gPort, GRPCTLS: gTLS,
		CAFile: caFile, Token: token})
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 1
	}
	if *bootstrap {
		_, _ = stdout.Write(out)
		return 0
	}
	return execEnvoy(*envoyBin, out, fs.Args(), stderr)
}

// parseHostPort splits a host:port with a numeric port.
func parseHostPort(addr string) (string, int, error) {
	h, p, tls, err := splitHostPort(addr)
	if err == nil && tls {
		err = errors.New("no scheme expected")
	}
	return h, p, err
}
