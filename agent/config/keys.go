package config

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// This file maps configuration keys onto Config fields. Each source (file,
// flags, -hcl snippet) is applied in turn to the same Config: a later scalar
// replaces an earlier one, lists append and maps merge.

// applier applies one source to a Config.
type applier struct {
	// source names the source in warnings: a file path, or a description
	// such as "command-line flags".
	source string
	// warnings collects messages for the caller of Load.
	warnings *[]string
	// set records every key path any source has set, so defaults that
	// depend on other keys (leave_on_terminate on server) apply only to
	// keys left unset.
	set map[string]bool
}

// field applies the value v found at path.
type field func(a *applier, path string, v interface{}) error

func (a *applier) warn(format string, args ...interface{}) {
	*a.warnings = append(*a.warnings, fmt.Sprintf(format, args...))
}

func (a *applier) unknown(path string) {
	a.warn("config: unknown key %q in %s", path, a.source)
}

// section applies every key of the object(s) in v using fields, warning
// about keys fields does not know.
func (a *applier) section(path string, v interface{}, fields map[string]field) error {
	objs, err := objectList(path, v)
	if err != nil {
		return err
	}
	for _, m := range objs {
		for _, k := range sortedKeys(m) {
			p := joinPath(path, k)
			f, ok := fields[k]
			if !ok {
				a.unknown(p)
				continue
			}
			if err := f(a, p, m[k]); err != nil {
				return err
			}
			a.set[p] = true
		}
	}
	return nil
}

func sectionField(fields map[string]field) field {
	return func(a *applier, path string, v interface{}) error {
		return a.section(path, v, fields)
	}
}

func stringField(dst *string) field {
	return func(_ *applier, path string, v interface{}) error {
		s, err := toString(path, v)
		if err != nil {
			return err
		}
		*dst = s
		return nil
	}
}

func boolField(dst *bool) field {
	return func(_ *applier, path string, v interface{}) error {
		b, err := toBool(path, v)
		if err != nil {
			return err
		}
		*dst = b
		return nil
	}
}

func intField(dst *int) field {
	return func(_ *applier, path string, v interface{}) error {
		n, err := toInt(path, v)
		if err != nil {
			return err
		}
		*dst = n
		return nil
	}
}

func uint32Field(dst *uint32) field {
	return func(_ *applier, path string, v interface{}) error {
		n, err := toInt(path, v)
		if err != nil {
			return err
		}
		if n < 0 || n > math.MaxUint32 {
			return fmt.Errorf("%s: must be between 0 and %d, got %d", path, uint32(math.MaxUint32), n)
		}
		*dst = uint32(n)
		return nil
	}
}

func durationField(dst *time.Duration) field {
	return func(_ *applier, path string, v interface{}) error {
		d, err := toDuration(path, v, false)
		if err != nil {
			return err
		}
		*dst = d
		return nil
	}
}

// listField appends to dst.
func listField(dst *[]string) field {
	return func(_ *applier, path string, v interface{}) error {
		l, err := toStringList(path, v)
		if err != nil {
			return err
		}
		*dst = append(*dst, l...)
		return nil
	}
}

// spaceListField replaces dst with the space-separated words of a string
// (client_addr, addresses.*).
func spaceListField(dst *[]string) field {
	return func(_ *applier, path string, v interface{}) error {
		s, err := toString(path, v)
		if err != nil {
			return err
		}
		*dst = strings.Fields(s)
		return nil
	}
}

// stringMapField merges into dst.
func stringMapField(dst *map[string]string) field {
	return func(_ *applier, path string, v interface{}) error {
		m, err := toStringMap(path, v)
		if err != nil {
			return err
		}
		if *dst == nil {
			*dst = make(map[string]string, len(m))
		}
		for k, s := range m {
			(*dst)[k] = s
		}
		return nil
	}
}

// durationMapField merges into dst.
func durationMapField(dst *map[string]time.Duration) field {
	return func(_ *applier, path string, v interface{}) error {
		objs, err := objectList(path, v)
		if err != nil {
			return err
		}
		for _, m := range objs {
			for _, k := range sortedKeys(m) {
				d, err := toDuration(joinPath(path, k), m[k], false)
				if err != nil {
					return err
				}
				if *dst == nil {
					*dst = make(map[string]time.Duration)
				}
				(*dst)[k] = d
			}
		}
		return nil
	}
}

// rawMapField merges the top-level keys of an uninterpreted block into dst.
func rawMapField(dst *map[string]interface{}) field {
	return func(_ *applier, path string, v interface{}) error {
		m, err := toRawMap(path, v)
		if err != nil {
			return err
		}
		if *dst == nil {
			*dst = make(map[string]interface{}, len(m))
		}
		for k, e := range m {
			(*dst)[k] = e
		}
		return nil
	}
}

// deprecatedField applies f and warns that the key has a newer name.
func deprecatedField(newName string, f field) field {
	return func(a *applier, path string, v interface{}) error {
		a.warn("config: %q in %s is deprecated; use %q", path, a.source, newName)
		return f(a, path, v)
	}
}

// servicesField appends service definitions (services, service).
func servicesField(dst *[]ServiceDefinition) field {
	return func(a *applier, path string, v interface{}) error {
		objs, err := objectList(path, v)
		if err != nil {
			return err
		}
		for i, m := range objs {
			p := path
			if len(objs) > 1 || path == "services" {
				p = indexPath(path, i)
			}
			s, err := decodeService(p, m, false, a.unknown)
			if err != nil {
				return err
			}
			*dst = append(*dst, *s)
		}
		return nil
	}
}

// checksField appends check definitions (checks, check).
func checksField(dst *[]CheckDefinition) field {
	return func(a *applier, path string, v interface{}) error {
		objs, err := objectList(path, v)
		if err != nil {
			return err
		}
		for i, m := range objs {
			p := path
			if len(objs) > 1 || path == "checks" {
				p = indexPath(path, i)
			}
			c, err := decodeCheck(p, m, false, a.unknown)
			if err != nil {
				return err
			}
			*dst = append(*dst, *c)
		}
		return nil
	}
}

// configFields returns the setters for every top-level key, bound to c.
func configFields(c *Config) map[string]field {
	return map[string]field{
		"node_name":          stringField(&c.NodeName),
		"node_id":            stringField(&c.NodeID),
		"datacenter":         stringField(&c.Datacenter),
		"primary_datacenter": stringField(&c.PrimaryDatacenter),
		"data_dir":           stringField(&c.DataDir),
		"server":             boolField(&c.Server),
		"bootstrap":          boolField(&c.Bootstrap),
		"bootstrap_expect":   intField(&c.BootstrapExpect),
		"read_replica":       boolField(&c.ReadReplica),
		"non_voting_server":  deprecatedField("read_replica", boolField(&c.ReadReplica)),

		"bind_addr":          stringField(&c.BindAddr),
		"advertise_addr":     stringField(&c.AdvertiseAddrLAN),
		"advertise_addr_wan": stringField(&c.AdvertiseAddrWAN),
		"client_addr":        spaceListField(&c.ClientAddrs),
		"ports": sectionField(map[string]field{
			"dns":              intField(&c.Ports.DNS),
			"http":             intField(&c.Ports.HTTP),
			"https":            intField(&c.Ports.HTTPS),
			"grpc":             intField(&c.Ports.GRPC),
			"grpc_tls":         intField(&c.Ports.GRPCTLS),
			"serf_lan":         intField(&c.Ports.SerfLAN),
			"serf_wan":         intField(&c.Ports.SerfWAN),
			"server":           intField(&c.Ports.Server),
			"sidecar_min_port": intField(&c.Ports.SidecarMinPort),
			"sidecar_max_port": intField(&c.Ports.SidecarMaxPort),
			"expose_min_port":  intField(&c.Ports.ExposeMinPort),
			"expose_max_port":  intField(&c.Ports.ExposeMaxPort),
		}),
		"addresses": sectionField(map[string]field{
			"dns":   spaceListField(&c.Addresses.DNS),
			"http":  spaceListField(&c.Addresses.HTTP),
			"https": spaceListField(&c.Addresses.HTTPS),
			"grpc":  spaceListField(&c.Addresses.GRPC),
		}),

		"retry_join":              listField(&c.RetryJoin),
		"retry_join_wan":          listField(&c.RetryJoinWAN),
		"retry_interval":          durationField(&c.RetryInterval),
		"retry_interval_wan":      durationField(&c.RetryIntervalWAN),
		"retry_max":               intField(&c.RetryMax),
		"retry_max_wan":           intField(&c.RetryMaxWAN),
		"start_join":              listField(&c.StartJoin),
		"start_join_wan":          listField(&c.StartJoinWAN),
		"translate_wan_addrs":     boolField(&c.TranslateWANAddrs),
		"rejoin_after_leave":      boolField(&c.RejoinAfterLeave),
		"leave_on_terminate":      boolField(&c.LeaveOnTerminate),
		"skip_leave_on_interrupt": boolField(&c.SkipLeaveOnInterrupt),
		"reconnect_timeout":       durationField(&c.ReconnectTimeout),
		"reconnect_timeout_wan":   durationField(&c.ReconnectTimeoutWAN),

		"log_level": stringField(&c.LogLevel),
		"log_json":  boolField(&c.LogJSON),
		"pid_file":  stringField(&c.PidFile),

		"log_file":             stringField(&c.LogFile),
		"log_rotate_bytes":     intField(&c.LogRotateBytes),
		"log_rotate_duration":  durationField(&c.LogRotateDuration),
		"log_rotate_max_files": intField(&c.LogRotateMaxFiles),

		"encrypt":                 stringField(&c.Encrypt),
		"encrypt_verify_incoming": boolField(&c.EncryptVerifyIncoming),
		"encrypt_verify_outgoing": boolField(&c.EncryptVerifyOutgoing),

		"domain":     stringField(&c.Domain),
		"alt_domain": stringField(&c.AltDomain),
		"recursors":  listField(&c.Recursors),
		"dns_config": sectionField(map[string]field{
			"allow_stale":                     boolField(&c.DNS.AllowStale),
			"max_stale":                       durationField(&c.DNS.MaxStale),
			"node_ttl":                        durationField(&c.DNS.NodeTTL),
			"service_ttl":                     durationMapField(&c.DNS.ServiceTTL),
			"udp_answer_limit":                intField(&c.DNS.UDPAnswerLimit),
			"a_record_limit":                  intField(&c.DNS.ARecordLimit),
			"enable_truncate":                 boolField(&c.DNS.EnableTruncate),
			"only_passing":                    boolField(&c.DNS.OnlyPassing),
			"recursor_timeout":                durationField(&c.DNS.RecursorTimeout),
			"recursor_strategy":               stringField(&c.DNS.RecursorStrategy),
			"use_cache":                       boolField(&c.DNS.UseCache),
			"cache_max_age":                   durationField(&c.DNS.CacheMaxAge),
			"disable_compression":             boolField(&c.DNS.DisableCompression),
			"enable_additional_node_meta_txt": boolField(&c.DNS.EnableAdditionalNodeMetaTXT),
			"soa": sectionField(map[string]field{
				"refresh": uint32Field(&c.DNS.SOA.Refresh),
				"retry":   uint32Field(&c.DNS.SOA.Retry),
				"expire":  uint32Field(&c.DNS.SOA.Expire),
				"min_ttl": uint32Field(&c.DNS.SOA.MinTTL),
			}),
		}),

		"performance": sectionField(map[string]field{
			"raft_multiplier":  intField(&c.Performance.RaftMultiplier),
			"leave_drain_time": durationField(&c.Performance.LeaveDrainTime),
			"rpc_hold_timeout": durationField(&c.RPCHoldTimeout),
		}),
		"rpc_hold_timeout": durationField(&c.RPCHoldTimeout),

		// Accepted for compatibility and ignored: Tribune speaks one Raft
		// protocol version.
		"raft_protocol": func(_ *applier, path string, v interface{}) error {
			_, err := toInt(path, v)
			return err
		},
		"raft_snapshot_threshold": intField(&c.RaftSnapshotThreshold),
		"raft_snapshot_interval":  durationField(&c.RaftSnapshotInterval),
		"raft_trailing_logs":      intField(&c.RaftTrailingLogs),
		"raft_logstore": sectionField(map[string]field{
			"backend":           stringField(&c.RaftLogStore.Backend),
			"disable_log_cache": boolField(&c.RaftLogStore.DisableLogCache),
			"wal": sectionField(map[string]field{
				"segment_size_mb": intField(&c.RaftLogStore.WALSegmentSizeMB),
			}),
		}),
		"autopilot": sectionField(map[string]field{
			"cleanup_dead_servers":      boolField(&c.Autopilot.CleanupDeadServers),
			"last_contact_threshold":    durationField(&c.Autopilot.LastContactThreshold),
			"max_trailing_logs":         intField(&c.Autopilot.MaxTrailingLogs),
			"min_quorum":                intField(&c.Autopilot.MinQuorum),
			"server_stabilization_time": durationField(&c.Autopilot.ServerStabilizationTime),
		}),
		"limits": sectionField(map[string]field{
			"http_max_conns_per_client": intField(&c.Limits.HTTPMaxConnsPerClient),
			"rpc_max_conns_per_client":  intField(&c.Limits.RPCMaxConnsPerClient),
			"rpc_handshake_timeout":     durationField(&c.Limits.RPCHandshakeTimeout),
			"http_read_header_timeout":  durationField(&c.Limits.HTTPReadHeaderTimeout),
			"http_read_timeout":         durationField(&c.Limits.HTTPReadTimeout),
			"http_idle_timeout":         durationField(&c.Limits.HTTPIdleTimeout),
			"kv_max_value_size":         intField(&c.Limits.KVMaxValueSize),
			"txn_max_req_len":           intField(&c.Limits.TxnMaxReqLen),
		}),

		"enable_script_checks":       boolField(&c.EnableScriptChecks),
		"enable_local_script_checks": boolField(&c.EnableLocalScriptChecks),
		"check_output_max_size":      intField(&c.CheckOutputMaxSize),

		"node_meta": stringMapField(&c.NodeMeta),
		"ui":        boolField(&c.UI.Enabled),
		"ui_config": sectionField(map[string]field{
			"enabled":      boolField(&c.UI.Enabled),
			"dir":          stringField(&c.UI.Dir),
			"content_path": stringField(&c.UI.ContentPath),
		}),
		"acl": sectionField(map[string]field{
			"enabled":                  boolField(&c.ACL.Enabled),
			"default_policy":           stringField(&c.ACL.DefaultPolicy),
			"down_policy":              stringField(&c.ACL.DownPolicy),
			"enable_token_persistence": boolField(&c.ACL.EnableTokenPersistence),
			"token_ttl":                durationField(&c.ACL.TokenTTL),
			"policy_ttl":               durationField(&c.ACL.PolicyTTL),
			"role_ttl":                 durationField(&c.ACL.RoleTTL),
			"enable_key_list_policy":   boolField(&c.ACL.EnableKeyListPolicy),
			"enable_token_replication": boolField(&c.ACL.EnableTokenReplication),
			"tokens": sectionField(map[string]field{
				"initial_management":               stringField(&c.ACL.Tokens.InitialManagement),
				"master":                           deprecatedField("acl.tokens.initial_management", stringField(&c.ACL.Tokens.InitialManagement)),
				"agent":                            stringField(&c.ACL.Tokens.Agent),
				"agent_recovery":                   stringField(&c.ACL.Tokens.AgentRecovery),
				"agent_master":                     deprecatedField("acl.tokens.agent_recovery", stringField(&c.ACL.Tokens.AgentRecovery)),
				"default":                          stringField(&c.ACL.Tokens.Default),
				"replication":                      stringField(&c.ACL.Tokens.Replication),
				"config_file_service_registration": stringField(&c.ACL.Tokens.ConfigFileRegistration),
			}),
		}),
		"connect": sectionField(map[string]field{
			"enabled":     boolField(&c.Connect.Enabled),
			"ca_provider": stringField(&c.Connect.CAProvider),
			"ca_config":   rawMapField(&c.Connect.CAConfig),
		}),
		"http_config": sectionField(map[string]field{
			"response_headers": stringMapField(&c.HTTP.ResponseHeaders),
			"block_endpoints":  listField(&c.HTTP.BlockEndpoints),
			// allowed_origins is Tribune's own key.
			"allow_write_http_from": listField(&c.HTTP.AllowWriteHTTPFrom),
			"allowed_origins":       listField(&c.HTTP.AllowedOrigins),
		}),
		"telemetry": sectionField(map[string]field{
			"prometheus_retention_time": durationField(&c.Telemetry.PrometheusRetentionTime),
			"disable_hostname":          boolField(&c.Telemetry.DisableHostname),
			"statsd_address":            stringField(&c.Telemetry.StatsdAddress),
			"metrics_prefix":            stringField(&c.Telemetry.MetricsPrefix),
		}),

		"disable_update_check": boolField(&c.DisableUpdateCheck),
		"enable_debug":         boolField(&c.EnableDebug),
		"server_name":          stringField(&c.ServerName),

		"services": servicesField(&c.Services),
		"service":  servicesField(&c.Services),
		"checks":   checksField(&c.Checks),
		"check":    checksField(&c.Checks),
	}
}

// apply applies one decoded source to c.
func (a *applier) apply(c *Config, m map[string]interface{}) error {
	fields := configFields(c)
	addLegacyACLFields(c, fields)
	addTLSFields(c, fields)
	return a.section("", m, fields)
}
