package catalog

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Table names.
const (
	tableIndex    = "index"
	tableNodes    = "nodes"
	tableServices = "services"
	tableChecks   = "checks"
	tableKVs      = "kvs"
	tableSessions = "sessions"
	tableSessChks = "session_checks"
)

// indexEntry records the Raft index of the last change to a table or to a
// finer-grained slice of it ("service.<name>").
type indexEntry struct {
	Key   string
	Value uint64
}

// sessionCheck links a session to a check it depends on, so a check going
// critical finds its sessions.
type sessionCheck struct {
	Node    string
	CheckID string
	Session string
}

func schema() *memdb.DBSchema {
	lower := func(field string) memdb.Indexer {
		return &memdb.StringFieldIndex{Field: field, Lowercase: true}
	}
	db := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableIndex: {Name: tableIndex, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: stringField[indexEntry]{"Key", func(e *indexEntry) string { return e.Key }}},
		}},
		tableNodes: {Name: tableNodes, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: lower("Node")},
		}},
		tableServices: {Name: tableServices, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				lower("Node"), lower("ID"),
			}}},
			"node":    {Name: "node", Indexer: lower("Node")},
			"service": {Name: "service", AllowMissing: true, Indexer: lower("Name")},
			"connect": {Name: "connect", AllowMissing: true, Indexer: lower("Connect")},
		}},
		tableChecks: {Name: tableChecks, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				lower("Node"), lower("CheckID"),
			}}},
			"status":  {Name: "status", Indexer: lower("Status")},
			"service": {Name: "service", AllowMissing: true, Indexer: lower("ServiceName")},
			"node":    {Name: "node", Indexer: lower("Node")},
			"node_service": {Name: "node_service", AllowMissing: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				lower("Node"), lower("ServiceID"),
			}}},
		}},
		tableKVs: {Name: tableKVs, Indexes: map[string]*memdb.IndexSchema{
			"id":      {Name: "id", Unique: true, Indexer: stringField[KVEntry]{"Key", func(e *KVEntry) string { return e.Key }}},
			"session": {Name: "session", AllowMissing: true, Indexer: stringField[KVEntry]{"Session", func(e *KVEntry) string { return e.Session }}},
		}},
		tableSessions: {Name: tableSessions, Indexes: map[string]*memdb.IndexSchema{
			"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"node": {Name: "node", Indexer: lower("Node")},
		}},
		tableCoords: {Name: tableCoords, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: lower("Node")},
		}},
		tablePreparedQueries: {Name: tablePreparedQueries, Indexes: map[string]*memdb.IndexSchema{
			"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"name":     {Name: "name", Unique: true, AllowMissing: true, Indexer: lower("Name")},
			"template": {Name: "template", Unique: true, AllowMissing: true, Indexer: templateIndex{}},
			"session":  {Name: "session", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Session"}},
		}},
		tableSessChks: {Name: tableSessChks, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				lower("Node"), lower("CheckID"), &memdb.StringFieldIndex{Field: "Session"},
			}}},
			"node_check": {Name: "node_check", Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				lower("Node"), lower("CheckID"),
			}}},
			"session": {Name: "session", Indexer: &memdb.StringFieldIndex{Field: "Session"}},
		}},
		tableAutopilot: autopilotTableSchema(),
	}}
	for name, t := range connectTables() {
		db.Tables[name] = t
	}
	for name, t := range virtualIPTables() {
		db.Tables[name] = t
	}
	return db
}

// serviceIndexKey is the index-table key tracking changes that affect the
// health or catalog view of one service.
func serviceIndexKey(name string) string { return "service." + strings.ToLower(name) }

// nodeIndexKey is the index-table key tracking changes to one node's view.
func nodeIndexKey(name string) string { return "node." + strings.ToLower(name) }

func mustSchema() *memdb.DBSchema {
	s := schema()
	addACLTables(s.Tables)
	if err := s.Validate(); err != nil {
		panic(fmt.Sprintf("catalog schema invalid: %v", err))
	}
	return s
}

// stringField indexes one string field of a row type as
// memdb.StringFieldIndex (not lower-cased) does, byte for byte, but reads
// the field through get instead of reflection: the index of every KV write
// (kvs.id, kvs.session, index.id) is computed several times per write.
type stringField[T any] struct {
	name string
	get  func(*T) string
}

// FromObject implements memdb.SingleIndexer.
func (f stringField[T]) FromObject(obj any) (bool, []byte, error) {
	row, ok := obj.(*T)
	if !ok || row == nil {
		return false, nil, fmt.Errorf("field '%s' for %#v is invalid", f.name, obj)
	}
	v := f.get(row)
	if v == "" {
		return false, nil, nil
	}
	// The null character terminates the value, as in StringFieldIndex.
	b := make([]byte, len(v)+1)
	copy(b, v)
	return true, b, nil
}

// FromArgs implements memdb.Indexer.
func (f stringField[T]) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("must provide only a single argument")
	}
	arg, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("argument must be a string: %#v", args[0])
	}
	b := make([]byte, len(arg)+1)
	copy(b, arg)
	return b, nil
}

// PrefixFromArgs implements memdb.PrefixIndexer.
func (f stringField[T]) PrefixFromArgs(args ...any) ([]byte, error) {
	val, err := f.FromArgs(args...)
	if err != nil {
		return nil, err
	}
	return val[:len(val)-1], nil
}
