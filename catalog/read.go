package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// ReadOp names a catalog read. Reads travel as data so that a client agent
// can send them to a server and a follower can forward them to the leader.
type ReadOp string

// Read operations.
const (
	ReadKVGet            ReadOp = "kv.get"
	ReadKVList           ReadOp = "kv.list"
	ReadKVKeys           ReadOp = "kv.keys"
	ReadNodes            ReadOp = "catalog.nodes"
	ReadNode             ReadOp = "catalog.node"
	ReadServices         ReadOp = "catalog.services"
	ReadServiceInstances ReadOp = "catalog.service"
	ReadHealthService    ReadOp = "health.service"
	// ReadConnectInstances and ReadHealthConnect read the mesh instances
	// (proxies and Connect-native instances) of service Name.
	ReadConnectInstances ReadOp = "catalog.connect"
	ReadHealthConnect    ReadOp = "health.connect"
	ReadNodeChecks       ReadOp = "health.node"
	ReadServiceChecks    ReadOp = "health.checks"
	ReadChecksInState    ReadOp = "health.state"
	ReadSession          ReadOp = "session.info"
	ReadSessions         ReadOp = "session.list"
	ReadCoordinates      ReadOp = "coordinate.nodes"
	// ReadPreparedQuery reads the query with ID Name.
	ReadPreparedQuery ReadOp = "query.get"
	// ReadPreparedQueries lists every query.
	ReadPreparedQueries ReadOp = "query.list"
	// ReadPreparedQueryResolve finds the query an execution of Name (an
	// ID, a name or a name a template prefixes) runs, unrendered.
	ReadPreparedQueryResolve ReadOp = "query.resolve"
)

// ReadRequest is one catalog read with its query options. Only the fields the
// operation uses are set.
type ReadRequest struct {
	Op        ReadOp
	Key       string   // kv.get; kv.list and kv.keys prefix
	Separator string   // kv.keys
	Name      string   // service name, node name, check state or session ID
	Tags      []string // service tag filter
	// ACLPolicyID and ACLRoleID filter acl.tokens and acl.roles.
	ACLPolicyID string `json:",omitempty"`
	ACLRoleID   string `json:",omitempty"`
	// NodeMeta keeps only results on nodes carrying every one of these
	// meta pairs (?node-meta=key:value): for nodes, services, service
	// instances and checks.
	NodeMeta map[string]string `json:",omitempty"`
	// PreparedQueryID, on a health.service read, says that the read
	// executes that prepared query: with ACLs, the query's own token
	// (when it has one) filters the result on the servers.
	PreparedQueryID string `json:",omitempty"`
	Options         QueryOptions
}

// ReadResponse carries the result of a read; only the field of the
// operation is set.
type ReadResponse struct {
	Meta         QueryMeta
	KV           *KVEntry            `json:",omitempty"`
	KVs          []*KVEntry          `json:",omitempty"`
	Keys         []string            `json:",omitempty"`
	Nodes        []*Node             `json:",omitempty"`
	Node         *Node               `json:",omitempty"`
	Services     map[string][]string `json:",omitempty"`
	Instances    []*CheckServiceNode `json:",omitempty"`
	NodeServices *NodeServices       `json:",omitempty"`
	Checks       []*HealthCheck      `json:",omitempty"`
	Sessions     []*Session          `json:",omitempty"`
	Coordinates  []*CoordinateEntry  `json:",omitempty"`
	// PreparedQueries is the list, or the one query found (none when
	// there is no match).
	PreparedQueries []*PreparedQuery `json:",omitempty"`
	// ACL reads: the tokens, policies and roles found, and the index at
	// which ACLs were bootstrapped.
	ACLTokens         []*ACLToken  `json:",omitempty"`
	ACLPolicies       []*ACLPolicy `json:",omitempty"`
	ACLRoles          []*ACLRole   `json:",omitempty"`
	ACLBootstrapIndex uint64       `json:",omitempty"`
	// Auth methods and binding rules.
	ACLAuthMethods  []*ACLAuthMethod  `json:",omitempty"`
	ACLBindingRules []*ACLBindingRule `json:",omitempty"`
	// Connect: CA roots (never with private keys), CA configuration,
	// config entries.
	CARoots       []*CARoot        `json:",omitempty"`
	CAConfig      *CAConfiguration `json:",omitempty"`
	ConfigEntries []*ConfigEntry   `json:",omitempty"`
	// VirtualIP answers ReadServiceVirtualIP; VirtualIPs,
	// ReadServiceVirtualIPs.
	VirtualIP  *ServiceVirtualIP   `json:",omitempty"`
	VirtualIPs []*ServiceVirtualIP `json:",omitempty"`
	// GatewayServices answers ReadGatewayServices.
	GatewayServices []*GatewayService `json:",omitempty"`
}

// Execute runs req against the store, adding what it read to ws, and returns
// the index of the result.
func (s *Store) Execute(ws memdb.WatchSet, req *ReadRequest) (uint64, *ReadResponse, error) {
	out := &ReadResponse{}
	var idx uint64
	var err error
	if isACLRead(req.Op) {
		idx, err = s.executeACL(ws, req, out)
		if err != nil {
			return 0, nil, err
		}
		return max(idx, 1), out, nil
	}
	switch req.Op {
	case ReadKVGet:
		idx, out.KV, err = s.KVGet(ws, req.Key)
	case ReadKVList:
		idx, out.KVs, err = s.KVList(ws, req.Key)
	case ReadKVKeys:
		idx, out.Keys, err = s.KVKeys(ws, req.Key, req.Separator)
	case ReadNodes:
		idx, out.Nodes, err = s.Nodes(ws)
	case ReadNode:
		idx, out.NodeServices, err = s.NodeServices(ws, req.Name)
	case ReadServices:
		idx, out.Services, err = s.Services(ws)
	case ReadServiceInstances:
		idx, out.Instances, err = s.ServiceInstances(ws, req.Name, req.Tags)
	case ReadHealthService:
		idx, out.Instances, err = s.CheckServiceNodes(ws, req.Name, req.Tags)
	case ReadConnectInstances, ReadHealthConnect:
		idx, out.Instances, err = s.ConnectServiceNodes(ws, req.Name, req.Tags, req.Op == ReadHealthConnect)
	case ReadNodeChecks:
		idx, out.Checks, err = s.NodeChecks(ws, req.Name)
	case ReadServiceChecks:
		idx, out.Checks, err = s.ServiceChecks(ws, req.Name)
	case ReadChecksInState:
		idx, out.Checks, err = s.ChecksInState(ws, req.Name)
	case ReadSession:
		var sess *Session
		idx, sess, err = s.SessionGet(ws, req.Name)
		if sess != nil {
			out.Sessions = []*Session{sess}
		}
	case ReadSessions:
		idx, out.Sessions, err = s.SessionList(ws, req.Name)
	case ReadCoordinates:
		idx, out.Coordinates, err = s.Coordinates(ws)
	case ReadCatalogDump:
		idx, out.Nodes, out.Instances, out.Checks, err = s.CatalogDump(ws)
	case ReadPreparedQueries:
		idx, out.PreparedQueries, err = s.PreparedQueryList(ws)
	case ReadPreparedQuery, ReadPreparedQueryResolve:
		var q *PreparedQuery
		if req.Op == ReadPreparedQuery {
			idx, q, err = s.PreparedQueryGet(ws, req.Name)
		} else {
			idx, q, err = s.PreparedQueryResolve(ws, req.Name)
		}
		if q != nil {
			out.PreparedQueries = []*PreparedQuery{q}
		}
	default:
		var ok bool
		if idx, ok, err = s.executeConnect(ws, req, out); !ok {
			return 0, nil, fmt.Errorf("%w: unknown read %q", ErrInvalidRequest, req.Op)
		}
	}
	if err != nil {
		return 0, nil, err
	}
	if len(req.NodeMeta) > 0 {
		if err := s.filterNodeMeta(ws, req, out); err != nil {
			return 0, nil, err
		}
	}
	if idx == 0 {
		// Consul never answers index 0: a client blocking on 0 would spin.
		idx = 1
	}
	return idx, out, nil
}
