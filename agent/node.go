package agent

import (
	"cmp"
	"fmt"
)

// advertiseHost is the address the agent registers its node with.
func (a *Agent) advertiseHost() string {
	if a.cfg.AdvertiseAddrLAN != "" {
		return a.cfg.AdvertiseAddrLAN
	}
	if a.cfg.BindAddr != "" && a.cfg.BindAddr != "0.0.0.0" {
		return a.cfg.BindAddr
	}
	return "127.0.0.1"
}

func (a *Agent) taggedAddresses() map[string]string {
	h := a.advertiseHost()
	return map[string]string{"lan": h, "lan_ipv4": h, "wan": h, "wan_ipv4": h}
}

// Node meta keys every agent sets on its own node, as Consul's do: the
// network segment (always the default, "", in Tribune) and the version.
const (
	metaSegmentKey = "consul-network-segment"
	metaVersionKey = "consul-version"
)

// nodeMeta is node_meta with the keys every agent adds.
func (a *Agent) nodeMeta() map[string]string {
	out := make(map[string]string, len(a.cfg.NodeMeta)+2)
	for k, v := range a.cfg.NodeMeta {
		out[k] = v
	}
	out[metaSegmentKey] = ""
	out[metaVersionKey] = Version
	return out
}

// loadConfigDefinitions registers the services and checks of the config files.
func (a *Agent) loadConfigDefinitions() error {
	for i := range a.cfg.Services {
		// A definition without a token of its own is synced with
		// acl.tokens.config_file_service_registration, else the agent's.
		def := a.cfg.Services[i]
		def.Token = cmp.Or(def.Token, a.configFileToken())
		if err := a.local.AddServiceDefinition(&def, true); err != nil {
			return fmt.Errorf("service %q from config: %w", a.cfg.Services[i].Name, err)
		}
		a.configServices[a.cfg.Services[i].ServiceID()] = true
	}
	for i := range a.cfg.Checks {
		def := a.cfg.Checks[i]
		def.Token = cmp.Or(def.Token, a.configFileToken())
		c, err := a.local.CheckFromDefinition(&def, "", true)
		if err != nil {
			return fmt.Errorf("check %q from config: %w", a.cfg.Checks[i].Name, err)
		}
		if err := a.local.AddCheck(c); err != nil {
			return fmt.Errorf("check %q from config: %w", a.cfg.Checks[i].Name, err)
		}
		a.configChecks[c.Health.CheckID] = true
	}
	return nil
}

// configFileToken is acl.tokens.config_file_service_registration (as set
// now, through the config or /v1/agent/token), "" without ACLs or when unset.
func (a *Agent) configFileToken() string {
	if a.tokens == nil {
		return ""
	}
	a.tokens.mu.Lock()
	defer a.tokens.mu.Unlock()
	return a.tokens.cur.ConfigFileRegistration
}
