package catalog

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Connect tables: the cluster identity with the CA configuration (one
// row), the CA roots, and the config entries.
const (
	tableCAConfig      = "ca_config"
	tableCARoots       = "ca_roots"
	tableConfigEntries = "config_entries"
)

// Connect command types (30-39 belong to Connect).
const (
	// CmdCA carries a CARequest.
	CmdCA CommandType = 30
	// CmdConfigEntry carries a ConfigEntryRequest.
	CmdConfigEntry CommandType = 31
)

// CAConfiguration is the cluster's identity and the built-in CA's
// configuration, as stored. ClusterID is created once, by the first leader;
// the trust domain is <ClusterID>.consul.
type CAConfiguration struct {
	ClusterID           string
	Provider            string
	PrivateKeyType      string
	PrivateKeyBits      int
	LeafCertTTL         time.Duration
	RootCertTTL         time.Duration
	IntermediateCertTTL time.Duration
	// State is the provider's state as the API shows it.
	State map[string]string `json:",omitempty"`
	RaftIndex
}

// ConfigEntry is one config entry (service-defaults, proxy-defaults,
// service-intentions, mesh...). Body is the entry as the user wrote it,
// without Kind, Name and the Raft indexes; its shape is checked per kind
// before it is proposed.
type ConfigEntry struct {
	Kind string
	Name string
	Body json.RawMessage
	RaftIndex
}

// CAOp names a CA write.
type CAOp string

// CA writes.
const (
	// CAOpSetClusterID sets the cluster ID if none is set yet; a second
	// one is ignored, so that two leaders racing at start agree.
	CAOpSetClusterID CAOp = "set-cluster-id"
	// CAOpSetRoots replaces the whole set of roots (and the configuration
	// when Config is set), if the roots are still at RootsIndex.
	CAOpSetRoots CAOp = "set-roots"
)

// MaxCARoots bounds the roots of one CAOpSetRoots.
const MaxCARoots = 64

// CARequest is a write to the CA state.
type CARequest struct {
	Op        CAOp
	ClusterID string           `json:",omitempty"`
	Config    *CAConfiguration `json:",omitempty"`
	Roots     []*CARoot        `json:",omitempty"`
	// RootsIndex is the index of the roots the write was computed from;
	// 0 means there were none. The write fails with ErrCASConflict when
	// the roots changed since.
	RootsIndex uint64
}

// ConfigEntryOp names a config entry write.
type ConfigEntryOp string

// Config entry writes.
const (
	ConfigEntryUpsert    ConfigEntryOp = "upsert"
	ConfigEntryUpsertCAS ConfigEntryOp = "upsert-cas"
	ConfigEntryDelete    ConfigEntryOp = "delete"
	ConfigEntryDeleteCAS ConfigEntryOp = "delete-cas"
)

// ConfigEntryRequest writes one config entry. For the CAS operations,
// Entry.ModifyIndex is the expected index (0: the entry must not exist).
// The FSM answers with a KVResult: OK false when a CAS did not hold.
type ConfigEntryRequest struct {
	Op    ConfigEntryOp
	Entry ConfigEntry
}

// MaxConfigEntryBody bounds the body of one config entry.
const MaxConfigEntryBody = 512 << 10

func connectTables() map[string]*memdb.TableSchema {
	always := &memdb.ConditionalIndex{Conditional: func(any) (bool, error) { return true, nil }}
	return map[string]*memdb.TableSchema{
		tableCAConfig: {Name: tableCAConfig, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: always},
		}},
		tableCARoots: {Name: tableCARoots, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		}},
		tableConfigEntries: {Name: tableConfigEntries, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Kind", Lowercase: true}, &memdb.StringFieldIndex{Field: "Name"},
			}}},
			"kind": {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind", Lowercase: true}},
		}},
	}
}

// checkConnectLimits bounds the Connect commands before they are proposed.
func (c *Command) checkConnectLimits() error {
	switch c.Type {
	case CmdCA:
		switch c.CA.Op {
		case CAOpSetClusterID:
			if c.CA.ClusterID == "" || len(c.CA.ClusterID) > 64 {
				return fmt.Errorf("cluster ID of %d bytes", len(c.CA.ClusterID))
			}
		case CAOpSetRoots:
			if len(c.CA.Roots) == 0 || len(c.CA.Roots) > MaxCARoots {
				return fmt.Errorf("%d roots, want 1 to %d", len(c.CA.Roots), MaxCARoots)
			}
		default:
			return fmt.Errorf("unknown CA operation %q", c.CA.Op)
		}
	case CmdConfigEntry:
		switch c.ConfigEntry.Op {
		case ConfigEntryUpsert, ConfigEntryUpsertCAS, ConfigEntryDelete, ConfigEntryDeleteCAS:
		default:
			return fmt.Errorf("unknown config entry operation %q", c.ConfigEntry.Op)
		}
		if len(c.ConfigEntry.Entry.Body) > MaxConfigEntryBody {
			return fmt.Errorf("config entry of %d bytes, max %d", len(c.ConfigEntry.Entry.Body), MaxConfigEntryBody)
		}
	}
	return nil
}

// checkConnectShape refuses Connect commands the store cannot apply.
func (c *Command) checkConnectShape() error {
	switch c.Type {
	case CmdCA:
		for i, r := range c.CA.Roots {
			if r == nil || r.ID == "" {
				return fmt.Errorf("root %d is null or has no ID", i)
			}
		}
	case CmdConfigEntry:
		if c.ConfigEntry.Entry.Kind == "" || c.ConfigEntry.Entry.Name == "" {
			return fmt.Errorf("config entry without kind or name")
		}
	}
	return nil
}

// CAApply applies a CA write at idx.
func (s *Store) CAApply(idx uint64, req *CARequest) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	cur, err := caConfigTxn(txn)
	if err != nil {
		return err
	}
	switch req.Op {
	case CAOpSetClusterID:
		if cur != nil && cur.ClusterID != "" {
			return nil
		}
		c := CAConfiguration{}
		if cur != nil {
			c = *cur
		} else {
			c.CreateIndex = idx
		}
		c.ClusterID = req.ClusterID
		c.ModifyIndex = idx
		if err := txn.Insert(tableCAConfig, &c); err != nil {
			return fmt.Errorf("insert CA config: %w", err)
		}
		if err := setIndex(txn, tableCAConfig, idx); err != nil {
			return err
		}
	case CAOpSetRoots:
		if got := maxIndex(txn, tableCARoots); got != req.RootsIndex {
			return fmt.Errorf("%w: CA roots at index %d, not %d", ErrCASConflict, got, req.RootsIndex)
		}
		if req.Config != nil {
			c := *req.Config
			c.CreateIndex = idx
			if cur != nil {
				c.CreateIndex = cur.CreateIndex
				if c.ClusterID == "" {
					c.ClusterID = cur.ClusterID
				}
			}
			c.ModifyIndex = idx
			if err := txn.Insert(tableCAConfig, &c); err != nil {
				return fmt.Errorf("insert CA config: %w", err)
			}
			if err := setIndex(txn, tableCAConfig, idx); err != nil {
				return err
			}
		}
		if _, err := txn.DeleteAll(tableCARoots, "id"); err != nil {
			return fmt.Errorf("delete CA roots: %w", err)
		}
		for _, r := range req.Roots {
			c := *r
			if c.CreateIndex == 0 {
				c.CreateIndex = idx
			}
			c.ModifyIndex = idx
			if err := txn.Insert(tableCARoots, &c); err != nil {
				return fmt.Errorf("insert CA root: %w", err)
			}
		}
		if err := setIndex(txn, tableCARoots, idx); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown CA operation %q", ErrInvalidRequest, req.Op)
	}
	txn.Commit()
	return nil
}

func caConfigTxn(txn *memdb.Txn) (*CAConfiguration, error) {
	raw, err := txn.First(tableCAConfig, "id", true)
	if err != nil {
		return nil, fmt.Errorf("CA config lookup: %w", err)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*CAConfiguration), nil
}

// CAConfig returns the CA configuration (with the cluster ID), nil when
// none was written yet.
func (s *Store) CAConfig(ws memdb.WatchSet) (uint64, *CAConfiguration, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableCAConfig)
	ch, raw, err := txn.FirstWatch(tableCAConfig, "id", true)
	if err != nil {
		return 0, nil, fmt.Errorf("CA config lookup: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return idx, nil, nil
	}
	c := *raw.(*CAConfiguration)
	return idx, &c, nil
}

// CARoots returns the roots without their private keys, sorted by ID, and
// the CA configuration. Use CARootsWithKeys to sign.
func (s *Store) CARoots(ws memdb.WatchSet) (uint64, []*CARoot, *CAConfiguration, error) {
	idx, roots, cfg, err := s.caRoots(ws)
	if err != nil {
		return 0, nil, nil, err
	}
	for i, r := range roots {
		roots[i] = r.Public()
	}
	return idx, roots, cfg, nil
}

// CARootsWithKeys is CARoots with the private keys: only a server that
// signs may call it, and what it returns must never leave the server.
func (s *Store) CARootsWithKeys(ws memdb.WatchSet) (uint64, []*CARoot, *CAConfiguration, error) {
	return s.caRoots(ws)
}

func (s *Store) caRoots(ws memdb.WatchSet) (uint64, []*CARoot, *CAConfiguration, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableCARoots)
	it, err := txn.Get(tableCARoots, "id")
	if err != nil {
		return 0, nil, nil, fmt.Errorf("CA roots: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*CARoot
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := *raw.(*CARoot)
		out = append(out, &r)
	}
	cfg, err := caConfigTxn(txn)
	if err != nil {
		return 0, nil, nil, err
	}
	if cfg != nil {
		c := *cfg
		cfg = &c
	}
	return idx, out, cfg, nil
}

// ConfigEntryApply applies a config entry write at idx. OK is false when a
// CAS did not hold; deleting an entry that does not exist succeeds.
func (s *Store) ConfigEntryApply(idx uint64, req *ConfigEntryRequest) KVResult {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	e := req.Entry
	raw, err := txn.First(tableConfigEntries, "id", e.Kind, e.Name)
	if err != nil {
		return KVResult{Err: fmt.Errorf("config entry lookup: %w", err)}
	}
	var cur *ConfigEntry
	if raw != nil {
		cur = raw.(*ConfigEntry)
	}
	if req.Op == ConfigEntryUpsertCAS || req.Op == ConfigEntryDeleteCAS {
		want := e.ModifyIndex
		if (cur == nil && want != 0) || (cur != nil && cur.ModifyIndex != want) {
			return KVResult{OK: false}
		}
	}
	switch req.Op {
	case ConfigEntryUpsert, ConfigEntryUpsertCAS:
		row := ConfigEntry{Kind: e.Kind, Name: e.Name, Body: append(json.RawMessage(nil), e.Body...)}
		row.CreateIndex, row.ModifyIndex = idx, idx
		if cur != nil {
			row.CreateIndex = cur.CreateIndex
		}
		if err := txn.Insert(tableConfigEntries, &row); err != nil {
			return KVResult{Err: fmt.Errorf("insert config entry: %w", err)}
		}
	case ConfigEntryDelete, ConfigEntryDeleteCAS:
		if cur == nil {
			return KVResult{OK: true}
		}
		if err := txn.Delete(tableConfigEntries, cur); err != nil {
			return KVResult{Err: fmt.Errorf("delete config entry: %w", err)}
		}
	default:
		return KVResult{Err: fmt.Errorf("%w: unknown config entry operation %q", ErrInvalidRequest, req.Op)}
	}
	if err := setIndex(txn, tableConfigEntries, idx); err != nil {
		return KVResult{Err: err}
	}
	deleted := req.Op == ConfigEntryDelete || req.Op == ConfigEntryDeleteCAS
	if err := configEntryVirtualIPHookTxn(txn, idx, strings.ToLower(e.Kind), e.Name, deleted); err != nil {
		return KVResult{Err: err}
	}
	txn.Commit()
	return KVResult{OK: true}
}

// ConfigEntry returns one entry, nil when there is none. The index is the
// config entry table's, so a blocking read wakes on any entry write.
func (s *Store) ConfigEntry(ws memdb.WatchSet, kind, name string) (uint64, *ConfigEntry, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableConfigEntries)
	ch, raw, err := txn.FirstWatch(tableConfigEntries, "id", kind, name)
	if err != nil {
		return 0, nil, fmt.Errorf("config entry lookup: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return idx, nil, nil
	}
	e := *raw.(*ConfigEntry)
	return idx, &e, nil
}

// ConfigEntries returns the entries of one kind (every kind when kind is
// empty), sorted by kind and name.
func (s *Store) ConfigEntries(ws memdb.WatchSet, kind string) (uint64, []*ConfigEntry, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableConfigEntries)
	var it memdb.ResultIterator
	var err error
	if kind == "" {
		it, err = txn.Get(tableConfigEntries, "id")
	} else {
		it, err = txn.Get(tableConfigEntries, "kind", kind)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("config entries: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*ConfigEntry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		e := *raw.(*ConfigEntry)
		out = append(out, &e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return idx, out, nil
}

// Connect reads.
const (
	// ReadCARoots reads the roots (without keys) and the CA configuration.
	ReadCARoots ReadOp = "connect.ca.roots"
	// ReadCAConfig reads the CA configuration.
	ReadCAConfig ReadOp = "connect.ca.config"
	// ReadConfigEntry reads the entry of kind Key and name Name.
	ReadConfigEntry ReadOp = "config.get"
	// ReadConfigEntries reads the entries of kind Key (all when empty).
	ReadConfigEntries ReadOp = "config.list"
)

// executeConnect runs the Connect reads; ok is false for another op.
func (s *Store) executeConnect(ws memdb.WatchSet, req *ReadRequest, out *ReadResponse) (idx uint64, ok bool, err error) {
	switch req.Op {
	case ReadCARoots:
		idx, out.CARoots, out.CAConfig, err = s.CARoots(ws)
	case ReadCAConfig:
		idx, out.CAConfig, err = s.CAConfig(ws)
	case ReadConfigEntry:
		var e *ConfigEntry
		idx, e, err = s.ConfigEntry(ws, req.Key, req.Name)
		if e != nil {
			out.ConfigEntries = []*ConfigEntry{e}
		}
	case ReadConfigEntries:
		idx, out.ConfigEntries, err = s.ConfigEntries(ws, req.Key)
	case ReadServiceVirtualIP:
		idx, out.VirtualIP, err = s.ServiceVirtualIPOf(ws, req.Name)
	case ReadServiceVirtualIPs:
		idx, out.VirtualIPs, err = s.ServiceVirtualIPs(ws)
	case ReadGatewayServices:
		idx, out.GatewayServices, err = s.GatewayServices(ws, req.Name)
	case ReadHealthIngress:
		idx, out.Instances, err = s.IngressServiceNodes(ws, req.Name)
	default:
		return 0, false, nil
	}
	return idx, true, err
}
