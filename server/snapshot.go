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
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	hdr := SnapshotHeader{Version: snapshotVersion, Index: s.raft.AppliedIndex(), Datacenter: s.config.Datacenter,
		Node: s.config.NodeName, Time: time.Now().UTC()}
	if stats := s.raft.Stats(); stats != nil {
		fmt.Sscan(stats["last_log_term"], &hdr.Term)
	}
	if err := json.NewEncoder(zw).Encode(&hdr); err != nil {
		return nil, fmt.Errorf("snapshot header: %w", err)
	}
	if err := s.store.Dump(zw); err != nil {
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
	if err := json.Unmarshal(line, &hdr); err != nil || hdr.Version != snapshotVersion {
		return nil, nil, fmt.Errorf("%w: bad header", catalog.ErrBadSnapshot)
	}
	state := data[len(line):]
	// Decode the whole state into a scratch store so that a bad archive
	// is refused before anything is touched.
	if err := catalog.NewStore(nil).Restore(bytes.NewReader(state)); err != nil {
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
	if err := s.raft.Restore(meta, bytes.NewReader(state), time.Minute); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	return nil
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
