package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// fieldError is a validation error about one key. The key is in file
// spelling ("ports.http", "services[0].checks[1].interval").
type fieldError struct {
	key string
	msg string
}

// Error returns "key: message", or the message alone for a keyless error.
func (e *fieldError) Error() string {
	if e.key == "" {
		return e.msg
	}
	return e.key + ": " + e.msg
}

func fieldErr(key, msg string) error {
	return &fieldError{key: key, msg: msg}
}

func fieldErrf(key, format string, args ...interface{}) error {
	return &fieldError{key: key, msg: fmt.Sprintf(format, args...)}
}

// joinKey puts prefix in front of key ("services[0]" + "port",
// "checks" + "[1].ttl").
func joinKey(prefix, key string) string {
	switch {
	case key == "":
		return prefix
	case prefix == "":
		return key
	case strings.HasPrefix(key, "["):
		return prefix + key
	}
	return prefix + "." + key
}

// flattenErrors lists the leaves of errors built with errors.Join.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// prefixErrors puts prefix in front of the key of every error in err.
func prefixErrors(prefix string, err error) error {
	var out []error
	for _, e := range flattenErrors(err) {
		if fe, ok := e.(*fieldError); ok {
			out = append(out, &fieldError{key: joinKey(prefix, fe.key), msg: fe.msg})
			continue
		}
		out = append(out, fmt.Errorf("%s: %w", prefix, e))
	}
	return errors.Join(out...)
}

// sortErrors orders errors by message, for errors found by ranging over a
// map.
func sortErrors(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}

// isDNSLabel reports whether s is a valid DNS label: letters, digits and
// dashes, 1 to 63 characters, not starting or ending with a dash.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case ch == '-' && i != 0 && i != len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isDomain reports whether s (with or without the final dot) is a DNS name
// made of valid labels.
func isDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// isUUID reports whether s has the 8-4-4-4-12 hexadecimal form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch i {
		case 8, 13, 18, 23:
			if ch != '-' {
				return false
			}
			continue
		}
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
			return false
		}
	}
	return true
}

// checkIP validates an address key that must hold one IP address.
func checkIP(key, s string, allowUnspecified bool) error {
	if strings.Contains(s, "{{") {
		return fieldErrf(key, "go-sockaddr templates are not supported, got %q", s)
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return fieldErrf(key, "must be an IP address, got %q", s)
	}
	if !allowUnspecified && ip.IsUnspecified() {
		return fieldErrf(key, "must not be an unspecified address, got %q", s)
	}
	return nil
}

// checkListenAddr validates one client listen address: an IP, or a Unix
// socket as unix:///path.
func checkListenAddr(key, s string) error {
	if p, ok := strings.CutPrefix(s, "unix://"); ok {
		if p == "" {
			return fieldErrf(key, "missing socket path in %q", s)
		}
		return nil
	}
	return checkIP(key, s, true)
}

// checkPort validates a port. disableable ports also take -1.
func checkPort(key string, port int, disableable bool) error {
	if disableable && port == -1 {
		return nil
	}
	if port < 1 || port > 65535 {
		return fieldErrf(key, "must be between 1 and 65535, got %d", port)
	}
	return nil
}

// Limits on node_meta and service meta, from Consul's documentation.
const (
	metaMaxPairs    = 64
	metaMaxKeyLen   = 128
	metaMaxValueLen = 512
)

// validateMeta checks metadata against Consul's limits.
func validateMeta(key string, m map[string]string) error {
	var errs []error
	if len(m) > metaMaxPairs {
		errs = append(errs, fieldErrf(key, "at most %d keys are allowed, got %d", metaMaxPairs, len(m)))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := key + "." + k
		switch {
		case k == "":
			errs = append(errs, fieldErr(key, "keys must not be empty"))
			continue
		case len(k) > metaMaxKeyLen:
			errs = append(errs, fieldErrf(p, "key is longer than %d characters", metaMaxKeyLen))
		case !isMetaKey(k):
			errs = append(errs, fieldErr(p, "keys may only contain letters, digits, '-' and '_'"))
		case strings.HasPrefix(k, "consul-"):
			errs = append(errs, fieldErr(p, "the \"consul-\" prefix is reserved"))
		}
		if len(m[k]) > metaMaxValueLen {
			errs = append(errs, fieldErrf(p, "value is longer than %d characters", metaMaxValueLen))
		}
	}
	return errors.Join(errs...)
}

func isMetaKey(k string) bool {
	for i := 0; i < len(k); i++ {
		ch := k[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}

// minReconnectTimeout is the smallest reconnect_timeout Consul accepts.
const minReconnectTimeout = 8 * time.Hour

// Validate checks c and returns every problem found, each naming its key
// ("ports.http: must be between 1 and 65535, got 70000"), joined with
// errors.Join. It does not modify c.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	addf := func(key, format string, args ...interface{}) {
		errs = append(errs, fieldErrf(key, format, args...))
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			addf(key, "must be greater than 0, got %s", d)
		}
	}
	nonNegative := func(key string, d time.Duration) {
		if d < 0 {
			addf(key, "must not be negative, got %s", d)
		}
	}
	nonNegativeInt := func(key string, n int) {
		if n < 0 {
			addf(key, "must not be negative, got %d", n)
		}
	}

	// Identity.
	if c.NodeName == "" {
		addf("node_name", "must be set")
	}
	if c.NodeID != "" && !isUUID(c.NodeID) {
		addf("node_id", "must be a UUID, got %q", c.NodeID)
	}
	if !isDNSLabel(c.Datacenter) {
		addf("datacenter", "must be a valid DNS label (letters, digits and dashes), got %q", c.Datacenter)
	}
	if c.PrimaryDatacenter != "" && c.PrimaryDatacenter != c.Datacenter && !isDNSLabel(c.PrimaryDatacenter) {
		addf("primary_datacenter", "must be a valid DNS label (letters, digits and dashes), got %q", c.PrimaryDatacenter)
	}
	if c.DataDir == "" && !c.DevMode {
		addf("data_dir", "must be set (or run with -dev)")
	}

	// Log file.
	nonNegativeInt("log_rotate_bytes", c.LogRotateBytes)
	nonNegative("log_rotate_duration", c.LogRotateDuration)
	if c.LogRotateMaxFiles < -1 {
		addf("log_rotate_max_files", "must be -1 or more, got %d", c.LogRotateMaxFiles)
	}

	// Server role. Dev mode bootstraps by itself, so bootstrap_expect gets
	// the dev-mode message rather than the bootstrap conflict.
	if c.BootstrapExpect > 0 && c.DevMode {
		addf("bootstrap_expect", "cannot be used in dev mode")
	} else if c.Bootstrap && c.BootstrapExpect > 0 {
		addf("bootstrap_expect", "cannot be used with bootstrap = true")
	}
	if c.Bootstrap && !c.Server {
		addf("bootstrap", "requires server = true")
	}
	if c.BootstrapExpect < 0 {
		addf("bootstrap_expect", "must not be negative, got %d", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 0 && !c.Server {
		addf("bootstrap_expect", "requires server = true")
	}
	if c.ReadReplica && !c.Server {
		addf("read_replica", "requires server = true")
	}
	if c.ReadReplica && c.Bootstrap {
		addf("read_replica", "cannot be used with bootstrap = true")
	}

	// Addresses and ports.
	add(checkIP("bind_addr", c.BindAddr, true))
	if c.AdvertiseAddrLAN != "" {
		add(checkIP("advertise_addr", c.AdvertiseAddrLAN, false))
	}
	if c.AdvertiseAddrWAN != "" {
		add(checkIP("advertise_addr_wan", c.AdvertiseAddrWAN, false))
	}
	for i, a := range c.ClientAddrs {
		add(checkListenAddr(indexPath("client_addr", i), a))
	}
	for key, list := range map[string][]string{
		"addresses.dns":   c.Addresses.DNS,
		"addresses.http":  c.Addresses.HTTP,
		"addresses.https": c.Addresses.HTTPS,
		"addresses.grpc":  c.Addresses.GRPC,
	} {
		for i, a := range list {
			add(checkListenAddr(indexPath(key, i), a))
		}
	}
	add(checkPort("ports.dns", c.Ports.DNS, true))
	add(checkPort("ports.http", c.Ports.HTTP, true))
	add(checkPort("ports.https", c.Ports.HTTPS, true))
	add(checkPort("ports.grpc", c.Ports.GRPC, true))
	add(checkPort("ports.grpc_tls", c.Ports.GRPCTLS, true))
	add(checkPort("ports.serf_lan", c.Ports.SerfLAN, false))
	add(checkPort("ports.serf_wan", c.Ports.SerfWAN, true))
	add(checkPort("ports.server", c.Ports.Server, false))
	add(checkPort("ports.sidecar_min_port", c.Ports.SidecarMinPort, false))
	add(checkPort("ports.sidecar_max_port", c.Ports.SidecarMaxPort, false))
	add(checkPort("ports.expose_min_port", c.Ports.ExposeMinPort, false))
	add(checkPort("ports.expose_max_port", c.Ports.ExposeMaxPort, false))
	add(validateTLS(c))
	if c.Ports.SidecarMinPort > c.Ports.SidecarMaxPort {
		addf("ports.sidecar_min_port", "must not exceed ports.sidecar_max_port (%d), got %d", c.Ports.SidecarMaxPort, c.Ports.SidecarMinPort)
	}
	if c.Ports.ExposeMinPort > c.Ports.ExposeMaxPort {
		addf("ports.expose_min_port", "must not exceed ports.expose_max_port (%d), got %d", c.Ports.ExposeMaxPort, c.Ports.ExposeMinPort)
	}
	errs = append(errs, checkListenerConflicts(c.listeners())...)

	// Joining and leaving.
	positive("retry_interval", c.RetryInterval)
	positive("retry_interval_wan", c.RetryIntervalWAN)
	nonNegativeInt("retry_max", c.RetryMax)
	nonNegativeInt("retry_max_wan", c.RetryMaxWAN)
	if c.ReconnectTimeout < minReconnectTimeout {
		addf("reconnect_timeout", "must be at least %s, got %s", minReconnectTimeout, c.ReconnectTimeout)
	}
	if c.ReconnectTimeoutWAN < minReconnectTimeout {
		addf("reconnect_timeout_wan", "must be at least %s, got %s", minReconnectTimeout, c.ReconnectTimeoutWAN)
	}

	// Logging and encryption.
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "warning", "err", "error":
	default:
		addf("log_level", "must be one of trace, debug, info, warn or err, got %q", c.LogLevel)
	}
	if c.Encrypt != "" {
		if _, err := decodeGossipKey(c.Encrypt); err != nil {
			addf("encrypt", "%v", err)
		}
	}

	// DNS.
	if !isDomain(c.Domain) {
		addf("domain", "must be a valid domain name, got %q", c.Domain)
	}
	if c.AltDomain != "" && !isDomain(c.AltDomain) {
		addf("alt_domain", "must be a valid domain name, got %q", c.AltDomain)
	}
	for i, r := range c.Recursors {
		add(checkRecursor(indexPath("recursors", i), r))
	}
	nonNegative("dns_config.max_stale", c.DNS.MaxStale)
	nonNegative("dns_config.node_ttl", c.DNS.NodeTTL)
	ttlKeys := make([]string, 0, len(c.DNS.ServiceTTL))
	for k := range c.DNS.ServiceTTL {
		ttlKeys = append(ttlKeys, k)
	}
	sort.Strings(ttlKeys)
	for _, k := range ttlKeys {
		nonNegative("dns_config.service_ttl."+k, c.DNS.ServiceTTL[k])
	}
	nonNegativeInt("dns_config.udp_answer_limit", c.DNS.UDPAnswerLimit)
	nonNegativeInt("dns_config.a_record_limit", c.DNS.ARecordLimit)
	positive("dns_config.recursor_timeout", c.DNS.RecursorTimeout)
	switch c.DNS.RecursorStrategy {
	case "sequential", "random":
	default:
		addf("dns_config.recursor_strategy", "must be sequential or random, got %q", c.DNS.RecursorStrategy)
	}
	nonNegative("dns_config.cache_max_age", c.DNS.CacheMaxAge)

	// Raft and servers.
	if c.Performance.RaftMultiplier < 1 || c.Performance.RaftMultiplier > 10 {
		addf("performance.raft_multiplier", "must be between 1 and 10, got %d", c.Performance.RaftMultiplier)
	}
	nonNegative("performance.leave_drain_time", c.Performance.LeaveDrainTime)
	positive("rpc_hold_timeout", c.RPCHoldTimeout)
	if c.RaftSnapshotThreshold < 1 {
		addf("raft_snapshot_threshold", "must be greater than 0, got %d", c.RaftSnapshotThreshold)
	}
	positive("raft_snapshot_interval", c.RaftSnapshotInterval)
	switch c.RaftLogStore.Backend {
	case "", "boltdb", "wal":
	default:
		addf("raft_logstore.backend", "must be boltdb or wal, got %q", c.RaftLogStore.Backend)
	}
	if n := c.RaftLogStore.WALSegmentSizeMB; n < 1 || n > 1024 {
		addf("raft_logstore.wal.segment_size_mb", "must be between 1 and 1024, got %d", n)
	}
	nonNegativeInt("raft_trailing_logs", c.RaftTrailingLogs)
	nonNegative("autopilot.last_contact_threshold", c.Autopilot.LastContactThreshold)
	nonNegativeInt("autopilot.max_trailing_logs", c.Autopilot.MaxTrailingLogs)
	nonNegativeInt("autopilot.min_quorum", c.Autopilot.MinQuorum)
	nonNegative("autopilot.server_stabilization_time", c.Autopilot.ServerStabilizationTime)
	nonNegativeInt("limits.http_max_conns_per_client", c.Limits.HTTPMaxConnsPerClient)
	nonNegativeInt("limits.rpc_max_conns_per_client", c.Limits.RPCMaxConnsPerClient)
	nonNegative("limits.rpc_handshake_timeout", c.Limits.RPCHandshakeTimeout)
	positive("limits.http_read_header_timeout", c.Limits.HTTPReadHeaderTimeout)
	positive("limits.http_read_timeout", c.Limits.HTTPReadTimeout)
	positive("limits.http_idle_timeout", c.Limits.HTTPIdleTimeout)
	for _, s := range c.HTTP.AllowWriteHTTPFrom {
		if _, err := netip.ParsePrefix(s); err != nil {
			if _, err := netip.ParseAddr(s); err != nil {
				addf("http_config.allow_write_http_from", "%q is neither a CIDR nor an IP address", s)
			}
		}
	}
	for _, o := range c.HTTP.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			addf("http_config.allowed_origins", "%q is not an origin (scheme://host[:port])", o)
		}
	}
	if c.Limits.KVMaxValueSize < 1 {
		addf("limits.kv_max_value_size", "must be greater than 0, got %d", c.Limits.KVMaxValueSize)
	}
	if c.Limits.TxnMaxReqLen < 1 {
		addf("limits.txn_max_req_len", "must be greater than 0, got %d", c.Limits.TxnMaxReqLen)
	}

	// Checks, metadata, ACLs.
	if c.CheckOutputMaxSize < 1 {
		addf("check_output_max_size", "must be greater than 0, got %d", c.CheckOutputMaxSize)
	}
	add(validateMeta("node_meta", c.NodeMeta))
	switch c.ACL.DefaultPolicy {
	case "allow", "deny":
	default:
		addf("acl.default_policy", "must be allow or deny, got %q", c.ACL.DefaultPolicy)
	}
	switch c.ACL.DownPolicy {
	case "allow", "deny", "extend-cache", "async-cache":
	default:
		addf("acl.down_policy", "must be allow, deny, extend-cache or async-cache, got %q", c.ACL.DownPolicy)
	}
	nonNegative("acl.token_ttl", c.ACL.TokenTTL)
	nonNegative("acl.policy_ttl", c.ACL.PolicyTTL)
	nonNegative("acl.role_ttl", c.ACL.RoleTTL)
	add(validateACLTokens(c))
	nonNegative("telemetry.prometheus_retention_time", c.Telemetry.PrometheusRetentionTime)

	// Definitions.
	for i := range c.Services {
		if err := c.Services[i].Validate(); err != nil {
			add(prefixErrors(indexPath("services", i), err))
		}
	}
	for i := range c.Checks {
		key := indexPath("checks", i)
		if c.Checks[i].Name == "" {
			addf(key+".name", "missing check name")
		}
		if err := c.Checks[i].Validate(); err != nil {
			add(prefixErrors(key, err))
		}
	}
	return errors.Join(errs...)
}

// checkRecursor validates a DNS recursor: an IP, or IP:port.
func checkRecursor(key, s string) error {
	if strings.Contains(s, "{{") {
		return fieldErrf(key, "go-sockaddr templates are not supported, got %q", s)
	}
	if net.ParseIP(s) != nil {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil && net.ParseIP(host) != nil {
		if n, err := strconv.Atoi(port); err == nil && n >= 1 && n <= 65535 {
			return nil
		}
	}
	return fieldErrf(key, "must be an IP address or IP:port, got %q", s)
}

// warnings returns Consul's advisory messages about a valid configuration.
func (c *Config) warnings() []string {
	var w []string
	if c.NodeName != "" {
		if len(c.NodeName) > 63 {
			w = append(w, fmt.Sprintf("config: node_name %q is longer than 63 characters and will not be discoverable via DNS", c.NodeName))
		} else if !isDNSLabel(c.NodeName) {
			w = append(w, fmt.Sprintf("config: node_name %q will not be discoverable via DNS: valid characters are letters, digits and dashes", c.NodeName))
		}
	}
	if c.Bootstrap && !c.DevMode {
		w = append(w, "config: bootstrap = true: do not enable unless necessary")
	}
	if c.BootstrapExpect == 1 {
		w = append(w, "config: bootstrap_expect = 1: this is the same as bootstrap = true")
	}
	if c.BootstrapExpect > 1 && c.BootstrapExpect%2 == 0 {
		w = append(w, fmt.Sprintf("config: bootstrap_expect = %d: an even number of servers does not improve fault tolerance over %d", c.BootstrapExpect, c.BootstrapExpect-1))
	}
	w = append(w, tlsPortWarnings(c)...)
	if c.EnableScriptChecks && !c.ACL.Enabled {
		w = append(w, "config: enable_script_checks without acl.enabled lets anyone who can reach the HTTP API run commands on this machine; consider enable_local_script_checks")
	}
	return w
}
