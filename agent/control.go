package agent

import (
	"fmt"

	"github.com/tribune-mesh/tribune/agent/httpapi"
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
		out = append(out, httpapi.Member{Name: m.Name, Addr: m.Addr.String(), Port: m.Port, Tags: m.Tags, Status: int(m.Status),
			ProtocolMin: m.PMin, ProtocolMax: m.PMax, ProtocolCur: m.PCur, DelegateMin: m.DMin, DelegateMax: m.DMax, DelegateCur: m.DCur})
	}
	return out
}

// requestLeave asks the process running the agent to shut it down after
// leaving the cluster gracefully.
func (a *Agent) requestLeave() {
	a.SetLeaveOnShutdown()
	a.closeOnceLeave.Do(func() { close(a.leaveCh) })
}

// SetLeaveOnShutdown makes Shutdown leave the gossip pool gracefully first, so
// the cluster removes this node instead of marking it failed.
func (a *Agent) SetLeaveOnShutdown() {
	a.leaveMu.Lock()
	a.leaving = true
	a.leaveMu.Unlock()
}
