// Package catalog is Tribune's state store: the go-memdb schema of nodes,
// services, checks, KV entries and sessions, typed read and write functions,
// and the Raft FSM that applies committed commands to it.
//
// Every read returns the Raft index of the data it read and adds the memdb
// watch channels of exactly the rows it read to the caller's WatchSet, so a
// blocking query wakes only when its own result may have changed.
//
// The package is pure: no network, no goroutines of its own, no clock except
// the one passed in. It must not import agent or server.
package catalog

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/tribune-mesh/tribune/clock"
)

// Errors callers branch on.
var (
	ErrMissingNode     = errors.New("Missing node registration")
	ErrMissingService  = errors.New("Missing service registration")
	ErrSessionNotFound = errors.New("invalid session")
	ErrInvalidRequest  = errors.New("invalid request")
	ErrCASConflict     = errors.New("index mismatch")
)

// Store is the in-memory state of a server. Writes come only from the FSM
// (one goroutine); reads are safe from any goroutine and never block writes.
type Store struct {
	db    atomic.Pointer[memdb.MemDB]
	clock clock.Clock

	// abandonMu guards abandonCh, closed when a restore replaces the data.
	abandonMu sync.Mutex
	abandonCh chan struct{}

	// lockDelay holds, per key, the time before which the key may not be
	// acquired after a session holding it was invalidated. Like Consul's,
	// it is local to each server and not replicated. lockDelaySweepAt is
	// the size at which setLockDelay next drops the expired entries.
	mu               sync.Mutex
	lockDelay        map[string]time.Time
	lockDelaySweepAt int

	// services is the latest answer of Services (services_memo.go).
	services atomic.Pointer[servicesMemo]
}

// NewStore returns an empty store. clk supplies the time for lock delays; nil
// means the real clock.
func NewStore(clk clock.Clock) *Store {
	db, err := memdb.NewMemDB(mustSchema())
	if err != nil {
		panic(fmt.Sprintf("catalog: new memdb: %v", err))
	}
	if clk == nil {
		clk = clock.New()
	}
	s := &Store{clock: clk, lockDelay: make(map[string]time.Time), abandonCh: make(chan struct{})}
	s.db.Store(db)
	return s
}

func (s *Store) mem() *memdb.MemDB { return s.db.Load() }

// AbandonCh returns a channel that is closed when the store's data is
// replaced by a restore; blocking queries add it to their WatchSet.
func (s *Store) AbandonCh() <-chan struct{} {
	s.abandonMu.Lock()
	defer s.abandonMu.Unlock()
	return s.abandonCh
}

func setIndex(txn *memdb.Txn, key string, idx uint64) error {
	if err := txn.Insert(tableIndex, &indexEntry{Key: key, Value: idx}); err != nil {
		return fmt.Errorf("update index %s: %w", key, err)
	}
	return nil
}

// maxIndex returns the highest index recorded for any of keys.
func maxIndex(txn *memdb.Txn, keys ...string) uint64 {
	var max uint64
	for _, k := range keys {
		raw, err := txn.First(tableIndex, "id", k)
		if err == nil && raw != nil {
			if v := raw.(*indexEntry).Value; v > max {
				max = v
			}
		}
	}
	return max
}

// watchIndex adds the watch of an index-table row to ws and returns its value.
func watchIndex(txn *memdb.Txn, ws memdb.WatchSet, key string) uint64 {
	ch, raw, err := txn.FirstWatch(tableIndex, "id", key)
	ws.Add(ch)
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*indexEntry).Value
}

// LastIndex returns the highest index of any table, which is the index of the
// last applied write.
func (s *Store) LastIndex() uint64 {
	txn := s.mem().Txn(false)
	return maxIndex(txn, tableNodes, tableServices, tableChecks, tableKVs, tableSessions,
		tableACLTokens, tableACLPolicies, tableACLRoles, tableACLAuthMethods, tableACLBindingRules,
		tableCAConfig, tableCARoots, tableConfigEntries, tableServiceVirtualIPs)
}

// ---- catalog writes ----

// EnsureRegistration applies a catalog registration at idx.
func (s *Store) EnsureRegistration(idx uint64, req *RegisterRequest) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	if err := s.ensureRegistrationTxn(txn, idx, req); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func (s *Store) ensureRegistrationTxn(txn *memdb.Txn, idx uint64, req *RegisterRequest) error {
	if req.Node == "" {
		return fmt.Errorf("%w: missing node name", ErrInvalidRequest)
	}
	if !req.SkipNodeUpdate || !nodeExists(txn, req.Node) {
		node := &Node{ID: req.ID, Node: req.Node, Address: req.Address, Datacenter: req.Datacenter,
			TaggedAddresses: req.TaggedAddresses, Meta: req.NodeMeta}
		if err := ensureNodeTxn(txn, idx, node); err != nil {
			return err
		}
	}
	if req.Service != nil {
		if err := ensureServiceTxn(txn, idx, req.Node, req.Service); err != nil {
			return err
		}
	}
	checks := req.Checks
	if req.Check != nil {
		checks = append([]*HealthCheck{req.Check}, checks...)
	}
	for _, c := range checks {
		if c.Node == "" {
			c.Node = req.Node
		}
		if !strings.EqualFold(c.Node, req.Node) {
			return fmt.Errorf("%w: check node %q does not match %q", ErrInvalidRequest, c.Node, req.Node)
		}
		if err := s.ensureCheckTxn(txn, idx, c); err != nil {
			return err
		}
	}
	return nil
}

func nodeExists(txn *memdb.Txn, name string) bool {
	raw, _ := txn.First(tableNodes, "id", name)
	return raw != nil
}

func ensureNodeTxn(txn *memdb.Txn, idx uint64, n *Node) error {
	existing, err := txn.First(tableNodes, "id", n.Node)
	if err != nil {
		return fmt.Errorf("node lookup: %w", err)
	}
	node := *n
	if existing != nil {
		old := existing.(*Node)
		node.CreateIndex = old.CreateIndex
		if nodeEqual(old, &node) {
			return nil
		}
		if node.ID == "" {
			node.ID = old.ID
		}
	} else {
		node.CreateIndex = idx
	}
	node.ModifyIndex = idx
	if err := txn.Insert(tableNodes, &node); err != nil {
		return fmt.Errorf("insert node: %w", err)
	}
	if err := setIndex(txn, tableNodes, idx); err != nil {
		return err
	}
	if err := setIndex(txn, nodeIndexKey(node.Node), idx); err != nil {
		return err
	}
	// Every service on the node sees the node's address and meta.
	return touchNodeServices(txn, idx, node.Node)
}

func nodeEqual(a, b *Node) bool {
	return (b.ID == "" || a.ID == b.ID) && a.Address == b.Address && a.Datacenter == b.Datacenter &&
		mapEqual(a.TaggedAddresses, b.TaggedAddresses) && mapEqual(a.Meta, b.Meta)
}

func mapEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func touchNodeServices(txn *memdb.Txn, idx uint64, node string) error {
	it, err := txn.Get(tableServices, "node", node)
	if err != nil {
		return fmt.Errorf("services of node: %w", err)
	}
	seen := map[string]bool{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		name := raw.(*serviceRow).Name
		if !seen[name] {
			seen[name] = true
			if err := setIndex(txn, serviceIndexKey(name), idx); err != nil {
				return err
			}
		}
	}
	return nil
}

func ensureServiceTxn(txn *memdb.Txn, idx uint64, node string, svc *Service) error {
	if svc.Service == "" {
		return fmt.Errorf("%w: missing service name", ErrInvalidRequest)
	}
	if err := svc.ValidateConnect(); err != nil {
		return err
	}
	if !nodeExists(txn, node) {
		return ErrMissingNode
	}
	sv := *svc
	if sv.ID == "" {
		sv.ID = sv.Service
	}
	if sv.Weights.Passing == 0 && sv.Weights.Warning == 0 {
		sv.Weights = Weights{Passing: 1, Warning: 1}
	}
	existing, err := txn.First(tableServices, "id", node, sv.ID)
	if err != nil {
		return fmt.Errorf("service lookup: %w", err)
	}
	if existing != nil {
		old := existing.(*serviceRow)
		sv.CreateIndex = old.Svc.CreateIndex
		// Re-registering an identical service (anti-entropy does it all
		// the time) must not bump its indexes and wake blocking queries.
		same := sv
		same.ModifyIndex = old.Svc.ModifyIndex
		if reflect.DeepEqual(old.Svc, &same) {
			return nil
		}
		if old.Name != sv.Service {
			// A renamed instance leaves its old service's view.
			if err := setIndex(txn, serviceIndexKey(old.Name), idx); err != nil {
				return err
			}
		}
	} else {
		sv.CreateIndex = idx
	}
	sv.ModifyIndex = idx
	row := &serviceRow{Node: node, ID: sv.ID, Name: sv.Service, Connect: sv.ConnectTarget(), Svc: &sv}
	if err := txn.Insert(tableServices, row); err != nil {
		return fmt.Errorf("insert service: %w", err)
	}
	var oldSvc *Service
	if existing != nil {
		oldSvc = existing.(*serviceRow).Svc
	}
	if err := serviceVirtualIPHookTxn(txn, idx, oldSvc, &sv); err != nil {
		return err
	}
	for _, k := range []string{tableServices, serviceIndexKey(sv.Service), nodeIndexKey(node)} {
		if err := setIndex(txn, k, idx); err != nil {
			return err
		}
	}
	if existing != nil {
		if err := touchConnect(txn, idx, existing.(*serviceRow).Connect); err != nil {
			return err
		}
	}
	return touchConnect(txn, idx, row.Connect)
}

// touchConnect records a change to the mesh instances of target (none when
// target is empty).
func touchConnect(txn *memdb.Txn, idx uint64, target string) error {
	if target == "" {
		return nil
	}
	return setIndex(txn, connectIndexKey(target), idx)
}

func (s *Store) ensureCheckTxn(txn *memdb.Txn, idx uint64, c *HealthCheck) error {
	if c.CheckID == "" {
		return fmt.Errorf("%w: missing check ID", ErrInvalidRequest)
	}
	if !nodeExists(txn, c.Node) {
		return ErrMissingNode
	}
	chk := *c
	if chk.Status == "" {
		chk.Status = HealthCritical
	}
	switch chk.Status {
	case HealthPassing, HealthWarning, HealthCritical, HealthMaint:
	default:
		return fmt.Errorf("%w: invalid check status %q", ErrInvalidRequest, chk.Status)
	}
	if chk.ServiceID != "" {
		raw, err := txn.First(tableServices, "id", chk.Node, chk.ServiceID)
		if err != nil {
			return fmt.Errorf("service lookup: %w", err)
		}
		if raw == nil {
			return fmt.Errorf("%w: %q on node %q", ErrMissingService, chk.ServiceID, chk.Node)
		}
		sv := raw.(*serviceRow).Svc
		chk.ServiceName = sv.Service
		chk.ServiceTags = sv.Tags
	}
	existing, err := txn.First(tableChecks, "id", chk.Node, chk.CheckID)
	if err != nil {
		return fmt.Errorf("check lookup: %w", err)
	}
	if existing != nil {
		old := existing.(*HealthCheck)
		chk.CreateIndex = old.CreateIndex
		if checkEqual(old, &chk) {
			return nil
		}
	} else {
		chk.CreateIndex = idx
	}
	chk.ModifyIndex = idx
	if err := txn.Insert(tableChecks, &chk); err != nil {
		return fmt.Errorf("insert check: %w", err)
	}
	if err := setIndex(txn, tableChecks, idx); err != nil {
		return err
	}
	if err := setIndex(txn, nodeIndexKey(chk.Node), idx); err != nil {
		return err
	}
	if chk.ServiceName != "" {
		if err := setIndex(txn, serviceIndexKey(chk.ServiceName), idx); err != nil {
			return err
		}
	} else if err := touchNodeServices(txn, idx, chk.Node); err != nil {
		return err
	}
	if chk.Status == HealthCritical {
		return s.invalidateCheckSessionsTxn(txn, idx, chk.Node, chk.CheckID)
	}
	return nil
}

func checkEqual(a, b *HealthCheck) bool {
	return a.Name == b.Name && a.Status == b.Status && a.Notes == b.Notes && a.Output == b.Output &&
		a.ServiceID == b.ServiceID && a.ServiceName == b.ServiceName && a.Type == b.Type &&
		a.Interval == b.Interval && a.Timeout == b.Timeout && strings.Join(a.ServiceTags, "\x00") == strings.Join(b.ServiceTags, "\x00")
}

// Deregister removes a node (with its services, checks and sessions), one
// service (with its checks), or one check.
func (s *Store) Deregister(idx uint64, req *DeregisterRequest) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	var err error
	switch {
	case req.ServiceID != "":
		err = s.deleteServiceTxn(txn, idx, req.Node, req.ServiceID)
	case req.CheckID != "":
		err = s.deleteCheckTxn(txn, idx, req.Node, req.CheckID)
	default:
		err = s.deleteNodeTxn(txn, idx, req.Node)
	}
	if err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func (s *Store) deleteNodeTxn(txn *memdb.Txn, idx uint64, node string) error {
	raw, err := txn.First(tableNodes, "id", node)
	if err != nil {
		return fmt.Errorf("node lookup: %w", err)
	}
	if raw == nil {
		return nil
	}
	var svcIDs []string
	it, err := txn.Get(tableServices, "node", node)
	if err != nil {
		return fmt.Errorf("services of node: %w", err)
	}
	for r := it.Next(); r != nil; r = it.Next() {
		svcIDs = append(svcIDs, r.(*serviceRow).ID)
	}
	for _, id := range svcIDs {
		if err := s.deleteServiceTxn(txn, idx, node, id); err != nil {
			return err
		}
	}
	var checkIDs []string
	cit, err := txn.Get(tableChecks, "node", node)
	if err != nil {
		return fmt.Errorf("checks of node: %w", err)
	}
	for r := cit.Next(); r != nil; r = cit.Next() {
		checkIDs = append(checkIDs, r.(*HealthCheck).CheckID)
	}
	for _, id := range checkIDs {
		if err := s.deleteCheckTxn(txn, idx, node, id); err != nil {
			return err
		}
	}
	var sessions []string
	sit, err := txn.Get(tableSessions, "node", node)
	if err != nil {
		return fmt.Errorf("sessions of node: %w", err)
	}
	for r := sit.Next(); r != nil; r = sit.Next() {
		sessions = append(sessions, r.(*Session).ID)
	}
	for _, id := range sessions {
		if err := s.destroySessionTxn(txn, idx, id); err != nil {
			return err
		}
	}
	if err := deleteCoordinateTxn(txn, idx, node); err != nil {
		return err
	}
	if err := txn.Delete(tableNodes, raw); err != nil {
		return fmt.Errorf("delete node: %w", err)
	}
	if err := setIndex(txn, tableNodes, idx); err != nil {
		return err
	}
	return setIndex(txn, nodeIndexKey(node), idx)
}

func (s *Store) deleteServiceTxn(txn *memdb.Txn, idx uint64, node, id string) error {
	raw, err := txn.First(tableServices, "id", node, id)
	if err != nil {
		return fmt.Errorf("service lookup: %w", err)
	}
	if raw == nil {
		return nil
	}
	row := raw.(*serviceRow)
	var checkIDs []string
	it, err := txn.Get(tableChecks, "node_service", node, id)
	if err != nil {
		return fmt.Errorf("checks of service: %w", err)
	}
	for r := it.Next(); r != nil; r = it.Next() {
		checkIDs = append(checkIDs, r.(*HealthCheck).CheckID)
	}
	for _, cid := range checkIDs {
		if err := s.deleteCheckTxn(txn, idx, node, cid); err != nil {
			return err
		}
	}
	if err := txn.Delete(tableServices, row); err != nil {
		return fmt.Errorf("delete service: %w", err)
	}
	if err := serviceVirtualIPHookTxn(txn, idx, row.Svc, nil); err != nil {
		return err
	}
	for _, k := range []string{tableServices, serviceIndexKey(row.Name), nodeIndexKey(node)} {
		if err := setIndex(txn, k, idx); err != nil {
			return err
		}
	}
	return touchConnect(txn, idx, row.Connect)
}

func (s *Store) deleteCheckTxn(txn *memdb.Txn, idx uint64, node, id string) error {
	raw, err := txn.First(tableChecks, "id", node, id)
	if err != nil {
		return fmt.Errorf("check lookup: %w", err)
	}
	if raw == nil {
		return nil
	}
	chk := raw.(*HealthCheck)
	if err := txn.Delete(tableChecks, chk); err != nil {
		return fmt.Errorf("delete check: %w", err)
	}
	if err := setIndex(txn, tableChecks, idx); err != nil {
		return err
	}
	if err := setIndex(txn, nodeIndexKey(node), idx); err != nil {
		return err
	}
	if chk.ServiceName != "" {
		if err := setIndex(txn, serviceIndexKey(chk.ServiceName), idx); err != nil {
			return err
		}
	} else if err := touchNodeServices(txn, idx, node); err != nil {
		return err
	}
	return s.invalidateCheckSessionsTxn(txn, idx, node, id)
}

// ---- catalog reads ----

// GetNode returns one node.
func (s *Store) GetNode(ws memdb.WatchSet, name string) (uint64, *Node, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, nodeIndexKey(name))
	ch, raw, err := txn.FirstWatch(tableNodes, "id", name)
	if err != nil {
		return 0, nil, fmt.Errorf("node lookup: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return idx, nil, nil
	}
	return idx, raw.(*Node), nil
}

// Nodes returns every node, sorted by name.
func (s *Store) Nodes(ws memdb.WatchSet) (uint64, []*Node, error) {
	txn := s.mem().Txn(false)
	idx := maxIndex(txn, tableNodes)
	it, err := txn.Get(tableNodes, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("nodes: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*Node
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Node))
	}
	return idx, out, nil
}

// Services returns every service name with the union of its instances'
// tags. The map and its slices are shared between callers (see
// servicesMemo) and must not be modified.
func (s *Store) Services(ws memdb.WatchSet) (uint64, map[string][]string, error) {
	db := s.mem()
	txn := db.Txn(false)
	idx := maxIndex(txn, tableServices)
	it, err := txn.Get(tableServices, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("services: %w", err)
	}
	ws.Add(it.WatchCh())
	if out := s.services.Load().at(db, idx); out != nil {
		return idx, out, nil
	}
	tags := map[string]map[string]struct{}{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		sv := raw.(*serviceRow).Svc
		set := tags[sv.Service]
		if set == nil {
			set = map[string]struct{}{}
			tags[sv.Service] = set
		}
		for _, t := range sv.Tags {
			set[t] = struct{}{}
		}
	}
	out := make(map[string][]string, len(tags))
	for name, set := range tags {
		list := make([]string, 0, len(set))
		for t := range set {
			list = append(list, t)
		}
		sort.Strings(list)
		out[name] = list
	}
	s.services.Store(&servicesMemo{db: db, idx: idx, out: out})
	return idx, out, nil
}

// ServiceInstances returns the instances of a service with their nodes,
// optionally only those carrying every tag in tags.
func (s *Store) ServiceInstances(ws memdb.WatchSet, service string, tags []string) (uint64, []*CheckServiceNode, error) {
	return s.serviceNodes(ws, service, tags, false)
}

// CheckServiceNodes returns the instances of a service with their nodes and
// checks (/v1/health/service).
func (s *Store) CheckServiceNodes(ws memdb.WatchSet, service string, tags []string) (uint64, []*CheckServiceNode, error) {
	return s.serviceNodes(ws, service, tags, true)
}

func (s *Store) serviceNodes(ws memdb.WatchSet, service string, tags []string, withChecks bool) (uint64, []*CheckServiceNode, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, serviceIndexKey(service))
	if idx == 0 {
		idx = maxIndex(txn, tableServices)
	}
	it, err := txn.Get(tableServices, "service", service)
	if err != nil {
		return 0, nil, fmt.Errorf("service instances: %w", err)
	}
	var out []*CheckServiceNode
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if csn := instanceOf(txn, raw.(*serviceRow), tags, withChecks); csn != nil {
			out = append(out, csn)
		}
	}
	return idx, out, nil
}

// instanceOf is a service row with its node (and checks when withChecks),
// nil when it lacks one of tags or its node is gone.
func instanceOf(txn *memdb.Txn, row *serviceRow, tags []string, withChecks bool) *CheckServiceNode {
	if !hasTags(row.Svc.Tags, tags) {
		return nil
	}
	nraw, err := txn.First(tableNodes, "id", row.Node)
	if err != nil || nraw == nil {
		return nil
	}
	csn := &CheckServiceNode{Node: nraw.(*Node), Service: row.Svc}
	if withChecks {
		csn.Checks = nodeAndServiceChecks(txn, row.Node, row.ID)
	}
	return csn
}

// ConnectServiceNodes returns the instances that accept mesh traffic for a
// service (its connect-proxies and its Connect-native instances) with their
// nodes, and their checks when withChecks (/v1/catalog/connect and
// /v1/health/connect). It watches the set of those instances and the view of
// each one's own service, so a proxy's check changing wakes it.
func (s *Store) ConnectServiceNodes(ws memdb.WatchSet, service string, tags []string, withChecks bool) (uint64, []*CheckServiceNode, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, connectIndexKey(service))
	it, err := txn.Get(tableServices, "connect", service)
	if err != nil {
		return 0, nil, fmt.Errorf("connect instances: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*CheckServiceNode
	watched := map[string]bool{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		row := raw.(*serviceRow)
		if !watched[strings.ToLower(row.Name)] {
			watched[strings.ToLower(row.Name)] = true
			idx = max(idx, watchIndex(txn, ws, serviceIndexKey(row.Name)))
		}
		if csn := instanceOf(txn, row, tags, withChecks); csn != nil {
			out = append(out, csn)
		}
	}
	if idx == 0 {
		idx = maxIndex(txn, tableServices)
	}
	return idx, out, nil
}

func nodeAndServiceChecks(txn *memdb.Txn, node, serviceID string) []*HealthCheck {
	var checks []*HealthCheck
	// Node checks have no ServiceID, so the node_service compound index
	// (which needs both parts) does not hold them: find them by node.
	it, err := txn.Get(tableChecks, "node", node)
	if err == nil {
		for r := it.Next(); r != nil; r = it.Next() {
			if c := r.(*HealthCheck); c.ServiceID == "" {
				checks = append(checks, c)
			}
		}
	}
	it, err = txn.Get(tableChecks, "node_service", node, serviceID)
	if err == nil {
		for r := it.Next(); r != nil; r = it.Next() {
			checks = append(checks, r.(*HealthCheck))
		}
	}
	return checks
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// NodeServices returns a node and its services; a nil result means no such
// node.
func (s *Store) NodeServices(ws memdb.WatchSet, node string) (uint64, *NodeServices, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, nodeIndexKey(node))
	raw, err := txn.First(tableNodes, "id", node)
	if err != nil {
		return 0, nil, fmt.Errorf("node lookup: %w", err)
	}
	if raw == nil {
		return maxIndex(txn, tableNodes, tableServices), nil, nil
	}
	ns := &NodeServices{Node: raw.(*Node), Services: []*Service{}}
	it, err := txn.Get(tableServices, "node", node)
	if err != nil {
		return 0, nil, fmt.Errorf("services of node: %w", err)
	}
	for r := it.Next(); r != nil; r = it.Next() {
		ns.Services = append(ns.Services, r.(*serviceRow).Svc)
	}
	return idx, ns, nil
}

// NodeChecks returns the checks of a node, its services' included.
func (s *Store) NodeChecks(ws memdb.WatchSet, node string) (uint64, []*HealthCheck, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, nodeIndexKey(node))
	if idx == 0 {
		idx = maxIndex(txn, tableChecks)
	}
	it, err := txn.Get(tableChecks, "node", node)
	if err != nil {
		return 0, nil, fmt.Errorf("checks of node: %w", err)
	}
	return idx, collectChecks(it), nil
}

// ServiceChecks returns the checks of every instance of a service.
func (s *Store) ServiceChecks(ws memdb.WatchSet, service string) (uint64, []*HealthCheck, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, serviceIndexKey(service))
	if idx == 0 {
		idx = maxIndex(txn, tableChecks)
	}
	it, err := txn.Get(tableChecks, "service", service)
	if err != nil {
		return 0, nil, fmt.Errorf("checks of service: %w", err)
	}
	return idx, collectChecks(it), nil
}

// ChecksInState returns every check in a state; "any" returns all checks.
func (s *Store) ChecksInState(ws memdb.WatchSet, state string) (uint64, []*HealthCheck, error) {
	txn := s.mem().Txn(false)
	idx := maxIndex(txn, tableChecks)
	var it memdb.ResultIterator
	var err error
	if state == HealthAny {
		it, err = txn.Get(tableChecks, "id")
	} else {
		it, err = txn.Get(tableChecks, "status", state)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("checks in state: %w", err)
	}
	ws.Add(it.WatchCh())
	return idx, collectChecks(it), nil
}

func collectChecks(it memdb.ResultIterator) []*HealthCheck {
	out := []*HealthCheck{}
	for r := it.Next(); r != nil; r = it.Next() {
		out = append(out, r.(*HealthCheck))
	}
	return out
}

// CheckOf returns one check of a node, nil when missing.
func (s *Store) CheckOf(node, checkID string) (*HealthCheck, error) {
	txn := s.mem().Txn(false)
	raw, err := txn.First(tableChecks, "id", node, checkID)
	if err != nil {
		return nil, fmt.Errorf("check lookup: %w", err)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*HealthCheck), nil
}
