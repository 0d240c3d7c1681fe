package catalog

import "github.com/hashicorp/go-memdb"

// servicesMemo is the answer of Store.Services at one index of the services
// table of one memdb. Listing the services walks every instance (100,000
// rows for 10,000 nodes of 10 services): without the memo each GET
// /v1/catalog/services paid that walk, and so did each of the blocking
// queries on it that one change wakes (the agents' DNS views among them),
// while the answer changes only when the services table does. Every
// write to the table sets its index in the same transaction, and a restore
// replaces the memdb, so the pair (memdb, index) tells when the memo is
// still the answer.
type servicesMemo struct {
	db  *memdb.MemDB
	idx uint64
	out map[string][]string
}

// at returns the memoized answer if it was computed from db at idx, else
// nil. A nil memo has none.
func (m *servicesMemo) at(db *memdb.MemDB, idx uint64) map[string][]string {
	if m == nil || m.db != db || m.idx != idx {
		return nil
	}
	return m.out
}
