package server

import (
	"fmt"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

// OpAutopilotGetConfig is /v1/operator/autopilot/configuration's GET: the
// configuration stored through Raft, or the server's configured values when
// none was ever stored.
const OpAutopilotGetConfig = "autopilot-get-config"

// Consul's autopilot defaults for the settings a Tribune server does not
// take from its configuration.
const (
	defaultLastContactThreshold = 200 * time.Millisecond
	defaultMaxTrailingLogs      = 250
)

// autopilotConfig returns the effective autopilot configuration: the one an
// operator stored, else the server's own.
func (s *Server) autopilotConfig() (*catalog.AutopilotConfig, error) {
	_, stored, err := s.store.AutopilotConfig(nil)
	if err != nil {
		return nil, fmt.Errorf("read autopilot config: %w", err)
	}
	if stored != nil {
		return stored, nil
	}
	return &catalog.AutopilotConfig{
		CleanupDeadServers:      s.config.CleanupDeadServers,
		LastContactThreshold:    defaultLastContactThreshold.String(),
		MaxTrailingLogs:         defaultMaxTrailingLogs,
		MinQuorum:               uint(max(s.config.MinQuorum, 0)),
		ServerStabilizationTime: s.config.ServerStabilizationTime.String(),
	}, nil
}

// autopilotSettings is what the dead-server cleanup uses: the effective
// configuration's switch, stabilization time and minimum quorum, falling
// back to the server's configuration when the store cannot be read.
func (s *Server) autopilotSettings() (cleanup bool, stabilization time.Duration, minQuorum int) {
	cleanup, stabilization, minQuorum = s.config.CleanupDeadServers, s.config.ServerStabilizationTime, s.config.MinQuorum
	c, err := s.autopilotConfig()
	if err != nil {
		return cleanup, stabilization, minQuorum
	}
	// Zero (or unset) keeps the server's own: removing a server the
	// moment it fails would defeat the stabilization.
	if d, err := time.ParseDuration(c.ServerStabilizationTime); err == nil && d > 0 {
		stabilization = d
	}
	return c.CleanupDeadServers, stabilization, int(c.MinQuorum)
}
