package agent

import (
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/gossip"
)

// apiControl is the agent as its HTTP API controls it.
type apiControl struct{ a *Agent }

// Self implements httpapi.Control.
func (c apiControl) Self() httpapi.Member { return c.a.selfMember() }

// Members implements httpapi.Control.
func (c apiControl) Members() []httpapi.Member { return c.a.members() }

// Leave implements httpapi.Control.
func (c apiControl) Leave() { c.a.requestLeave() }

// Reload implements httpapi.Control.
func (c apiControl) Reload() error { return c.a.Reload() }

// selfMember describes this agent as a gossip member would.
func (a *Agent) selfMember() httpapi.Member {
	role := "node"
	tags := map[string]string{"dc": a.cfg.Datacenter, "id": a.cfg.NodeID, "build": Version, "vsn": "2", "vsn_min": "2", "vsn_max": "3"}
	if a.cfg.Server {
		role = "consul"
		tags["port"] = fmt.Sprint(a.cfg.Ports.Server)
		if a.cfg.Bootstrap || a.cfg.DevMode {
			tags["bootstrap"] = "1"
		}
	}
	tags["role"] = role
	return httpapi.Member{Name: a.cfg.NodeName, Addr: a.advertiseHost(), Port: uint16(a.cfg.Ports.SerfLAN), Tags: tags,
		Status: 1, ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2, DelegateMin: 2, DelegateMax: 5, DelegateCur: 4}
}

// members lists gossip members as /v1/agent/members shows them.
func (a *Agent) members() []httpapi.Member {
	if a.gossip == nil {
		return []httpapi.Member{a.selfMember()}
	}
	var out []httpapi.Member
	for _, m := range a.gossip.Members() {
		out = append(out, httpapi.MemberOf(m))
	}
	return out
}

// requestLeave leaves the gossip pool gracefully (bounded), so that the
// other members see this one as left when the call returns, as Consul's
// /v1/agent/leave does, and then asks the process running the agent to shut
// it down.
func (a *Agent) requestLeave() {
	a.SetLeaveOnShutdown()
	a.leaveGossip()
	a.closeOnceLeave.Do(func() { close(a.leaveCh) })
}

// leaveGossip leaves the gossip pool gracefully, once.
func (a *Agent) leaveGossip() {
	a.gossipLeaveOnce.Do(func() {
		if a.gossip == nil {
			return
		}
		if err := a.gossip.Leave(5 * time.Second); err != nil {
			a.logger.Warn("leave", "error", err)
		}
	})
}

// SetLeaveOnShutdown makes Shutdown leave the gossip pool gracefully first, so
// the cluster removes this node instead of marking it failed.
func (a *Agent) SetLeaveOnShutdown() {
	a.leaveMu.Lock()
	a.leaving = true
	a.leaveMu.Unlock()
}

// Stats implements httpapi.Control: the agent's state by subsystem, as
// `consul info` prints it.
func (c apiControl) Stats() map[string]map[string]string { return c.a.stats() }

// stats gathers the agent's runtime state under Consul's section and key
// names (agent, build, consul, raft, runtime, serf_lan).
func (a *Agent) stats() map[string]map[string]string {
	itoa := strconv.Itoa
	btoa := strconv.FormatBool
	var ttls, monitors int
	checks := a.local.Checks()
	for _, c := range checks {
		switch c.Type {
		case "ttl":
			ttls++
		case "script":
			monitors++
		}
	}
	out := map[string]map[string]string{
		"agent": {
			"checks": itoa(len(checks)), "check_ttls": itoa(ttls), "check_monitors": itoa(monitors),
			"services": itoa(len(a.local.Services())),
		},
		"build": {"prerelease": "", "revision": "", "version": Version, "version_metadata": ""},
		"runtime": {
			"arch": runtime.GOARCH, "os": runtime.GOOS, "version": runtime.Version(),
			"cpu_count": itoa(runtime.NumCPU()), "max_procs": itoa(runtime.GOMAXPROCS(0)),
			"goroutines": itoa(runtime.NumGoroutine()),
		},
	}
	aclMode := "disabled"
	if a.cfg.ACL.Enabled {
		aclMode = "enabled"
	}
	consul := map[string]string{"server": btoa(a.cfg.Server), "acl": aclMode, "known_datacenters": "1"}
	if a.server != nil {
		consul["bootstrap"] = btoa(a.cfg.Bootstrap || a.cfg.DevMode)
		consul["leader"] = btoa(a.server.IsLeader())
		consul["leader_addr"] = a.server.Leader()
		out["raft"] = a.server.Raft().Stats()
	} else {
		consul["known_servers"] = itoa(len(a.serverAddrs()))
	}
	out["consul"] = consul
	if a.gossip != nil {
		var failed, left int
		members := a.gossip.Members()
		for _, m := range members {
			switch m.Status {
			case gossip.StatusFailed:
				failed++
			case gossip.StatusLeft:
				left++
			}
		}
		out["serf_lan"] = map[string]string{
			"members": itoa(len(members)), "failed": itoa(failed), "left": itoa(left),
			"encrypted": btoa(a.gossip.Keyring() != nil), "health_score": "0",
		}
	}
	return out
}
