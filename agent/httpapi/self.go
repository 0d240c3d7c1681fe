package httpapi

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/tribune-mesh/tribune/acl"
	"github.com/tribune-mesh/tribune/agent/config"
)

// agentSelf serves GET /v1/agent/self: the agent's configuration (Config,
// and DebugConfig with the runtime values tools read, such as the gossip
// addresses), its gossip member, node meta, its LAN coordinate and Stats as
// `consul info` prints them.
func (h *Handler) agentSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.AgentRead(h.agent.cfg.NodeName) != acl.Allow {
		return nil, errPermissionDenied
	}
	cfg := h.agent.cfg
	// The UI and clients learn the default policy here, as from Consul:
	// with ACLs off, everything is allowed.
	policy := "allow"
	if cfg.ACL.Enabled && cfg.ACL.DefaultPolicy == "deny" {
		policy = "deny"
	}
	w.Header().Set("X-Consul-Default-ACL-Policy", policy)
	self := h.agent.selfMember()
	meta := cfg.NodeMeta
	if meta == nil {
		meta = map[string]string{}
	}
	out := map[string]any{
		"Config": map[string]any{
			"Datacenter": cfg.Datacenter, "PrimaryDatacenter": cfg.PrimaryDatacenter, "NodeName": cfg.NodeName,
			"NodeID": cfg.NodeID, "Server": cfg.Server, "Revision": "", "Version": h.agent.version,
			"BuildDate": "", "Partition": "",
		},
		"DebugConfig": debugConfig(cfg, self, h.agent.version),
		"Member":      self,
		"Meta":        meta,
		"Stats":       h.agent.stats(),
		"xDS": map[string]any{
			"SupportedProxies": map[string][]string{"envoy": {}},
			"Port":             cfg.Ports.GRPC,
			"Ports":            map[string]int{"Plaintext": cfg.Ports.GRPC, "TLS": cfg.Ports.GRPCTLS},
		},
	}
	if h.agent.gossip != nil {
		out["Coord"] = h.agent.gossip.Coordinate()
	}
	return out, nil
}

// debugConfig is /v1/agent/self's DebugConfig: the runtime configuration
// under Consul's RuntimeConfig names, for the values clients and tools read.
// Addresses are in Consul's "tcp://ip:port" form. Secrets (the gossip key,
// tokens) are never included.
func debugConfig(cfg *config.Config, self Member, version string) map[string]any {
	lanHost := self.Addr
	if lanHost == "" {
		lanHost = cfg.AdvertiseAddrLAN
	}
	wanHost := cfg.AdvertiseAddrWAN
	if wanHost == "" {
		wanHost = lanHost
	}
	bind := cfg.BindAddr
	if bind == "" {
		bind = "0.0.0.0"
	}
	lanPort := int(self.Port)
	if lanPort == 0 {
		lanPort = cfg.Ports.SerfLAN
	}
	tcp := func(host string, port int) string { return "tcp://" + net.JoinHostPort(host, strconv.Itoa(port)) }
	listen := func(addrs []string, port int) []string {
		if port < 0 {
			return []string{}
		}
		if len(addrs) == 0 {
			addrs = cfg.ClientAddrs
		}
		out := make([]string, 0, len(addrs))
		for _, a := range addrs {
			if strings.HasPrefix(a, "unix://") {
				out = append(out, a)
				continue
			}
			out = append(out, tcp(a, port))
		}
		return out
	}
	nonNilStrings := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return map[string]any{
		"Datacenter":              cfg.Datacenter,
		"PrimaryDatacenter":       cfg.PrimaryDatacenter,
		"NodeName":                cfg.NodeName,
		"NodeID":                  cfg.NodeID,
		"NodeMeta":                cfg.NodeMeta,
		"ServerMode":              cfg.Server,
		"Bootstrap":               cfg.Bootstrap,
		"BootstrapExpect":         cfg.BootstrapExpect,
		"ReadReplica":             cfg.ReadReplica,
		"DevMode":                 cfg.DevMode,
		"DataDir":                 cfg.DataDir,
		"Version":                 version,
		"AdvertiseAddrLAN":        lanHost,
		"AdvertiseAddrWAN":        wanHost,
		"BindAddr":                bind,
		"ClientAddrs":             nonNilStrings(cfg.ClientAddrs),
		"SerfAdvertiseAddrLAN":    tcp(lanHost, lanPort),
		"SerfAdvertiseAddrWAN":    tcp(wanHost, cfg.Ports.SerfWAN),
		"SerfBindAddrLAN":         tcp(bind, cfg.Ports.SerfLAN),
		"SerfBindAddrWAN":         tcp(bind, cfg.Ports.SerfWAN),
		"SerfPortLAN":             cfg.Ports.SerfLAN,
		"SerfPortWAN":             cfg.Ports.SerfWAN,
		"RPCAdvertiseAddr":        tcp(lanHost, cfg.Ports.Server),
		"RPCBindAddr":             tcp(bind, cfg.Ports.Server),
		"ServerPort":              cfg.Ports.Server,
		"HTTPAddrs":               listen(cfg.Addresses.HTTP, cfg.Ports.HTTP),
		"HTTPPort":                cfg.Ports.HTTP,
		"HTTPSAddrs":              listen(cfg.Addresses.HTTPS, cfg.Ports.HTTPS),
		"HTTPSPort":               cfg.Ports.HTTPS,
		"DNSAddrs":                listen(cfg.Addresses.DNS, cfg.Ports.DNS),
		"DNSPort":                 cfg.Ports.DNS,
		"DNSDomain":               cfg.Domain,
		"DNSAltDomain":            cfg.AltDomain,
		"DNSRecursors":            nonNilStrings(cfg.Recursors),
		"GRPCPort":                cfg.Ports.GRPC,
		"GRPCTLSPort":             cfg.Ports.GRPCTLS,
		"RetryJoinLAN":            nonNilStrings(cfg.RetryJoin),
		"RetryJoinWAN":            nonNilStrings(cfg.RetryJoinWAN),
		"StartJoinAddrsLAN":       nonNilStrings(cfg.StartJoin),
		"StartJoinAddrsWAN":       nonNilStrings(cfg.StartJoinWAN),
		"RejoinAfterLeave":        cfg.RejoinAfterLeave,
		"LeaveOnTerm":             cfg.LeaveOnTerminate,
		"SkipLeaveOnInt":          cfg.SkipLeaveOnInterrupt,
		"LogLevel":                cfg.LogLevel,
		"LogJSON":                 cfg.LogJSON,
		"EncryptVerifyIncoming":   cfg.EncryptVerifyIncoming,
		"EncryptVerifyOutgoing":   cfg.EncryptVerifyOutgoing,
		"EnableScriptChecks":      cfg.EnableScriptChecks,
		"EnableLocalScriptChecks": cfg.EnableLocalScriptChecks,
		"CheckOutputMaxSize":      cfg.CheckOutputMaxSize,
		"ACLsEnabled":             cfg.ACL.Enabled,
		"ConnectEnabled":          cfg.Connect.Enabled,
		"UIConfig":                map[string]any{"Enabled": cfg.UI.Enabled, "Dir": cfg.UI.Dir, "ContentPath": cfg.UI.ContentPath},
		"RaftProtocol":            3,
		"RaftSnapshotThreshold":   cfg.RaftSnapshotThreshold,
		"RaftSnapshotInterval":    cfg.RaftSnapshotInterval.String(),
		"RaftTrailingLogs":        cfg.RaftTrailingLogs,
		"ReconnectTimeoutLAN":     cfg.ReconnectTimeout.String(),
		"ReconnectTimeoutWAN":     cfg.ReconnectTimeoutWAN.String(),
		"ConfigFiles":             nonNilStrings(cfg.ConfigFiles),
	}
}
