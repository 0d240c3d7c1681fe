package agent

import (
	"errors"
	"fmt"

	"github.com/tribune-mesh/tribune/agent/config"
)

// Reloader loads the agent's configuration again (files and flags), for
// SIGHUP, `tribune reload` and /v1/agent/reload.
type Reloader func() (*config.Config, []string, error)

// SetReloader sets how the agent reloads its configuration.
func (a *Agent) SetReloader(r Reloader) {
	a.reloadMu.Lock()
	a.reloader = r
	a.reloadMu.Unlock()
}

// Reload loads the configuration again and applies what can change without
// a restart: the services and checks defined in configuration files. A
// service or check that left the files is deregistered; new and changed ones
// are registered. TLS certificates and settings are read again (tls.go).
// Other changed settings need a restart and are logged.
func (a *Agent) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.reloader == nil {
		return errors.New("this agent was started without configuration files to reload")
	}
	cfg, warnings, err := a.reloader()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	for _, w := range warnings {
		a.logger.Warn(w)
	}
	if cfg.NodeName != a.cfg.NodeName || cfg.Datacenter != a.cfg.Datacenter || cfg.Server != a.cfg.Server {
		a.logger.Warn("reload: node_name, datacenter and server need a restart; keeping the running values")
	}
	if err := a.reloadTLS(cfg); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	keepSvc := map[string]bool{}
	for i := range cfg.Services {
		keepSvc[cfg.Services[i].ServiceID()] = true
	}
	keepChk := map[string]bool{}
	for i := range cfg.Checks {
		id := cfg.Checks[i].ID
		if id == "" {
			id = cfg.Checks[i].Name
		}
		keepChk[id] = true
	}
	for id := range a.configServices {
		if !keepSvc[id] {
			a.local.RemoveService(id)
			delete(a.configServices, id)
		}
	}
	for id := range a.configChecks {
		if !keepChk[id] {
			a.local.RemoveCheck(id)
			delete(a.configChecks, id)
		}
	}
	a.cfg.Services, a.cfg.Checks = cfg.Services, cfg.Checks
	if err := a.loadConfigDefinitions(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	a.logger.Info("configuration reloaded", "services", len(cfg.Services), "checks", len(cfg.Checks))
	return nil
}
