package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tribune-mesh/tribune/catalog"
)

// MaxSnapshotSize bounds a snapshot archive, compressed or not, in both
// directions.
const MaxSnapshotSize = 512 << 20

// SnapshotHeader opens every snapshot archive.
type SnapshotHeader struct {
	Version    int
	Index      uint64
	Term       uint64
	Datacenter string
	Node       string
	Time       time.Time
}

// snapshotVersion is the archive format version.
const snapshotVersion = 1

// MaxSnapshotIndex bounds the Raft index and term a snapshot header may
// carry. Restoring moves Raft's index to the header's Index + 1, so an index
// near 2^64 would wrap it (issue 10 High #2); 2^62 is out of reach of any
// real log (146,000 years at a million writes a second), yet a backup from
// a cluster with a far longer log than this one's restores fine.
const MaxSnapshotIndex = 1 << 62

// restoreTimeout bounds how long a restore waits for Raft to install the
// snapshot and commit after it.
const restoreTimeout = time.Minute

// checkHeader refuses a header whose fields are out of bounds or disagree
// with the state it carries (stateIndex is the highest index in it).
func checkHeader(hdr *SnapshotHeader, stateIndex uint64) error {
	switch {
	case hdr.Version != snapshotVersion:
		return fmt.Errorf("%w: unsupported version %d", catalog.ErrBadSnapshot, hdr.Version)
	case hdr.Index == 0 || hdr.Index > MaxSnapshotIndex:
		return fmt.Errorf("%w: header index %d out of range [1, %d]", catalog.ErrBadSnapshot, hdr.Index, uint64(MaxSnapshotIndex))
	case hdr.Term > MaxSnapshotIndex:
		return fmt.Errorf("%w: header term %d out of range [0, %d]", catalog.ErrBadSnapshot, hdr.Term, uint64(MaxSnapshotIndex))
	case stateIndex > hdr.Index:
		return fmt.Errorf("%w: header index %d is below the index %d of the state it carries", catalog.ErrBadSnapshot, hdr.Index, stateIndex)
	}
	return nil
}

// SaveSnapshot returns a gzip archive of the current state: a JSON header
// line, then the state store's snapshot records.
func (s *Server) SaveSnapshot(ctx context.Context) ([]byte, error) {
	if !s.IsLeader() {
		leader := s.Leader()
		if leader == "" {
			return nil, ErrNoLeader
		}
		var resp SnapshotWire
		if err := s.pool.call(ctx, leader, "SnapshotSave", &SnapshotWire{}, &resp); err != nil {
			return nil, err
		}
		return resp.Data, fromWire(resp.Error)
	}
	// A barrier makes the store hold every committed write.
	wctx, cancel := context.WithTimeout(ctx, s.config.HoldTimeout)
	defer cancel()
	if err := s.waitCaughtUp(wctx, s.raft.LastIndex()); err != nil {
		return nil, fmt.Errorf("snapshot: wait for the store to catch up: %w", err)
	}
	var state bytes.Buffer
	if err := s.store.Dump(&state); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	// Read after the dump: Raft counts an entry applied before the FSM
	// has, so the header's index is at least every index in the state.
	hdr := SnapshotHeader{Version: snapshotVersion, Index: s.raft.AppliedIndex(), Datacenter: s.config.Datacenter,
		Node: s.config.NodeName, Time: time.Now().UTC()}
	if stats := s.raft.Stats(); stats != nil {
		fmt.Sscan(stats["last_log_term"], &hdr.Term)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(&hdr); err != nil {
		return nil, fmt.Errorf("snapshot header: %w", err)
	}
	if _, err := state.WriteTo(zw); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if buf.Len() > MaxSnapshotSize {
		return nil, fmt.Errorf("snapshot is larger than %d bytes", MaxSnapshotSize)
	}
	return buf.Bytes(), nil
}

// InspectSnapshot validates an archive and returns its header and the
// decompressed state records. Every error wraps catalog.ErrBadSnapshot.
func InspectSnapshot(archive []byte) (*SnapshotHeader, []byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not a gzip archive: %v", catalog.ErrBadSnapshot, err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, MaxSnapshotSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", catalog.ErrBadSnapshot, err)
	}
	if len(data) > MaxSnapshotSize {
		return nil, nil, fmt.Errorf("%w: larger than %d bytes", catalog.ErrBadSnapshot, MaxSnapshotSize)
	}
	br := bufio.NewReader(bytes.NewReader(data))
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, nil, fmt.Errorf("%w: missing header", catalog.ErrBadSnapshot)
	}
	var hdr SnapshotHeader
	if err := json.Unmarshal(line, &hdr); err != nil {
		return nil, nil, fmt.Errorf("%w: bad header", catalog.ErrBadSnapshot)
	}
	state := data[len(line):]
	// Decode the whole state into a scratch store so that a bad archive
	// is refused before anything is touched.
	scratch := catalog.NewStore(nil)
	if err := scratch.Restore(bytes.NewReader(state)); err != nil {
		return nil, nil, err
	}
	if err := checkHeader(&hdr, scratch.LastIndex()); err != nil {
		return nil, nil, err
	}
	return &hdr, state, nil
}

// RestoreSnapshot replaces the state of every server with the archive's.
// The archive is validated first; a bad one changes nothing.
func (s *Server) RestoreSnapshot(ctx context.Context, archive []byte) error {
	hdr, state, err := InspectSnapshot(archive)
	if err != nil {
		return err
	}
	if !s.IsLeader() {
		leader := s.Leader()
		if leader == "" {
			return ErrNoLeader
		}
		var resp SnapshotWire
		if err := s.pool.call(ctx, leader, "SnapshotRestore", &SnapshotWire{Data: archive}, &resp); err != nil {
			return err
		}
		return fromWire(resp.Error)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: hdr.Index, Term: hdr.Term, Size: int64(len(state))}
	if meta.Term == 0 {
		meta.Term = 1
	}
	return s.raftRestore(ctx, meta, bytes.NewReader(state))
}

// raftRestore hands a validated snapshot to Raft. raft.Restore cannot be
// cancelled and waits without a bound for the entry that follows the
// restore to commit, so it runs on a goroutine of the server (it ends when
// Raft does at the latest) while the caller waits for it no longer than its
// context, the hold timeout to start, and restoreTimeout in all.
func (s *Server) raftRestore(ctx context.Context, meta *raft.SnapshotMeta, state io.Reader) error {
	select {
	case <-s.shutdownCh:
		return ErrShutdown
	default:
	}
	done := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		done <- s.raft.Restore(meta, state, s.config.HoldTimeout)
	}()
	t := time.NewTimer(restoreTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restore snapshot: outcome unknown: %w", ctx.Err())
	case <-t.C:
		return fmt.Errorf("restore snapshot: not done after %v, outcome unknown", restoreTimeout)
	case <-s.shutdownCh:
		return ErrShutdown
	}
}

// SnapshotWire carries a snapshot archive over the RPC.
type SnapshotWire struct {
	Data  []byte
	Error *WireError `json:",omitempty"`
}

func (s *Server) rpcSnapshotSave(ctx context.Context, _ *SnapshotWire) (*SnapshotWire, error) {
	data, err := s.SaveSnapshot(ctx)
	return &SnapshotWire{Data: data, Error: toWire(err)}, nil
}

func (s *Server) rpcSnapshotRestore(ctx context.Context, in *SnapshotWire) (*SnapshotWire, error) {
	return &SnapshotWire{Error: toWire(s.RestoreSnapshot(ctx, in.Data))}, nil
}

// SaveSnapshot asks a server for a snapshot archive.
func (c *Client) SaveSnapshot(ctx context.Context) ([]byte, error) {
	var resp SnapshotWire
	if err := c.invoke(ctx, "SnapshotSave", &SnapshotWire{}, &resp, func() error { return fromWire(resp.Error) }); err != nil {
		return nil, err
	}
	return resp.Data, nil
}

// RestoreSnapshot sends an archive to the servers to restore.
func (c *Client) RestoreSnapshot(ctx context.Context, archive []byte) error {
	if _, _, err := InspectSnapshot(archive); err != nil {
		return err
	}
	var resp SnapshotWire
	return c.invoke(ctx, "SnapshotRestore", &SnapshotWire{Data: archive}, &resp, func() error { return fromWire(resp.Error) })
}
