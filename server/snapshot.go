package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
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

// Errors of a restore that callers branch on.
var (
	// ErrSnapshotTooLarge is returned when an archive decompresses to more
	// than the restore limit (HTTP 413).
	ErrSnapshotTooLarge = errors.New("snapshot too large")
	// ErrRestoreInProgress is returned while another restore runs on the
	// server (HTTP 429).
	ErrRestoreInProgress = errors.New("a snapshot restore is already in progress")
)

// Restore limits. An archive may decompress to at most
// max(RestoreMinLimit, RestoreLimitFactor x the size of the current state);
// the defaults are in DefaultConfig. One record (one row) of an uploaded
// archive is at most maxUploadRecord bytes; rows are far smaller (a KV
// value is at most kv_max_value_size), and the bound keeps one record that
// never ends from being buffered whole.
const (
	defaultRestoreMinLimit    = 256 << 20
	defaultRestoreLimitFactor = 4
	maxUploadRecord           = 64 << 20
	maxHeaderLine             = 64 << 10
)

// InspectSnapshot validates an archive and returns its header and the
// decompressed state records. Every error wraps catalog.ErrBadSnapshot or is
// ErrSnapshotTooLarge (more than MaxSnapshotSize decompressed).
func InspectSnapshot(archive []byte) (*SnapshotHeader, []byte, error) {
	hdr, _, err := validateArchive(archive, MaxSnapshotSize)
	if err != nil {
		return nil, nil, err
	}
	state, err := openState(archive)
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(state)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", catalog.ErrBadSnapshot, err)
	}
	return hdr, data, nil
}

// validateArchive decodes an archive as a stream, without holding its
// decompressed form: the header, then the whole state into a scratch store
// that is dropped at the end, so that a bad archive is refused before
// anything is touched. It returns the header and the size of the state
// records. More than limit decompressed bytes is ErrSnapshotTooLarge.
func validateArchive(archive []byte, limit int64) (*SnapshotHeader, int64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: not a gzip archive: %v", catalog.ErrBadSnapshot, err)
	}
	capped := &cappedReader{r: zr, left: limit}
	br := bufio.NewReader(capped)
	hdr, err := readHeader(br)
	if err != nil {
		return nil, 0, err
	}
	state := &recordReader{r: br, max: maxUploadRecord}
	scratch := catalog.NewStore(nil)
	if err := scratch.Restore(state); err != nil {
		switch {
		case capped.over:
			return nil, 0, fmt.Errorf("%w: more than %d bytes decompressed", ErrSnapshotTooLarge, limit)
		case state.over:
			return nil, 0, fmt.Errorf("%w: a record is longer than %d bytes", catalog.ErrBadSnapshot, maxUploadRecord)
		}
		return nil, 0, err
	}
	if err := checkHeader(hdr, scratch.LastIndex()); err != nil {
		return nil, 0, err
	}
	return hdr, state.n, nil
}

// readHeader reads an archive's header line.
func readHeader(br *bufio.Reader) (*SnapshotHeader, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxHeaderLine {
			return nil, fmt.Errorf("%w: header longer than %d bytes", catalog.ErrBadSnapshot, maxHeaderLine)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: missing header", catalog.ErrBadSnapshot)
		}
	}
	var hdr SnapshotHeader
	if err := json.Unmarshal(line, &hdr); err != nil {
		return nil, fmt.Errorf("%w: bad header", catalog.ErrBadSnapshot)
	}
	return &hdr, nil
}

// openState returns a stream of an archive's state records (after the
// header). Call it on a validated archive only.
func openState(archive []byte) (io.Reader, error) {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, fmt.Errorf("%w: not a gzip archive: %v", catalog.ErrBadSnapshot, err)
	}
	br := bufio.NewReader(zr)
	if _, err := readHeader(br); err != nil {
		return nil, err
	}
	return br, nil
}

// cappedReader fails once more than left bytes were read.
type cappedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One more byte tells a stream of exactly the limit from a
		// longer one.
		var b [1]byte
		if n, _ := c.r.Read(b[:]); n > 0 {
			c.over = true
			return 0, ErrSnapshotTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// recordReader counts what it reads and fails on a line (a record) longer
// than max.
type recordReader struct {
	r    io.Reader
	max  int64
	line int64
	n    int64
	over bool
}

func (l *recordReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if i := bytes.LastIndexByte(p[:n], '\n'); i >= 0 {
		l.line = int64(n - 1 - i)
	} else {
		l.line += int64(n)
	}
	if l.line > l.max {
		l.over = true
		return 0, fmt.Errorf("%w: record too long", catalog.ErrBadSnapshot)
	}
	l.n += int64(n)
	return n, err
}

// restoreLimit is how many decompressed bytes an archive restored on this
// server may hold: a multiple of the current state's size, with a floor.
func (s *Server) restoreLimit() int64 {
	var cw countingWriter
	if err := s.store.Dump(&cw); err != nil {
		return s.config.RestoreMinLimit
	}
	return max(s.config.RestoreMinLimit, s.config.RestoreLimitFactor*cw.n)
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// RestoreSnapshot replaces the state of every server with the archive's.
// The archive is validated first, as a stream and within the restore limit;
// a bad one changes nothing. One restore runs at a time on a leader; another
// gets ErrRestoreInProgress.
func (s *Server) RestoreSnapshot(ctx context.Context, archive []byte) error {
	if !s.IsLeader() {
		// Check before shipping the archive (the follower's state, and
		// so its limit, is the leader's or close); the leader checks
		// again.
		if _, _, err := validateArchive(archive, s.restoreLimit()); err != nil {
			return err
		}
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
	if !s.restoreMu.TryLock() {
		return ErrRestoreInProgress
	}
	defer s.restoreMu.Unlock()
	hdr, size, err := validateArchive(archive, s.restoreLimit())
	if err != nil {
		// Give the scratch store's memory back now, not whenever the
		// runtime gets to it: a refused bomb must not leave RSS behind.
		debug.FreeOSMemory()
		return err
	}
	state, err := openState(archive)
	if err != nil {
		return err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: hdr.Index, Term: hdr.Term, Size: size}
	if meta.Term == 0 {
		meta.Term = 1
	}
	return s.raftRestore(ctx, meta, state)
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
	if err := s.authorizeWith(ctx, needACLWrite); err != nil {
		return &SnapshotWire{Error: toWire(err)}, nil
	}
	data, err := s.SaveSnapshot(ctx)
	return &SnapshotWire{Data: data, Error: toWire(err)}, nil
}

func (s *Server) rpcSnapshotRestore(ctx context.Context, in *SnapshotWire) (*SnapshotWire, error) {
	if err := s.authorizeWith(ctx, needACLWrite); err != nil {
		return &SnapshotWire{Error: toWire(err)}, nil
	}
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
//
// The archive is not decoded here: a client agent has no state to size the
// restore limit by, and the servers validate it as a stream.
func (c *Client) RestoreSnapshot(ctx context.Context, archive []byte) error {
	var resp SnapshotWire
	return c.invoke(ctx, "SnapshotRestore", &SnapshotWire{Data: archive}, &resp, func() error { return fromWire(resp.Error) })
}
