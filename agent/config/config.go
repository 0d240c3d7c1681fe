// Package config loads a Tribune agent's configuration the way Consul's agent
// does: Consul's key names (snake_case in files), JSON and HCL files read from
// -config-file and -config-dir, command-line flags on top, and Consul's
// defaults.
//
// The package owns turning sources (defaults, files, flags) into one
// validated, fully defaulted Config with Go-typed fields. It also owns the
// service and check definition types, because the agent's HTTP API decodes
// /v1/agent/service/register and /v1/agent/check/register bodies into the
// same structs.
//
// It must not start anything, open sockets or keep state between calls: the
// only I/O it does is reading the configuration files named on the command
// line, asking for the host name when node_name is unset, and listing the
// machine's interface addresses when advertise_addr is unset and bind_addr
// is 0.0.0.0 or ::.
package config

import (
	"encoding/base64"
	"fmt"
	"time"
)

// Config is a Tribune agent's configuration after every source has been
// merged and defaults applied. Field comments name the configuration file
// key each field is read from.
type Config struct {
	// NodeName is node_name; Load sets it to the host name when unset.
	NodeName string
	// NodeID is node_id, a UUID (lower-cased). Empty means the agent
	// generates one.
	NodeID string
	// Datacenter is datacenter (lower-cased), default "dc1".
	Datacenter string
	// PrimaryDatacenter is primary_datacenter; Load sets it to Datacenter
	// when unset.
	PrimaryDatacenter string
	// DataDir is data_dir. It may be empty only in dev mode, where state is
	// kept in memory (see InMemory).
	DataDir string

	// Server is server: run as a server rather than a client.
	Server bool
	// Bootstrap is bootstrap: elect this server leader on its own.
	Bootstrap bool
	// BootstrapExpect is bootstrap_expect: the number of servers to wait
	// for before bootstrapping the cluster. Zero disables it.
	BootstrapExpect int
	// ReadReplica is read_replica (alias non_voting_server): a server that
	// replicates but never votes.
	ReadReplica bool
	// DevMode is set by the -dev flag only.
	DevMode bool

	// BindAddr is bind_addr, the address for cluster communication.
	BindAddr string
	// AdvertiseAddrLAN is advertise_addr (-advertise). When it is unset,
	// Load sets it to bind_addr, or for an unspecified bind_addr to the
	// machine's private IPv4 address (see the AdvertiseAddr method).
	AdvertiseAddrLAN string
	// AdvertiseAddrWAN is advertise_addr_wan (-advertise-wan); Load sets it
	// to AdvertiseAddrLAN when unset.
	AdvertiseAddrWAN string
	// ClientAddrs is client_addr split on spaces: the addresses client
	// interfaces (HTTP, DNS, gRPC) listen on unless Addresses overrides.
	ClientAddrs []string
	// Ports is ports.
	Ports Ports
	// Addresses is addresses: per-interface listen addresses overriding
	// ClientAddrs.
	Addresses Addresses

	// RetryJoin is retry_join: addresses (or cloud auto-join strings) to
	// join on the LAN, retried until one succeeds.
	RetryJoin []string
	// RetryJoinWAN is retry_join_wan.
	RetryJoinWAN []string
	// RetryInterval is retry_interval, default 30s.
	RetryInterval time.Duration
	// RetryIntervalWAN is retry_interval_wan, default 30s.
	RetryIntervalWAN time.Duration
	// RetryMax is retry_max; zero retries for ever.
	RetryMax int
	// RetryMaxWAN is retry_max_wan; zero retries for ever.
	RetryMaxWAN int
	// StartJoin is start_join: addresses to join once at start.
	StartJoin []string
	// StartJoinWAN is start_join_wan.
	StartJoinWAN []string
	// TranslateWANAddrs is translate_wan_addrs: nodes of other
	// datacenters are answered with their WAN tagged addresses.
	TranslateWANAddrs bool
	// RejoinAfterLeave is rejoin_after_leave.
	RejoinAfterLeave bool
	// LeaveOnTerminate is leave_on_terminate: default false for servers,
	// true for clients.
	LeaveOnTerminate bool
	// SkipLeaveOnInterrupt is skip_leave_on_interrupt: default true for
	// servers, false for clients.
	SkipLeaveOnInterrupt bool
	// ReconnectTimeout is reconnect_timeout, default 72h, at least 8h.
	ReconnectTimeout time.Duration
	// ReconnectTimeoutWAN is reconnect_timeout_wan, default 72h, at least 8h.
	ReconnectTimeoutWAN time.Duration

	// LogLevel is log_level, default "INFO", kept as written.
	LogLevel string
	// LogJSON is log_json.
	LogJSON bool
	// LogFile is log_file: the file (or directory, ending in a path
	// separator) the agent also logs to; empty logs to stdout only.
	LogFile string
	// LogRotateBytes is log_rotate_bytes: rotate the log file before it
	// passes this size; 0 (default) never by size.
	LogRotateBytes int
	// LogRotateDuration is log_rotate_duration, default 24h; 0 never by
	// age.
	LogRotateDuration time.Duration
	// LogRotateMaxFiles is log_rotate_max_files: rotated files kept, 0
	// (default) all of them, -1 none.
	LogRotateMaxFiles int
	// PidFile is pid_file.
	PidFile string

	// Encrypt is encrypt: the base64 gossip key (see EncryptKey).
	Encrypt string
	// EncryptVerifyIncoming is encrypt_verify_incoming, default true.
	EncryptVerifyIncoming bool
	// EncryptVerifyOutgoing is encrypt_verify_outgoing, default true.
	EncryptVerifyOutgoing bool

	// Domain is domain, always fully qualified, default "consul.".
	Domain string
	// AltDomain is alt_domain, fully qualified when set.
	AltDomain string
	// Recursors is recursors: upstream DNS servers.
	Recursors []string
	// DNS is dns_config.
	DNS DNSConfig

	// Performance is performance.
	Performance Performance
	// RPCHoldTimeout is rpc_hold_timeout (or performance.rpc_hold_timeout),
	// default 7s.
	RPCHoldTimeout time.Duration

	// RaftSnapshotThreshold is raft_snapshot_threshold, default 16384.
	RaftSnapshotThreshold int
	// RaftSnapshotInterval is raft_snapshot_interval, default 30s.
	RaftSnapshotInterval time.Duration
	// RaftTrailingLogs is raft_trailing_logs, default 10240.
	RaftTrailingLogs int
	// RaftLogStore is raft_logstore.
	RaftLogStore RaftLogStore
	// Autopilot is autopilot.
	Autopilot Autopilot
	// Limits is limits.
	Limits Limits

	// EnableScriptChecks is enable_script_checks.
	EnableScriptChecks bool
	// EnableLocalScriptChecks is enable_local_script_checks.
	EnableLocalScriptChecks bool
	// CheckOutputMaxSize is check_output_max_size, default 4096.
	CheckOutputMaxSize int

	// NodeMeta is node_meta.
	NodeMeta map[string]string
	// UI is ui_config (and the older top-level ui switch).
	UI UIConfig
	// ACL is acl.
	ACL ACL
	// Connect is connect.
	Connect Connect
	// HTTP is http_config.
	HTTP HTTPConfig
	// Telemetry is telemetry.
	Telemetry Telemetry

	// DisableUpdateCheck is disable_update_check.
	DisableUpdateCheck bool
	// EnableDebug is enable_debug: serve /debug/pprof/* on the HTTP API.
	EnableDebug bool
	// ServerName is server_name, the TLS server name.
	ServerName string
	// TLS is the tls block (and the legacy top-level TLS keys).
	TLS TLS
	// AutoEncrypt is auto_encrypt.
	AutoEncrypt AutoEncrypt

	// Services are the services, service definitions, in source order.
	Services []ServiceDefinition
	// Checks are the checks, check definitions, in source order.
	Checks []CheckDefinition

	// ConfigFiles lists the files Load read, in the order it applied them.
	ConfigFiles []string
}

// Ports is the ports block. A value of -1 disables the interfaces that can
// be disabled (dns, http, https, grpc, grpc_tls, serf_wan).
type Ports struct {
	// DNS is ports.dns, default 8600.
	DNS int
	// HTTP is ports.http, default 8500.
	HTTP int
	// HTTPS is ports.https, default -1 (off).
	HTTPS int
	// GRPC is ports.grpc, default 8502.
	GRPC int
	// GRPCTLS is ports.grpc_tls, default -1 (off).
	GRPCTLS int
	// SerfLAN is ports.serf_lan, default 8301.
	SerfLAN int
	// SerfWAN is ports.serf_wan, default 8302.
	SerfWAN int
	// Server is ports.server (server RPC and Raft), default 8300.
	Server int
	// SidecarMinPort is ports.sidecar_min_port, default 21000.
	SidecarMinPort int
	// SidecarMaxPort is ports.sidecar_max_port, default 21255.
	SidecarMaxPort int
	// ExposeMinPort is ports.expose_min_port, default 21500.
	ExposeMinPort int
	// ExposeMaxPort is ports.expose_max_port, default 21755.
	ExposeMaxPort int
}

// Addresses is the addresses block. Each entry is a space-separated list in
// the file; "unix:///path" names a Unix socket. An empty list means
// ClientAddrs.
type Addresses struct {
	// DNS is addresses.dns.
	DNS []string
	// HTTP is addresses.http.
	HTTP []string
	// HTTPS is addresses.https.
	HTTPS []string
	// GRPC is addresses.grpc.
	GRPC []string
}

// DNSConfig is the dns_config block.
type DNSConfig struct {
	// AllowStale is allow_stale, default true.
	AllowStale bool
	// MaxStale is max_stale, default 87600h.
	MaxStale time.Duration
	// NodeTTL is node_ttl, default 0.
	NodeTTL time.Duration
	// ServiceTTL is service_ttl: per-service TTLs; the key "*" matches every
	// service and a trailing "*" matches a prefix.
	ServiceTTL map[string]time.Duration
	// UDPAnswerLimit is udp_answer_limit, default 3.
	UDPAnswerLimit int
	// ARecordLimit is a_record_limit; zero means no limit.
	ARecordLimit int
	// EnableTruncate is enable_truncate.
	EnableTruncate bool
	// OnlyPassing is only_passing.
	OnlyPassing bool
	// RecursorTimeout is recursor_timeout, default 2s.
	RecursorTimeout time.Duration
	// RecursorStrategy is recursor_strategy: "sequential" (default) or
	// "random".
	RecursorStrategy string
	// UseCache is use_cache.
	UseCache bool
	// CacheMaxAge is cache_max_age.
	CacheMaxAge time.Duration
	// DisableCompression is disable_compression.
	DisableCompression bool
	// EnableAdditionalNodeMetaTXT is enable_additional_node_meta_txt,
	// default true.
	EnableAdditionalNodeMetaTXT bool
	// SOA is soa.
	SOA SOAConfig
}

// SOAConfig is dns_config.soa; all values are in seconds.
type SOAConfig struct {
	// Refresh is soa.refresh, default 3600.
	Refresh uint32
	// Retry is soa.retry, default 600.
	Retry uint32
	// Expire is soa.expire, default 86400.
	Expire uint32
	// MinTTL is soa.min_ttl, default 0.
	MinTTL uint32
}

// Performance is the performance block.
type Performance struct {
	// RaftMultiplier is raft_multiplier: scales Raft timing, 1 (fastest)
	// to 10. Default 5; dev mode 1.
	RaftMultiplier int
	// LeaveDrainTime is leave_drain_time, default 5s.
	LeaveDrainTime time.Duration
}

// RaftLogStore is the raft_logstore block: where a server keeps its Raft
// log.
type RaftLogStore struct {
	// Backend is backend: "boltdb" or "wal"; "" (unset) lets the server
	// choose (server.DefaultLogStore). A data directory that already
	// holds a Raft log keeps the backend that wrote it.
	Backend string
	// DisableLogCache is disable_log_cache: no in-memory cache of the
	// most recent entries.
	DisableLogCache bool
	// WALSegmentSizeMB is wal.segment_size_mb, default 64.
	WALSegmentSizeMB int
}

// Autopilot is the autopilot block.
type Autopilot struct {
	// CleanupDeadServers is cleanup_dead_servers, default true.
	CleanupDeadServers bool
	// LastContactThreshold is last_contact_threshold, default 200ms.
	LastContactThreshold time.Duration
	// MaxTrailingLogs is max_trailing_logs, default 250.
	MaxTrailingLogs int
	// MinQuorum is min_quorum, default 0.
	MinQuorum int
	// ServerStabilizationTime is server_stabilization_time, default 10s.
	ServerStabilizationTime time.Duration
}

// Limits is the limits block.
type Limits struct {
	// HTTPMaxConnsPerClient is http_max_conns_per_client, default 200.
	HTTPMaxConnsPerClient int
	// RPCMaxConnsPerClient is rpc_max_conns_per_client, default 100.
	RPCMaxConnsPerClient int
	// RPCHandshakeTimeout is rpc_handshake_timeout, default 5s.
	RPCHandshakeTimeout time.Duration
	// HTTPReadHeaderTimeout is http_read_header_timeout (Tribune's own):
	// how long a client may take to send a request's headers, default 10s.
	HTTPReadHeaderTimeout time.Duration
	// HTTPReadTimeout is http_read_timeout (Tribune's own): how long a
	// client may take to send a request's body, default 30s.
	HTTPReadTimeout time.Duration
	// HTTPIdleTimeout is http_idle_timeout (Tribune's own): how long an
	// idle keep-alive connection is kept open, default 90s.
	HTTPIdleTimeout time.Duration
	// KVMaxValueSize is kv_max_value_size in bytes, default 524288.
	KVMaxValueSize int
	// TxnMaxReqLen is txn_max_req_len in bytes, default 524288.
	TxnMaxReqLen int
}

// UIConfig is the ui_config block.
type UIConfig struct {
	// Enabled is ui_config.enabled (or the top-level ui key).
	Enabled bool
	// Dir is ui_config.dir: serve the UI from this directory instead of
	// the embedded copy.
	Dir string
	// ContentPath is ui_config.content_path, default "/ui/".
	ContentPath string
}

// ACL is the acl block. This package only parses and stores it.
type ACL struct {
	// Enabled is acl.enabled.
	Enabled bool
	// DefaultPolicy is acl.default_policy: "allow" (default) or "deny".
	DefaultPolicy string
	// DownPolicy is acl.down_policy: "allow", "deny", "extend-cache"
	// (default) or "async-cache".
	DownPolicy string
	// EnableTokenPersistence is acl.enable_token_persistence.
	EnableTokenPersistence bool
	// TokenTTL is acl.token_ttl, default 30s.
	TokenTTL time.Duration
	// PolicyTTL is acl.policy_ttl, default 30s.
	PolicyTTL time.Duration
	// RoleTTL is acl.role_ttl, default 30s.
	RoleTTL time.Duration
	// Tokens is acl.tokens.
	Tokens ACLTokens
	// EnableKeyListPolicy is acl.enable_key_list_policy: listing keys
	// needs the list level rather than read.
	EnableKeyListPolicy bool
	// EnableTokenReplication is acl.enable_token_replication: a secondary
	// datacenter's leader replicates global tokens too.
	EnableTokenReplication bool
}

// ACLTokens is acl.tokens.
type ACLTokens struct {
	// InitialManagement is initial_management (older name: master).
	InitialManagement string
	// Agent is agent.
	Agent string
	// AgentRecovery is agent_recovery (older name: agent_master).
	AgentRecovery string
	// Default is default.
	Default string
	// Replication is replication.
	Replication string
	// ConfigFileRegistration is config_file_service_registration: the
	// token of services and checks defined in config files.
	ConfigFileRegistration string
}

// Connect is the connect block.
type Connect struct {
	// Enabled is connect.enabled.
	Enabled bool
	// CAProvider is connect.ca_provider.
	CAProvider string
	// CAConfig is connect.ca_config, kept as decoded.
	CAConfig map[string]interface{}
}

// HTTPConfig is the http_config block.
type HTTPConfig struct {
	// ResponseHeaders is response_headers: headers added to every HTTP
	// API response.
	ResponseHeaders map[string]string
	// BlockEndpoints is block_endpoints: API path prefixes to refuse.
	BlockEndpoints []string
	// AllowWriteHTTPFrom is allow_write_http_from: the networks (CIDRs)
	// write requests may come from; empty means any.
	AllowWriteHTTPFrom []string
	// AllowedOrigins is allowed_origins (Tribune's own): browser origins
	// (scheme://host[:port]) whose writes are accepted besides the agent's
	// own address.
	AllowedOrigins []string
}

// Telemetry is the telemetry block. This package only parses and stores it.
type Telemetry struct {
	// PrometheusRetentionTime is prometheus_retention_time; zero disables
	// the Prometheus endpoint.
	PrometheusRetentionTime time.Duration
	// DisableHostname is disable_hostname.
	DisableHostname bool
	// StatsdAddress is statsd_address.
	StatsdAddress string
	// MetricsPrefix is metrics_prefix, default "consul" so existing
	// dashboards keep working.
	MetricsPrefix string
}

// Default returns the configuration of a client agent with nothing
// configured: Consul's defaults. NodeName and DataDir are empty (Load fills
// NodeName from the host name), so the result does not pass Validate until
// both are set. Defaults that depend on Server (LeaveOnTerminate,
// SkipLeaveOnInterrupt) are a client's; Load adjusts them, callers that set
// Server by hand should too.
func Default() *Config {
	return &Config{
		Datacenter:            "dc1",
		BindAddr:              "0.0.0.0",
		ClientAddrs:           []string{"127.0.0.1"},
		Ports:                 defaultPorts(),
		RetryInterval:         30 * time.Second,
		RetryIntervalWAN:      30 * time.Second,
		LeaveOnTerminate:      true,
		SkipLeaveOnInterrupt:  false,
		ReconnectTimeout:      72 * time.Hour,
		ReconnectTimeoutWAN:   72 * time.Hour,
		LogLevel:              "INFO",
		EncryptVerifyIncoming: true,
		EncryptVerifyOutgoing: true,
		Domain:                "consul.",
		DNS: DNSConfig{
			AllowStale:                  true,
			MaxStale:                    87600 * time.Hour,
			UDPAnswerLimit:              3,
			RecursorTimeout:             2 * time.Second,
			RecursorStrategy:            "sequential",
			EnableAdditionalNodeMetaTXT: true,
			SOA:                         SOAConfig{Refresh: 3600, Retry: 600, Expire: 86400, MinTTL: 0},
		},
		Performance: Performance{
			RaftMultiplier: 5,
			LeaveDrainTime: 5 * time.Second,
		},
		RPCHoldTimeout:        7 * time.Second,
		RaftSnapshotThreshold: 16384,
		RaftSnapshotInterval:  30 * time.Second,
		RaftTrailingLogs:      10240,
		RaftLogStore:          RaftLogStore{WALSegmentSizeMB: 64},
		Autopilot: Autopilot{
			CleanupDeadServers:      true,
			LastContactThreshold:    200 * time.Millisecond,
			MaxTrailingLogs:         250,
			ServerStabilizationTime: 10 * time.Second,
		},
		Limits: Limits{
			HTTPMaxConnsPerClient: 200,
			RPCMaxConnsPerClient:  100,
			RPCHandshakeTimeout:   5 * time.Second,
			HTTPReadHeaderTimeout: 10 * time.Second,
			HTTPReadTimeout:       30 * time.Second,
			HTTPIdleTimeout:       90 * time.Second,
			KVMaxValueSize:        512 * 1024,
			TxnMaxReqLen:          512 * 1024,
		},
		CheckOutputMaxSize: 4096,
		UI:                 UIConfig{ContentPath: "/ui/"},
		LogRotateDuration:  24 * time.Hour,
		ACL: ACL{
			DefaultPolicy: "allow",
			DownPolicy:    "extend-cache",
			TokenTTL:      30 * time.Second,
			PolicyTTL:     30 * time.Second,
			RoleTTL:       30 * time.Second,
		},
		Telemetry: Telemetry{MetricsPrefix: "consul"},
		// Connect is on by default, as on Consul 1.16's servers.
		Connect: Connect{Enabled: true},
	}
}

// DevDefault returns the configuration of `agent -dev`: a single server
// that bootstraps itself, binds to loopback, keeps its state in memory
// (while DataDir stays empty), runs Raft at full speed, and turns on the UI
// and Connect. NodeName is empty, as in Default.
func DevDefault() *Config {
	c := Default()
	c.DevMode = true
	c.Server = true
	c.Bootstrap = true
	c.BindAddr = "127.0.0.1"
	c.Performance.RaftMultiplier = 1
	c.UI.Enabled = true
	c.Connect.Enabled = true
	c.LeaveOnTerminate = false
	c.SkipLeaveOnInterrupt = true
	c.Ports.GRPC = 8502
	return c
}

func defaultPorts() Ports {
	return Ports{
		DNS:            8600,
		HTTP:           8500,
		HTTPS:          -1,
		GRPC:           8502,
		GRPCTLS:        -1,
		SerfLAN:        8301,
		SerfWAN:        8302,
		Server:         8300,
		SidecarMinPort: 21000,
		SidecarMaxPort: 21255,
		ExposeMinPort:  21500,
		ExposeMaxPort:  21755,
	}
}

// InMemory reports whether the agent keeps its state in memory: dev mode
// with no data_dir.
func (c *Config) InMemory() bool {
	return c.DevMode && c.DataDir == ""
}

// EncryptKey returns the decoded gossip encryption key, or nil when encrypt
// is unset.
func (c *Config) EncryptKey() ([]byte, error) {
	if c.Encrypt == "" {
		return nil, nil
	}
	key, err := decodeGossipKey(c.Encrypt)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return key, nil
}

func decodeGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("invalid base64: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("key must decode to 16, 24 or 32 bytes, got %d", len(key))
}
