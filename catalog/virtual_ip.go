package catalog

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
)

// Service virtual IPs: every service in the mesh (a connect proxy or a
// native instance registered for it, or a discovery chain entry naming
// it) gets a stable virtual IP from 240.0.0.0/4, as Consul assigns them
// for transparent proxies and DNS; operators may add manual ones. The
// lowest free address is taken, so every server assigns the same one.

const tableServiceVirtualIPs = "service_virtual_ips"

// CmdServiceVirtualIP carries a VirtualIPRequest (manual virtual IPs).
const CmdServiceVirtualIP CommandType = 32

// ReadServiceVirtualIP reads the virtual IPs of service Name.
const ReadServiceVirtualIP ReadOp = "connect.vip"

// ReadServiceVirtualIPs reads the virtual IPs of every service in the mesh
// (transparent proxies reach their upstreams at them).
const ReadServiceVirtualIPs ReadOp = "connect.vips"

// MaxManualVIPs bounds the manual virtual IPs of one service.
const MaxManualVIPs = 64

// virtualIPBase is the first address of the range, 240.0.0.0; offsets
// start at 1.
const virtualIPBase = 240 << 24

// maxVirtualIPOffset is the last offset of 240.0.0.0/4.
const maxVirtualIPOffset = 1<<28 - 2

// ServiceVirtualIP is the virtual IP of a service and its manual ones.
type ServiceVirtualIP struct {
	Service string
	// Offset is the automatic address's offset in 240.0.0.0/4.
	Offset    uint64
	ManualIPs []string `json:",omitempty"`
	// Instances counts the proxy and native instances that put the
	// service in the mesh; the address is released when none is left and
	// no discovery chain entry names the service.
	Instances int `json:",omitempty"`
	RaftIndex
}

// IP is the automatic virtual IP.
func (v *ServiceVirtualIP) IP() string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(virtualIPBase+v.Offset))
	return net.IP(b[:]).String()
}

// VirtualIPRequest sets the manual virtual IPs of a service; they are
// taken from any other service that holds them.
type VirtualIPRequest struct {
	Service    string
	ManualVIPs []string
}

// VirtualIPResult is the FSM's answer to a VirtualIPRequest: whether the
// service has a virtual IP (manual ones need one), and the services that
// lost manual IPs to it.
type VirtualIPResult struct {
	Found          bool
	UnassignedFrom []string
	Err            error `json:"-"`
}

func virtualIPTables() map[string]*memdb.TableSchema {
	return map[string]*memdb.TableSchema{
		tableServiceVirtualIPs: {Name: tableServiceVirtualIPs, Indexes: map[string]*memdb.IndexSchema{
			"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Service", Lowercase: true}},
			"offset": {Name: "offset", Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Offset"}},
			"manual": {Name: "manual", AllowMissing: true, Indexer: &memdb.StringSliceFieldIndex{Field: "ManualIPs"}},
		}},
	}
}

// Validate bounds a VirtualIPRequest before it is proposed.
func (r *VirtualIPRequest) Validate() error {
	if r.Service == "" || len(r.Service) > 256 {
		return fmt.Errorf("service name of %d bytes", len(r.Service))
	}
	if len(r.ManualVIPs) > MaxManualVIPs {
		return fmt.Errorf("%d manual virtual IPs, max %d", len(r.ManualVIPs), MaxManualVIPs)
	}
	for _, ip := range r.ManualVIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("%q is not a valid IP address", ip)
		}
	}
	return nil
}

// assignVirtualIPTxn gives service a virtual IP if it has none.
func assignVirtualIPTxn(txn *memdb.Txn, idx uint64, service string) error {
	raw, err := txn.First(tableServiceVirtualIPs, "id", service)
	if err != nil {
		return fmt.Errorf("virtual IP lookup: %w", err)
	}
	if raw != nil {
		return nil
	}
	// The lowest offset not taken: walk the taken ones in order.
	it, err := txn.Get(tableServiceVirtualIPs, "offset")
	if err != nil {
		return fmt.Errorf("virtual IP offsets: %w", err)
	}
	next := uint64(1)
	for r := it.Next(); r != nil; r = it.Next() {
		off := r.(*ServiceVirtualIP).Offset
		if off > next {
			break
		}
		next = off + 1
	}
	if next > maxVirtualIPOffset {
		return fmt.Errorf("%w: no virtual IP left in 240.0.0.0/4", ErrInvalidRequest)
	}
	row := &ServiceVirtualIP{Service: service, Offset: next, RaftIndex: RaftIndex{CreateIndex: idx, ModifyIndex: idx}}
	if err := txn.Insert(tableServiceVirtualIPs, row); err != nil {
		return fmt.Errorf("insert virtual IP: %w", err)
	}
	return setIndex(txn, tableServiceVirtualIPs, idx)
}

// freeVirtualIPTxn releases service's virtual IP when nothing in the mesh
// names it any more: no proxy or native instance, no discovery chain
// entry.
func freeVirtualIPTxn(txn *memdb.Txn, idx uint64, service string) error {
	raw, err := txn.First(tableServiceVirtualIPs, "id", service)
	if err != nil || raw == nil {
		return err
	}
	if raw.(*ServiceVirtualIP).Instances > 0 {
		return nil
	}
	for _, kind := range []string{KindServiceResolver, KindServiceRouter, KindServiceSplitter} {
		e, err := txn.First(tableConfigEntries, "id", kind, service)
		if err != nil {
			return fmt.Errorf("config entry lookup: %w", err)
		}
		if e != nil {
			return nil
		}
	}
	if err := txn.Delete(tableServiceVirtualIPs, raw); err != nil {
		return fmt.Errorf("delete virtual IP: %w", err)
	}
	return setIndex(txn, tableServiceVirtualIPs, idx)
}

// countInstanceTxn adds delta to the mesh instances of service, giving it
// a virtual IP with the first and releasing it after the last.
func countInstanceTxn(txn *memdb.Txn, idx uint64, service string, delta int) error {
	if delta > 0 {
		if err := assignVirtualIPTxn(txn, idx, service); err != nil {
			return err
		}
	}
	raw, err := txn.First(tableServiceVirtualIPs, "id", service)
	if err != nil || raw == nil {
		return err
	}
	row := *raw.(*ServiceVirtualIP)
	row.Instances = max(0, row.Instances+delta)
	row.ModifyIndex = idx
	if err := txn.Insert(tableServiceVirtualIPs, &row); err != nil {
		return fmt.Errorf("update virtual IP: %w", err)
	}
	if err := setIndex(txn, tableServiceVirtualIPs, idx); err != nil {
		return err
	}
	if row.Instances == 0 {
		return freeVirtualIPTxn(txn, idx, service)
	}
	return nil
}

// meshServiceName is the service an instance puts in the mesh: the
// destination of a connect proxy, a connect-native service itself.
func meshServiceName(svc *Service) (string, bool) {
	name := svc.ConnectTarget()
	return name, name != ""
}

// serviceVirtualIPHookTxn keeps virtual IPs in step with a registration
// (svc set) or a deregistration (old set) of a service instance.
func serviceVirtualIPHookTxn(txn *memdb.Txn, idx uint64, old, svc *Service) error {
	oldName, wasMesh := meshServiceName(old)
	newName, isMesh := meshServiceName(svc)
	if wasMesh && isMesh && strings.EqualFold(oldName, newName) {
		return nil
	}
	if isMesh {
		if err := countInstanceTxn(txn, idx, newName, 1); err != nil {
			return err
		}
	}
	if wasMesh {
		return countInstanceTxn(txn, idx, oldName, -1)
	}
	return nil
}

// configEntryVirtualIPHookTxn gives the service of a discovery chain entry
// a virtual IP, and releases it with the entry.
func configEntryVirtualIPHookTxn(txn *memdb.Txn, idx uint64, kind, name string, deleted bool) error {
	switch kind {
	case KindServiceResolver, KindServiceRouter, KindServiceSplitter:
	default:
		return nil
	}
	if deleted {
		return freeVirtualIPTxn(txn, idx, name)
	}
	return assignVirtualIPTxn(txn, idx, name)
}

// AssignManualVirtualIPs applies a VirtualIPRequest at idx.
func (s *Store) AssignManualVirtualIPs(idx uint64, req *VirtualIPRequest) VirtualIPResult {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableServiceVirtualIPs, "id", req.Service)
	if err != nil {
		return VirtualIPResult{Err: fmt.Errorf("virtual IP lookup: %w", err)}
	}
	if raw == nil {
		return VirtualIPResult{}
	}
	want := map[string]bool{}
	for _, ip := range req.ManualVIPs {
		want[ip] = true
	}
	var from []string
	for _, ip := range slices.Sorted(maps.Keys(want)) {
		other, err := txn.First(tableServiceVirtualIPs, "manual", ip)
		if err != nil {
			return VirtualIPResult{Err: fmt.Errorf("manual virtual IP lookup: %w", err)}
		}
		if other == nil {
			continue
		}
		o := *other.(*ServiceVirtualIP)
		if strings.EqualFold(o.Service, req.Service) {
			continue
		}
		var keep []string
		for _, m := range o.ManualIPs {
			if !want[m] {
				keep = append(keep, m)
			}
		}
		o.ManualIPs, o.ModifyIndex = keep, idx
		if err := txn.Insert(tableServiceVirtualIPs, &o); err != nil {
			return VirtualIPResult{Err: fmt.Errorf("update virtual IP: %w", err)}
		}
		if !slices.Contains(from, o.Service) {
			from = append(from, o.Service)
		}
	}
	row := *raw.(*ServiceVirtualIP)
	row.ManualIPs, row.ModifyIndex = append([]string(nil), req.ManualVIPs...), idx
	if err := txn.Insert(tableServiceVirtualIPs, &row); err != nil {
		return VirtualIPResult{Err: fmt.Errorf("update virtual IP: %w", err)}
	}
	if err := setIndex(txn, tableServiceVirtualIPs, idx); err != nil {
		return VirtualIPResult{Err: err}
	}
	txn.Commit()
	sort.Strings(from)
	return VirtualIPResult{Found: true, UnassignedFrom: from}
}

// ServiceVirtualIPOf returns the virtual IPs of a service, nil when it
// has none.
func (s *Store) ServiceVirtualIPOf(ws memdb.WatchSet, service string) (uint64, *ServiceVirtualIP, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableServiceVirtualIPs)
	ch, raw, err := txn.FirstWatch(tableServiceVirtualIPs, "id", service)
	if err != nil {
		return 0, nil, fmt.Errorf("virtual IP lookup: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return idx, nil, nil
	}
	v := *raw.(*ServiceVirtualIP)
	v.ManualIPs = append([]string(nil), v.ManualIPs...)
	return idx, &v, nil
}

// ServiceVirtualIPs returns the virtual IPs of every service in the mesh,
// by service name. The rows are the store's: callers must not modify them.
func (s *Store) ServiceVirtualIPs(ws memdb.WatchSet) (uint64, []*ServiceVirtualIP, error) {
	txn := s.mem().Txn(false)
	idx := watchIndex(txn, ws, tableServiceVirtualIPs)
	it, err := txn.Get(tableServiceVirtualIPs, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("virtual IPs: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*ServiceVirtualIP
	for r := it.Next(); r != nil; r = it.Next() {
		out = append(out, r.(*ServiceVirtualIP))
	}
	return idx, out, nil
}
