package catalog

import "time"

// QueryOptions are the read parameters every catalog read accepts: the
// consistency mode, the blocking-query index and wait, and the filter.
type QueryOptions struct {
	Datacenter        string
	Token             string
	MinQueryIndex     uint64
	MaxQueryTime      time.Duration
	AllowStale        bool
	RequireConsistent bool
	MaxStaleDuration  time.Duration
	Filter            string
}

// QueryMeta is what every read answers besides its result: the index of the
// data, how long since the serving server heard from the leader, and whether
// it knows a leader.
type QueryMeta struct {
	Index       uint64
	LastContact time.Duration
	KnownLeader bool
	// ResultsFilteredByACLs is set when rows the caller's token may not
	// read were dropped (X-Consul-Results-Filtered-By-ACLs).
	ResultsFilteredByACLs bool `json:",omitempty"`
}

// WriteOptions are the parameters of a write.
type WriteOptions struct {
	Datacenter string
	Token      string
}

// RegisterRequest registers a node and optionally one service and checks
// (PUT /v1/catalog/register).
type RegisterRequest struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Service         *Service
	Check           *HealthCheck
	Checks          []*HealthCheck
	SkipNodeUpdate  bool
}

// DeregisterRequest removes a node, or one service, or one check of a node
// (PUT /v1/catalog/deregister).
type DeregisterRequest struct {
	Node      string
	ServiceID string
	CheckID   string
}

// KVOp names a KV operation, as Consul's transaction verbs do.
type KVOp string

// KV operations. The read and check verbs are only valid inside a txn.
const (
	KVSet            KVOp = "set"
	KVCAS            KVOp = "cas"
	KVLock           KVOp = "lock"
	KVUnlock         KVOp = "unlock"
	KVGet            KVOp = "get"
	KVGetTree        KVOp = "get-tree"
	KVCheckSession   KVOp = "check-session"
	KVCheckIndex     KVOp = "check-index"
	KVCheckNotExists KVOp = "check-not-exists"
	KVDelete         KVOp = "delete"
	KVDeleteCAS      KVOp = "delete-cas"
	KVDeleteTree     KVOp = "delete-tree"
)

// KVRequest is one KV write (PUT or DELETE /v1/kv/<key>). For cas and
// delete-cas, Entry.ModifyIndex is the expected index; for lock and unlock,
// Entry.Session is the session.
type KVRequest struct {
	Op    KVOp
	Entry KVEntry
}

// TxnKVOp is a KV operation inside a transaction.
type TxnKVOp struct {
	Verb    KVOp
	Key     string
	Value   []byte
	Flags   uint64
	Index   uint64
	Session string
}

// TxnOp is one operation of a transaction. Exactly one field is set.
type TxnOp struct {
	KV      *TxnKVOp      `json:",omitempty"`
	Node    *TxnNodeOp    `json:",omitempty"`
	Service *TxnServiceOp `json:",omitempty"`
	Check   *TxnCheckOp   `json:",omitempty"`
	Session *TxnSessionOp `json:",omitempty"`
}

// Catalog verbs of a transaction (Node, Service and Check operations).
const (
	TxnSet       = "set"
	TxnCAS       = "cas"
	TxnGet       = "get"
	TxnDelete    = "delete"
	TxnDeleteCAS = "delete-cas"
)

// TxnNodeOp is a node operation inside a transaction; Node.ModifyIndex is
// the expected index for the cas verbs.
type TxnNodeOp struct {
	Verb string
	Node Node
}

// TxnServiceOp is a service operation on a node inside a transaction.
type TxnServiceOp struct {
	Verb    string
	Node    string
	Service Service
}

// TxnCheckOp is a check operation inside a transaction.
type TxnCheckOp struct {
	Verb  string
	Check HealthCheck
}

// TxnSessionOp is a session operation inside a transaction; the only verb
// is delete.
type TxnSessionOp struct {
	Verb    string
	Session Session
}

// TxnResult is the result of one transaction operation.
type TxnResult struct {
	KV      *KVEntry     `json:",omitempty"`
	Node    *Node        `json:",omitempty"`
	Service *Service     `json:",omitempty"`
	Check   *HealthCheck `json:",omitempty"`
}

// TxnError says why an operation made the whole transaction roll back.
type TxnError struct {
	OpIndex int
	What    string
}

// TxnResponse is the outcome of a transaction: results when it committed,
// errors when it rolled back.
type TxnResponse struct {
	Results []TxnResult
	Errors  []TxnError
}

// SessionOp names a session write.
type SessionOp string

// Session writes.
const (
	SessionCreate  SessionOp = "create"
	SessionDestroy SessionOp = "destroy"
)

// SessionRequest creates or destroys a session.
type SessionRequest struct {
	Op      SessionOp
	Session Session
}
