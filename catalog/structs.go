package catalog

import (
	"time"
)

// Health states of a check, as Consul names them.
const (
	HealthAny      = "any"
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
	HealthMaint    = "maintenance"
)

// SerfCheckID is the check the leader keeps on every node to mirror gossip
// health.
const SerfCheckID = "serfHealth"

// RaftIndex records the Raft indexes at which an object was created and last
// changed. Every stored object embeds it.
type RaftIndex struct {
	CreateIndex uint64
	ModifyIndex uint64
}

// Node is a machine in the catalog.
type Node struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	RaftIndex
}

// Weights steers DNS SRV weights by health.
type Weights struct {
	Passing int
	Warning int
}

// Service is one instance of a service as registered on a node. Its JSON form
// is Consul's AgentService.
type Service struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]ServiceAddress `json:",omitempty"`
	Weights           Weights
	EnableTagOverride bool
	// Proxy is the configuration of a connect-proxy.
	Proxy *ConnectProxyConfig `json:",omitempty"`
	// Connect marks a Connect-native instance.
	Connect    *ServiceConnect `json:",omitempty"`
	Datacenter string          `json:",omitempty"`
	// SocketPath is a Unix socket the instance listens on.
	SocketPath string `json:",omitempty"`
	// Locality is the region and zone the instance runs in.
	Locality *Locality `json:",omitempty" bexpr:"-"`
	RaftIndex
}

// Locality is where a service instance runs (Consul 1.16).
type Locality struct {
	Region string `json:",omitempty"`
	Zone   string `json:",omitempty"`
}

// ServiceAddress is an address and port a service is reachable at.
type ServiceAddress struct {
	Address string
	Port    int
}

// serviceRow is a service as stored: the node it lives on plus the service.
// Name and ID repeat Svc's fields for the indexes.
type serviceRow struct {
	Node string
	ID   string
	Name string
	// Connect is the service this instance carries mesh traffic for
	// (Service.ConnectTarget), "" for none.
	Connect string
	Svc     *Service
}

// HealthCheck is a check on a node or on one of its services.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	Interval    string `json:",omitempty"`
	Timeout     string `json:",omitempty"`
	ExposedPort int
	Definition  HealthCheckDefinition
	RaftIndex
}

// HealthCheckDefinition carries the probe settings of a check so that the
// catalog can show how it is run.
type HealthCheckDefinition struct {
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Body                           string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	UDP                            string              `json:",omitempty"`
	GRPC                           string              `json:",omitempty"`
	GRPCUseTLS                     bool                `json:",omitempty"`
	Interval                       string              `json:",omitempty"`
	Timeout                        string              `json:",omitempty"`
	DeregisterCriticalServiceAfter string              `json:",omitempty"`
}

// KVEntry is a key in the KV store. Its JSON form is Consul's KVPair; Value
// is base64-encoded by encoding/json.
type KVEntry struct {
	LockIndex uint64
	Key       string
	Flags     uint64
	Value     []byte
	Session   string `json:",omitempty"`
	RaftIndex
}

// Session behaviours.
const (
	SessionBehaviorRelease = "release"
	SessionBehaviorDelete  = "delete"
)

// ServiceCheck names a service check a session depends on.
type ServiceCheck struct {
	ID        string
	Namespace string `json:",omitempty"`
}

// Session is a lease used for locks. It is invalidated when its node, one of
// its checks, or its TTL fails.
type Session struct {
	ID            string
	Name          string
	Node          string
	LockDelay     time.Duration
	Behavior      string
	TTL           string
	NodeChecks    []string
	ServiceChecks []ServiceCheck
	RaftIndex
}

// CheckServiceNode is a service instance with its node and every check that
// applies to it (node checks and its own). It is the element of
// /v1/health/service.
type CheckServiceNode struct {
	Node    *Node
	Service *Service
	Checks  []*HealthCheck
}

// AggregatedStatus returns the worst status of checks: critical over warning
// over passing; maintenance counts as critical.
func AggregatedStatus(checks []*HealthCheck) string {
	status := HealthPassing
	for _, c := range checks {
		switch c.Status {
		case HealthCritical, HealthMaint:
			return HealthCritical
		case HealthWarning:
			status = HealthWarning
		}
	}
	return status
}

// NodeServices is a node and its services (/v1/catalog/node/<node>).
type NodeServices struct {
	Node     *Node
	Services []*Service
}
