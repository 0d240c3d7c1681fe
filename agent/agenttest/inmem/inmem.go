// Package inmem is an in-memory catalog backend for unit tests: the real
// catalog state store and FSM behind the Apply and Read calls that the agent
// makes of its servers, with no Raft, no network and no goroutines of its own.
//
// It is a second real implementation of the agent's backend (the first is
// the server, or the RPC client to the servers), not a mock: writes go
// through catalog.FSM and reads through catalog.Store.Execute, blocking
// queries included.
package inmem

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/clock"
	"github.com/tribune-mesh/tribune/server"
)

// maxQueryTime bounds a blocking read that names no wait.
const maxQueryTime = 5 * time.Minute

// Backend is one in-memory catalog. Safe for concurrent use.
type Backend struct {
	store *catalog.Store

	// mu serialises writes, as Raft's log order does.
	mu      sync.Mutex
	fsm     *catalog.FSM
	index   uint64
	applies int
}

// New returns an empty catalog whose lock delays read the time from clk.
func New(clk clock.Clock) *Backend {
	store := catalog.NewStore(clk)
	return &Backend{store: store, fsm: catalog.NewFSM(store, hclog.NewNullLogger())}
}

// Store returns the state store, for tests that inspect it directly.
func (b *Backend) Store() *catalog.Store { return b.store }

// Apply encodes a command and applies it to the FSM at the next index, then
// returns the FSM's response, as a server does after the commit.
func (b *Backend) Apply(_ context.Context, t catalog.CommandType, body any) (any, error) {
	buf, err := catalog.Encode(t, body)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index++
	b.applies++
	return b.fsm.Apply(&raft.Log{Index: b.index, Type: raft.LogCommand, Data: buf}), nil
}

// Applies returns how many writes (Apply, SessionRenew, RestoreSnapshot,
// a peer removal) were made so far; tests use it to show
// that a refused request wrote nothing.
func (b *Backend) Applies() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applies
}

// Read runs a read against the store. With MinQueryIndex set it blocks until
// the result's index exceeds it, MaxQueryTime passes or ctx ends, and then
// answers with what is there. Every answer claims a known leader and no lag:
// the store is the leader's.
func (b *Backend) Read(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	opts := req.Options
	if opts.MinQueryIndex > 0 {
		wait := opts.MaxQueryTime
		if wait <= 0 || wait > maxQueryTime {
			wait = maxQueryTime
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	for {
		ws := memdb.NewWatchSet()
		ws.Add(b.store.AbandonCh())
		idx, resp, err := b.store.Execute(ws, req)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", req.Op, err)
		}
		if opts.MinQueryIndex == 0 || idx > opts.MinQueryIndex || ws.WatchCtx(ctx) != nil {
			resp.Meta = catalog.QueryMeta{Index: idx, KnownLeader: true}
			return resp, nil
		}
	}
}

// SessionRenew returns the session with this ID, nil when there is none. The
// in-memory catalog runs no TTL timers, so there is nothing to restart; the
// call counts as a write.
func (b *Backend) SessionRenew(ctx context.Context, id string) (*catalog.Session, error) {
	b.mu.Lock()
	b.applies++
	b.mu.Unlock()
	resp, err := b.Read(ctx, &catalog.ReadRequest{Op: catalog.ReadSession, Name: id})
	if err != nil {
		return nil, err
	}
	if len(resp.Sessions) == 0 {
		return nil, nil
	}
	return resp.Sessions[0], nil
}

// SaveSnapshot returns the store's state in the catalog's snapshot encoding
// (without the server's archive header).
func (b *Backend) SaveSnapshot(context.Context) ([]byte, error) {
	var buf bytes.Buffer
	if err := b.store.Dump(&buf); err != nil {
		return nil, fmt.Errorf("save snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

// RestoreSnapshot replaces the store's state with what SaveSnapshot
// returned; it counts as a write.
func (b *Backend) RestoreSnapshot(_ context.Context, archive []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applies++
	if err := b.store.Restore(bytes.NewReader(archive)); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	return nil
}

// ErrNoOperator is returned by Operator: there is no Raft to operate on.
var ErrNoOperator = errors.New("inmem: no Raft configuration or autopilot in an in-memory catalog")

// Operator refuses every operator call with ErrNoOperator; a call that
// changes the cluster counts as a write.
func (b *Backend) Operator(_ context.Context, req *server.OperatorRequest) (json.RawMessage, error) {
	if req.Op == server.OpRemovePeer {
		b.mu.Lock()
		b.applies++
		b.mu.Unlock()
	}
	return nil, ErrNoOperator
}

// Status answers as a single server that leads: itself as leader and only
// voter.
func (b *Backend) Status(context.Context) (string, []string, error) {
	const self = "127.0.0.1:8300"
	return self, []string{self}, nil
}
