package fault

import (
	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/test/procs"
)

// Consul's default ports; every agent has its own address, so all of them
// use the defaults.
const (
	httpPort   = 8500
	dnsPort    = 8600
	serverPort = 8300
	serfPort   = 8301
)

// Agent is one tribune process inside the namespace, on its own loopback
// address and under its own uid (see Cluster for why). The shared process
// harness runs it: Launch, Kill, Stop, Pause, Resume, Wipe and Crashes are
// procs.Agent's.
type Agent struct {
	*procs.Agent
	// Token is the ACL token the harness's clients of this agent send
	// ("" without ACLs).
	Token string
	// ctl is the harness's own API client (health, leader, final reads).
	ctl *api.Client
}
