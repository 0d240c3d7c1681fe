package dnsserver

import (
	"context"
	"errors"

	"github.com/tribune-mesh/tribune/catalog"
)

// ErrUnknownDatacenter is returned by a Source for a datacenter it cannot
// reach; the handler answers NXDOMAIN, as Consul does for a datacenter with
// no path.
var ErrUnknownDatacenter = errors.New("unknown datacenter")

// Source is where the handler reads the catalog. The agent implements it
// over its materialised views; tests over a catalog.Store.
//
// Implementations must be safe for concurrent use. They may block (reading
// through to the servers the first time a name is asked) but must return
// when ctx ends; given a ctx that is already done, they answer from what
// they hold when they can do so without waiting (the handler checks its
// cached answers that way) and return ctx's error otherwise. dc is always
// set (the handler fills in the local datacenter); for a datacenter it
// cannot reach a Source returns ErrUnknownDatacenter.
//
// Returned values are shared and must not change once returned: the
// handler never modifies them, and it keeps answers built from the
// instances ServiceHealth returned for as long as it returns the same
// ones (the same pointers). A Source whose data changes returns new
// values.
type Source interface {
	// ServiceHealth returns every instance of service with its node and
	// checks, whatever their health or tags; none (and no error) for an
	// unknown service. Service names are case-insensitive.
	ServiceHealth(ctx context.Context, dc, service string) ([]*catalog.CheckServiceNode, error)
	// Node returns the node named name (case-insensitive), nil when there
	// is none.
	Node(ctx context.Context, dc, name string) (*catalog.Node, error)
	// Nodes returns every node of dc.
	Nodes(ctx context.Context, dc string) ([]*catalog.Node, error)
}
