package local

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/agent/checks"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/catalog"
)

// AddServiceDefinition registers a service definition (from a configuration
// file when fromConfig, else from the API) with its checks. The service and
// its checks are synced with def.Token (a check of its own Token with that
// one); "" syncs with the agent's token. What cannot be registered as given
// is an error wrapping ErrInvalid.
func (l *State) AddServiceDefinition(def *config.ServiceDefinition, fromConfig bool) error {
	return l.AddServiceDefinitionReplacing(def, fromConfig, false)
}

// AddServiceDefinitionReplacing is AddServiceDefinition that, when
// replaceChecks is set (?replace-existing-checks), also removes the checks
// the service had that the new definition does not name.
func (l *State) AddServiceDefinitionReplacing(def *config.ServiceDefinition, fromConfig, replaceChecks bool) error {
	if def.Name == "" {
		return invalid("Missing service name")
	}
	proxy, err := catalog.DecodeProxyConfig(def.Proxy)
	if err != nil {
		return invalid("Invalid proxy of %q: %v", def.Name, err)
	}
	connectRaw := copyMap(def.Connect)
	sidecarRaw, hasSidecar := takeSidecar(connectRaw)
	conn, err := catalog.DecodeServiceConnect(connectRaw)
	if err != nil {
		return invalid("Invalid connect of %q: %v", def.Name, err)
	}
	svc := &catalog.Service{
		Kind: def.Kind, ID: def.ID, Service: def.Name, Tags: def.Tags, Meta: def.Meta, Port: def.Port,
		Address: def.Address, EnableTagOverride: def.EnableTagOverride,
		Weights: catalog.Weights{Passing: def.Weights.Passing, Warning: def.Weights.Warning},
		Proxy:   proxy, Connect: conn, Datacenter: l.node.Datacenter, SocketPath: def.SocketPath,
	}
	if svc.Kind == catalog.ServiceKindConnectProxy && (svc.Proxy == nil || svc.Proxy.DestinationServiceName == "") {
		return invalid("Proxy.DestinationServiceName must be set for a connect-proxy %q", def.Name)
	}
	// What the servers would refuse is refused here, not at every sync.
	if err := svc.ValidateConnect(); err != nil {
		return invalid("Invalid service %q: %v", def.Name, err)
	}
	if def.Locality != nil {
		svc.Locality = &catalog.Locality{Region: def.Locality.Region, Zone: def.Locality.Zone}
	}
	if svc.ID == "" {
		svc.ID = svc.Service
	}
	if svc.Weights.Passing == 0 {
		svc.Weights = catalog.Weights{Passing: 1, Warning: 1}
	}
	if svc.Tags == nil {
		svc.Tags = []string{}
	}
	if svc.Meta == nil {
		svc.Meta = map[string]string{}
	}
	if len(def.TaggedAddresses) > 0 {
		svc.TaggedAddresses = map[string]catalog.ServiceAddress{}
		for k, v := range def.TaggedAddresses {
			svc.TaggedAddresses[k] = catalog.ServiceAddress{Address: v.Address, Port: v.Port}
		}
	}
	defs := def.Checks
	if def.Check != nil {
		defs = append([]config.CheckDefinition{*def.Check}, defs...)
	}
	var checks []*Check
	for i := range defs {
		d := defs[i]
		if d.ID == "" {
			d.ID = "service:" + svc.ID
			if len(defs) > 1 {
				d.ID = fmt.Sprintf("service:%s:%d", svc.ID, i+1)
			}
		}
		if d.Name == "" {
			d.Name = fmt.Sprintf("Service '%s' check", svc.Service)
		}
		c, err := l.CheckFromDefinition(&d, svc.ID, fromConfig)
		if err != nil {
			return err
		}
		c.Health.ServiceName = svc.Service
		c.Health.ServiceTags = svc.Tags
		if c.token == "" {
			c.token = def.Token
		}
		checks = append(checks, c)
	}
	var stale []string
	if replaceChecks {
		keep := map[string]bool{}
		for _, c := range checks {
			keep[c.Health.CheckID] = true
		}
		l.mu.Lock()
		for id, c := range l.checks {
			if c.Health.ServiceID == svc.ID && !keep[id] {
				stale = append(stale, id)
			}
		}
		l.mu.Unlock()
	}
	var sidecar *config.ServiceDefinition
	if hasSidecar {
		sd, err := l.sidecarDefinition(svc, sidecarRaw)
		if err != nil {
			return err
		}
		// The sidecar is checked before its service is added: a refused
		// registration adds neither.
		sp, err := catalog.DecodeProxyConfig(sd.Proxy)
		if err != nil {
			return invalid("Invalid proxy of %q: %v", sd.Name, err)
		}
		if err := (&catalog.Service{Kind: sd.Kind, Port: sd.Port, SocketPath: sd.SocketPath, Proxy: sp}).ValidateConnect(); err != nil {
			return invalid("Invalid sidecar of %q: %v", def.Name, err)
		}
		sd.Token = def.Token
		sidecar = sd
	}
	l.addService(svc, checks, def.Token)
	for _, id := range stale {
		l.RemoveCheck(id)
	}
	if sidecar != nil {
		return l.AddServiceDefinitionReplacing(sidecar, fromConfig, replaceChecks)
	}
	return nil
}

// sidecarSuffix ends the ID and name of a sidecar registered through its
// service's connect.sidecar_service.
const sidecarSuffix = "-sidecar-proxy"

// takeSidecar removes connect.sidecar_service (any spelling) from a
// service's connect block and returns it: the sidecar is registered as a
// service of its own, not kept on its parent.
func takeSidecar(connect map[string]any) (map[string]any, bool) {
	for k, v := range connect {
		if strings.ReplaceAll(strings.ToLower(k), "_", "") != "sidecarservice" {
			continue
		}
		delete(connect, k)
		m, ok := v.(map[string]any)
		if v == nil {
			return nil, false
		}
		if !ok {
			m = map[string]any{}
		}
		return m, true
	}
	return nil, false
}

// sidecarDefinition is the connect-proxy service a parent's
// connect.sidecar_service asks for, with Consul's defaults for what it
// leaves out: ID and name "<parent>-sidecar-proxy", the parent's tags and
// meta, a free port of the sidecar range, a proxy to the parent on
// 127.0.0.1, and two checks (the proxy's port listening, and an alias of the
// parent's health).
func (l *State) sidecarDefinition(parent *catalog.Service, raw map[string]any) (*config.ServiceDefinition, error) {
	sd, err := config.DecodeServiceDefinition(raw)
	if err != nil {
		return nil, invalid("Invalid sidecar_service of %q: %v", parent.ID, err)
	}
	sd.Kind = "connect-proxy"
	if sd.ID == "" {
		sd.ID = parent.ID + sidecarSuffix
	}
	if sd.Name == "" {
		sd.Name = parent.Service + sidecarSuffix
	}
	if sd.Tags == nil {
		sd.Tags = append([]string(nil), parent.Tags...)
	}
	if sd.Meta == nil && len(parent.Meta) > 0 {
		sd.Meta = map[string]string{}
		for k, v := range parent.Meta {
			sd.Meta[k] = v
		}
	}
	if sd.Port == 0 {
		port, err := l.sidecarPort(sd.ID)
		if err != nil {
			return nil, err
		}
		sd.Port = port
	}
	proxy, err := catalog.DecodeProxyConfig(sd.Proxy)
	if err != nil {
		return nil, invalid("Invalid sidecar_service of %q: %v", parent.ID, err)
	}
	if proxy == nil {
		proxy = &catalog.ConnectProxyConfig{}
	}
	if proxy.DestinationServiceName == "" {
		proxy.DestinationServiceName = parent.Service
	}
	if proxy.DestinationServiceID == "" {
		proxy.DestinationServiceID = parent.ID
	}
	if proxy.LocalServiceAddress == "" {
		proxy.LocalServiceAddress = "127.0.0.1"
	}
	if proxy.LocalServicePort == 0 {
		proxy.LocalServicePort = parent.Port
	}
	// The definition carries the proxy as a map: hand it the filled-in
	// form (CamelCase keys, which DecodeProxyConfig reads back as is).
	if sd.Proxy, err = toMap(proxy); err != nil {
		return nil, invalid("Invalid sidecar_service of %q: %v", parent.ID, err)
	}
	if sd.Check == nil && len(sd.Checks) == 0 {
		addr := sd.Address
		if addr == "" {
			addr = "127.0.0.1"
		}
		sd.Checks = []config.CheckDefinition{
			{Name: "Connect Sidecar Listening", TCP: net.JoinHostPort(addr, strconv.Itoa(sd.Port)), Interval: 10 * time.Second},
			{Name: "Connect Sidecar Aliasing " + parent.ID, AliasService: parent.ID},
		}
	}
	sd.Connect = nil
	return sd, nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func copyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sidecarPort picks the lowest port of the sidecar range no other local
// service uses; a sidecar registered again keeps its port.
func (l *State) sidecarPort(id string) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old := l.services[id]; old != nil && old.svc.Port != 0 {
		return old.svc.Port, nil
	}
	used := map[int]bool{}
	for _, s := range l.services {
		used[s.svc.Port] = true
	}
	for p := l.sidecarMin; p <= l.sidecarMax; p++ {
		if !used[p] {
			return p, nil
		}
	}
	return 0, invalid("No free port left in the sidecar range %d-%d", l.sidecarMin, l.sidecarMax)
}

// CheckFromDefinition turns a check definition into a local check: a TTL
// check, a probe the agent runs (HTTP, TCP, UDP, gRPC, H2 ping, script,
// alias), or a check with neither whose status is set through the API.
// Script checks need enable_script_checks, or enable_local_script_checks for
// checks from configuration files. An invalid definition is an error
// wrapping ErrInvalid.
func (l *State) CheckFromDefinition(d *config.CheckDefinition, serviceID string, fromConfig bool) (*Check, error) {
	if d.ID == "" {
		d.ID = d.Name
	}
	if d.ID == "" {
		return nil, invalid("Missing check name")
	}
	if serviceID == "" {
		serviceID = d.ServiceID
	}
	if d.DockerContainerID != "" {
		return l.dockerCheck(d, serviceID, fromConfig)
	}
	if d.TTL < 0 {
		return nil, invalid("Check %q: TTL must be positive", d.ID)
	}
	probe := checks.Definition{
		CheckID: d.ID, HTTP: d.HTTP, Method: d.Method, Header: d.Header, Body: d.Body,
		DisableRedirects: d.DisableRedirects, TLSSkipVerify: d.TLSSkipVerify, TLSServerName: d.TLSServerName,
		TCP: d.TCP, UDP: d.UDP, GRPC: d.GRPC, GRPCUseTLS: d.GRPCUseTLS, H2PING: d.H2PING, H2PingUseTLS: d.H2PingUseTLS,
		ScriptArgs: d.ScriptArgs, AliasNode: d.AliasNode, AliasService: d.AliasService,
		Interval: d.Interval, Timeout: d.Timeout, SuccessBeforePassing: d.SuccessBeforePassing,
		FailuresBeforeWarning: d.FailuresBeforeWarning, FailuresBeforeCritical: d.FailuresBeforeCritical,
		OutputMaxSize: d.OutputMaxSize,
	}
	typ := probe.Type()
	isProbe := typ != ""
	if isProbe && d.TTL > 0 {
		return nil, invalid("Check %q: a TTL check cannot also define a %s probe", d.ID, typ)
	}
	if typ == "" && d.TTL > 0 {
		typ = "ttl"
	}
	if typ == checks.TypeScript && !l.scripts && !(fromConfig && l.localScripts) {
		return nil, invalid("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true")
	}
	if isProbe && typ != checks.TypeAlias {
		if probe.Interval <= 0 {
			return nil, invalid("Check %q: Interval must be > 0 for Script, HTTP, H2PING, gRPC, UDP or TCP checks", d.ID)
		}
		if probe.Interval < checks.MinInterval {
			l.logger.Warn("check interval below the minimum; using the minimum", "check", d.ID, "minimum", checks.MinInterval)
			probe.Interval = checks.MinInterval
		}
	}
	status := d.Status
	if status == "" {
		status = catalog.HealthCritical
	}
	switch status {
	case catalog.HealthPassing, catalog.HealthWarning, catalog.HealthCritical:
	default:
		return nil, invalid("Check %q: invalid status %q", d.ID, status)
	}
	hc := &catalog.HealthCheck{
		Node: l.node.Name, CheckID: d.ID, Name: d.Name, Status: status, Notes: d.Notes,
		ServiceID: serviceID, Type: typ, ServiceTags: []string{},
		Definition: catalog.HealthCheckDefinition{HTTP: d.HTTP, Header: d.Header, Method: d.Method, Body: d.Body,
			TLSSkipVerify: d.TLSSkipVerify, TCP: d.TCP, UDP: d.UDP, GRPC: d.GRPC, GRPCUseTLS: d.GRPCUseTLS},
	}
	if probe.Interval > 0 {
		hc.Interval = probe.Interval.String()
		hc.Definition.Interval = hc.Interval
	}
	if d.Timeout > 0 {
		hc.Timeout = d.Timeout.String()
		hc.Definition.Timeout = hc.Timeout
	}
	if d.DeregisterCriticalServiceAfter > 0 {
		hc.Definition.DeregisterCriticalServiceAfter = d.DeregisterCriticalServiceAfter.String()
	}
	lc := &Check{Health: hc, TTL: d.TTL, DeregisterAfter: d.DeregisterCriticalServiceAfter, token: d.Token}
	if isProbe {
		p := probe
		lc.Probe = &p
	}
	return lc, nil
}

// dockerUnavailable is the output of every Docker check: Tribune does not
// talk to a Docker daemon.
const dockerUnavailable = "Docker checks are not run by this agent: no Docker client"

// dockerCheck registers a Docker check as Consul does on a machine without
// Docker: the definition is accepted under the same rules (scripts enabled,
// an interval) and shown with type "docker", and the check is critical with
// an output that says why, since its script never runs.
func (l *State) dockerCheck(d *config.CheckDefinition, serviceID string, fromConfig bool) (*Check, error) {
	if !l.scripts && !(fromConfig && l.localScripts) {
		return nil, invalid("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true")
	}
	if len(d.ScriptArgs) == 0 {
		return nil, invalid("Check %q: a Docker check needs args", d.ID)
	}
	if d.Interval <= 0 {
		return nil, invalid("Check %q: Interval must be > 0 for a Docker check", d.ID)
	}
	hc := &catalog.HealthCheck{
		Node: l.node.Name, CheckID: d.ID, Name: d.Name, Status: catalog.HealthCritical, Notes: d.Notes,
		Output: dockerUnavailable, ServiceID: serviceID, Type: "docker", ServiceTags: []string{},
		Interval: d.Interval.String(),
	}
	hc.Definition.Interval = hc.Interval
	return &Check{Health: hc, DeregisterAfter: d.DeregisterCriticalServiceAfter, token: d.Token}, nil
}
