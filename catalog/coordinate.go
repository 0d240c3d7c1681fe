package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/serf/coordinate"
)

// tableCoords holds each node's network coordinate.
const tableCoords = "coordinates"

// CoordinateEntry is a node's network coordinate (/v1/coordinate/nodes).
type CoordinateEntry struct {
	Node    string
	Segment string
	Coord   *coordinate.Coordinate
}

// CoordinateUpdates applies a batch of coordinate updates at idx. Updates
// for unknown nodes or invalid coordinates are skipped, as they may race a
// deregistration.
func (s *Store) CoordinateUpdates(idx uint64, updates []*CoordinateEntry) error {
	txn := s.mem().Txn(true)
	defer txn.Abort()
	changed := false
	for _, u := range updates {
		if u == nil || u.Coord == nil || !u.Coord.IsValid() || !nodeExists(txn, u.Node) {
			continue
		}
		c := *u
		if err := txn.Insert(tableCoords, &c); err != nil {
			return fmt.Errorf("insert coordinate: %w", err)
		}
		changed = true
	}
	if changed {
		if err := setIndex(txn, tableCoords, idx); err != nil {
			return err
		}
	}
	txn.Commit()
	return nil
}

// Coordinates returns every node's coordinate.
func (s *Store) Coordinates(ws memdb.WatchSet) (uint64, []*CoordinateEntry, error) {
	txn := s.mem().Txn(false)
	it, err := txn.Get(tableCoords, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("coordinates: %w", err)
	}
	ws.Add(it.WatchCh())
	out := []*CoordinateEntry{}
	for r := it.Next(); r != nil; r = it.Next() {
		out = append(out, r.(*CoordinateEntry))
	}
	return maxIndex(txn, tableCoords), out, nil
}

func deleteCoordinateTxn(txn *memdb.Txn, idx uint64, node string) error {
	n, err := txn.DeleteAll(tableCoords, "id", node)
	if err != nil {
		return fmt.Errorf("delete coordinate: %w", err)
	}
	if n > 0 {
		return setIndex(txn, tableCoords, idx)
	}
	return nil
}
