package catalog

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// tableAutopilot holds the one autopilot configuration row, written through
// Raft by /v1/operator/autopilot/configuration.
const tableAutopilot = "autopilot_config"

// autopilotRowID is the key of the one row of tableAutopilot.
const autopilotRowID = "config"

// AutopilotConfig is the autopilot configuration, in Consul's wire form
// (durations as Go duration strings).
type AutopilotConfig struct {
	CleanupDeadServers      bool
	LastContactThreshold    string
	MaxTrailingLogs         uint64
	MinQuorum               uint
	ServerStabilizationTime string
	RedundancyZoneTag       string
	DisableUpgradeMigration bool
	UpgradeVersionTag       string
	RaftIndex
}

// Validate checks the durations and bounds of a configuration.
func (c *AutopilotConfig) Validate() error {
	for name, v := range map[string]string{"LastContactThreshold": c.LastContactThreshold,
		"ServerStabilizationTime": c.ServerStabilizationTime} {
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%w: invalid %s %q", ErrInvalidRequest, name, v)
		}
	}
	if c.MinQuorum > 64 {
		return fmt.Errorf("%w: MinQuorum %d exceeds 64", ErrInvalidRequest, c.MinQuorum)
	}
	return nil
}

// AutopilotConfigRequest is the body of CmdAutopilotConfig: set the
// configuration, only if its ModifyIndex is still Config.ModifyIndex when
// CAS is set (0: only if none was ever set).
type AutopilotConfigRequest struct {
	Config AutopilotConfig
	CAS    bool
}

// autopilotRow is the stored row.
type autopilotRow struct {
	ID     string
	Config *AutopilotConfig
}

func autopilotTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{Name: tableAutopilot, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}}
}

// AutopilotConfig returns the stored configuration, nil when none was ever
// set (the servers then use their configuration files' values).
func (s *Store) AutopilotConfig(ws memdb.WatchSet) (uint64, *AutopilotConfig, error) {
	txn := s.mem().Txn(false)
	idx := maxIndex(txn, tableAutopilot)
	ch, raw, err := txn.FirstWatch(tableAutopilot, "id", autopilotRowID)
	if err != nil {
		return 0, nil, fmt.Errorf("autopilot config: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return idx, nil, nil
	}
	c := *raw.(*autopilotRow).Config
	return idx, &c, nil
}

// AutopilotConfigSet stores req.Config at Raft index idx and reports whether
// it did: a CAS whose index no longer matches changes nothing.
func (s *Store) AutopilotConfigSet(idx uint64, req *AutopilotConfigRequest) (bool, error) {
	if err := req.Config.Validate(); err != nil {
		return false, err
	}
	txn := s.mem().Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableAutopilot, "id", autopilotRowID)
	if err != nil {
		return false, fmt.Errorf("autopilot config: %w", err)
	}
	c := req.Config
	c.CreateIndex, c.ModifyIndex = idx, idx
	if raw != nil {
		old := raw.(*autopilotRow).Config
		if req.CAS && old.ModifyIndex != req.Config.ModifyIndex {
			return false, nil
		}
		c.CreateIndex = old.CreateIndex
	} else if req.CAS && req.Config.ModifyIndex != 0 {
		return false, nil
	}
	if err := txn.Insert(tableAutopilot, &autopilotRow{ID: autopilotRowID, Config: &c}); err != nil {
		return false, fmt.Errorf("store autopilot config: %w", err)
	}
	if err := setIndex(txn, tableAutopilot, idx); err != nil {
		return false, err
	}
	txn.Commit()
	return true, nil
}
