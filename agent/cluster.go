package agent

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/gossip"
	"github.com/tribune-mesh/tribune/server"
)

// serverConfig maps the agent configuration onto the server's.
func (a *Agent) serverConfig(logger hclog.Logger) *server.Config {
	cfg := a.cfg
	scfg := server.DefaultConfig()
	scfg.NodeName = cfg.NodeName
	scfg.NodeID = cfg.NodeID
	scfg.Datacenter = cfg.Datacenter
	scfg.DataDir = cfg.DataDir
	scfg.InMemory = cfg.DataDir == ""
	scfg.Bootstrap = cfg.Bootstrap || cfg.BootstrapExpect == 1 || (cfg.DevMode && cfg.BootstrapExpect == 0)
	if cfg.BootstrapExpect > 1 {
		scfg.BootstrapExpect = cfg.BootstrapExpect
	}
	scfg.RPCAddr = net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.Server))
	scfg.AdvertiseAddr = net.JoinHostPort(a.advertiseHost(), strconv.Itoa(cfg.Ports.Server))
	scfg.RaftMultiplier = cfg.Performance.RaftMultiplier
	if cfg.RaftSnapshotThreshold > 0 {
		scfg.SnapshotThreshold = uint64(cfg.RaftSnapshotThreshold)
	}
	if cfg.RaftSnapshotInterval > 0 {
		scfg.SnapshotInterval = cfg.RaftSnapshotInterval
	}
	if cfg.RaftTrailingLogs > 0 {
		scfg.TrailingLogs = uint64(cfg.RaftTrailingLogs)
	}
	scfg.LogStore = cfg.RaftLogStore.Backend
	scfg.DisableLogCache = cfg.RaftLogStore.DisableLogCache
	scfg.WALSegmentSize = cfg.RaftLogStore.WALSegmentSizeMB << 20
	if cfg.RPCHoldTimeout > 0 {
		scfg.HoldTimeout = cfg.RPCHoldTimeout
	}
	scfg.RPCHandshakeTimeout = cfg.Limits.RPCHandshakeTimeout
	scfg.RPCMaxConnsPerClient = cfg.Limits.RPCMaxConnsPerClient
	scfg.ReconnectTimeout = cfg.ReconnectTimeout
	scfg.CleanupDeadServers = cfg.Autopilot.CleanupDeadServers
	if cfg.Autopilot.ServerStabilizationTime > 0 {
		scfg.ServerStabilizationTime = cfg.Autopilot.ServerStabilizationTime
	}
	scfg.MinQuorum = cfg.Autopilot.MinQuorum
	scfg.Gossip = a.gossip
	scfg.ACL = server.ACLConfig{Enabled: cfg.ACL.Enabled, InitialManagement: cfg.ACL.Tokens.InitialManagement,
		DefaultPolicy: cfg.ACL.DefaultPolicy, EnableKeyListPolicy: cfg.ACL.EnableKeyListPolicy, AgentToken: a.agentToken}
	scfg.Logger = logger
	scfg.ConnectEnabled = cfg.Connect.Enabled
	scfg.CAConfig = a.caConfig
	scfg.ClusterID = a.clusterID
	scfg.TLS, scfg.TLSOutgoing = a.tls.rpc, cfg.RPCUsesTLS()
	scfg.AutoEncryptAllowTLS = cfg.AutoEncrypt.AllowTLS
	scfg.WAN = a.wan
	scfg.PrimaryDatacenter = cfg.PrimaryDatacenter
	scfg.ACLTokenReplication = cfg.ACL.EnableTokenReplication
	scfg.ACLReplicationToken = cfg.ACL.Tokens.Replication
	return scfg
}

// gossipTags are the metadata this agent gossips.
func (a *Agent) gossipTags() map[string]string {
	cfg := a.cfg
	tags := map[string]string{"dc": cfg.Datacenter, "id": cfg.NodeID, "build": Version, "vsn": "2", "vsn_min": "2", "vsn_max": "3"}
	if cfg.Server {
		tags["role"] = "consul"
		tags["port"] = strconv.Itoa(cfg.Ports.Server)
		if cfg.BootstrapExpect > 1 {
			tags["expect"] = strconv.Itoa(cfg.BootstrapExpect)
		}
		if cfg.Bootstrap || cfg.DevMode {
			tags["bootstrap"] = "1"
		}
		if cfg.ReadReplica {
			tags["read_replica"] = "1"
		}
		if cfg.Ports.SerfWAN > 0 {
			// Servers of one datacenter join each other's WAN members
			// (server.floodWAN).
			tags["wan_join_port"] = strconv.Itoa(cfg.Ports.SerfWAN)
		}
	} else {
		tags["role"] = "node"
	}
	return tags
}

// startGossip joins nobody yet: it starts this agent's LAN member.
func (a *Agent) startGossip() error {
	if a.cfg.Ports.SerfLAN < 0 {
		return nil
	}
	var keys [][]byte
	if a.cfg.Encrypt != "" {
		k, err := a.cfg.EncryptKey()
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		keys = [][]byte{k}
	}
	bind := a.cfg.BindAddr
	if bind == "" {
		bind = "0.0.0.0"
	}
	p, err := gossip.New(&gossip.Config{
		NodeName: a.cfg.NodeName, BindAddr: bind, BindPort: a.cfg.Ports.SerfLAN,
		AdvertiseAddr: a.advertiseHost(), AdvertisePort: a.cfg.Ports.SerfLAN,
		Tags: a.gossipTags(), Keys: keys, Fast: a.cfg.DevMode || a.cfg.Performance.RaftMultiplier == 1,
		Logger: a.logger,
	})
	if err != nil {
		return err
	}
	a.gossip = p
	return nil
}

// stopGossip leaves the pool gracefully when leave is set, then stops.
func (a *Agent) stopGossip(leave bool) {
	if a.gossip == nil {
		return
	}
	if leave {
		a.leaveGossip()
	}
	if err := a.gossip.Shutdown(); err != nil {
		a.logger.Warn("stop gossip", "error", err)
	}
}

// stopCore stops the server or client and the gossip member.
func (a *Agent) stopCore() error {
	var err error
	a.leaveMu.Lock()
	leave := a.leaving
	a.leaveMu.Unlock()
	if a.server != nil {
		if leave {
			a.stopGossip(true)
		}
		err = a.server.Shutdown()
		a.stopWAN(leave)
	}
	if a.client != nil {
		a.client.Close()
	}
	a.stopGossip(leave && a.server == nil)
	return err
}

// serverAddrs lists the RPC addresses of the alive servers of this
// datacenter that gossip knows.
func (a *Agent) serverAddrs() []string {
	if a.gossip == nil {
		return nil
	}
	var out []string
	for _, m := range a.gossip.Members() {
		if m.Status == gossip.StatusAlive && m.IsServer() && m.Tags["dc"] == a.cfg.Datacenter {
			out = append(out, m.ServerAddr())
		}
	}
	return out
}

// startJoins joins start_join addresses now (failing when none answers) and
// retries retry_join in the background.
func (a *Agent) startJoins() error {
	if a.gossip == nil {
		return nil
	}
	if len(a.cfg.StartJoin) > 0 {
		if _, err := a.gossip.Join(a.cfg.StartJoin); err != nil {
			return fmt.Errorf("start_join: %w", err)
		}
	}
	a.retryJoin(a.gossip, "cluster", "retry_join", a.cfg.RetryJoin, a.cfg.RetryInterval, a.cfg.RetryMax)
	return nil
}

// retryJoin joins addrs in the background, every interval (30s when 0) until
// one answers, at most max attempts (0: no limit), or the agent stops.
func (a *Agent) retryJoin(pool *gossip.Pool, what, key string, addrs []string, interval time.Duration, max int) {
	if len(addrs) == 0 {
		return
	}
	if interval <= 0 {
		interval = 30 * time.Second
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for attempt := 1; ; attempt++ {
			n, err := pool.Join(addrs)
			if errors.Is(err, gossip.ErrNameConflict) {
				a.logger.Error("cannot join: another agent uses this node name; set a unique node_name", "pool", what, "error", err)
				return
			}
			if err == nil && n > 0 {
				a.logger.Info("joined "+what, "contacted", n)
				return
			}
			if max > 0 && attempt >= max {
				a.logger.Error(key+" gave up", "attempts", attempt, "error", err)
				return
			}
			a.logger.Warn(key+" failed, will retry", "error", err, "in", interval)
			select {
			case <-a.shutdownCh:
				return
			case <-time.After(interval):
			}
		}
	}()
}
