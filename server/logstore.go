package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
)

// The Raft log's backends on disk (raft_logstore.backend), as Consul
// names them.
const (
	// LogStoreBoltDB keeps the log and Raft's stable state in one BoltDB
	// file, raft/raft.db: a copy-on-write B-tree, two syncs per write
	// transaction (1.5 fdatasync per entry measured with one client).
	LogStoreBoltDB = "boltdb"
	// LogStoreWAL keeps them in raft/wal/: append-only segment files
	// (hashicorp/raft-wal), one fsync per append; truncation after a
	// snapshot deletes whole segments, so the directory's size follows
	// the trailing logs, not the history.
	LogStoreWAL = "wal"
)

// DefaultLogStore is the backend of a server whose data directory holds
// no Raft log yet and whose configuration names none. raft-wal won the
// A/B of the cluster writes on this kind of machine (BenchmarkClusterLogStore:
// clients=1 1.4-1.8x in each of 4 paired runs, one fsync per append
// against raft-boltdb's 1.5 fdatasync per entry, and less CPU per write
// on the followers), and its size follows the trailing logs. A data
// directory with a raft.db keeps it.
const DefaultLogStore = LogStoreWAL

// logStore is the Raft log and stable store a server opened.
type logStore struct {
	logs    raft.LogStore
	stable  raft.StableStore
	close   func() error
	backend string
}

// existingLogStore says which backend the Raft log in dir (data_dir/raft)
// was written by: "" when there is none.
func existingLogStore(dir string) (string, error) {
	switch _, err := os.Stat(filepath.Join(dir, "raft.db")); {
	case err == nil:
		return LogStoreBoltDB, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("raft log store: %w", err)
	}
	switch _, err := os.Stat(filepath.Join(dir, "wal", "wal-meta.db")); {
	case err == nil:
		return LogStoreWAL, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("raft log store: %w", err)
	}
	return "", nil
}

// openLogStore opens the Raft log in dir (data_dir/raft). An existing log
// is opened with the backend that wrote it whatever want says: a server
// never silently starts on an empty log beside its old one (it would
// rejoin as a server that lost its state). Changing the backend of a
// server means moving its data_dir/raft away; it then catches up from the
// leader. When the two differ a warning says so.
func openLogStore(dir, want string, walSegmentSize int, logger hclog.Logger) (*logStore, error) {
	backend, err := existingLogStore(dir)
	if err != nil {
		return nil, err
	}
	switch {
	case backend == "" && want == "":
		backend = DefaultLogStore
	case backend == "":
		backend = want
	case want != "" && backend != want:
		logger.Warn("raft_logstore.backend differs from the backend of the existing Raft log: keeping the existing one; to switch, stop the server and move data_dir/raft away (it then catches up from the leader)",
			"configured", want, "existing", backend, "dir", dir)
	}
	switch backend {
	case LogStoreWAL:
		if walSegmentSize <= 0 {
			walSegmentSize = wal.DefaultSegmentSize
		}
		walDir := filepath.Join(dir, "wal")
		if err := os.MkdirAll(walDir, 0o700); err != nil {
			return nil, fmt.Errorf("create raft wal dir: %w", err)
		}
		// The WAL's Close leaves its metadata database open (and locked):
		// it is ours to close, after the WAL.
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(walDir, wal.WithLogger(logger.Named("wal")), wal.WithSegmentSize(walSegmentSize), wal.WithMetaStore(meta))
		if err != nil {
			_ = meta.Close()
			return nil, fmt.Errorf("open raft wal %s: %w", walDir, err)
		}
		closeBoth := func() error { return errors.Join(w.Close(), meta.Close()) }
		return &logStore{logs: w, stable: w, close: closeBoth, backend: LogStoreWAL}, nil
	case LogStoreBoltDB:
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path: filepath.Join(dir, "raft.db"),
			BoltOptions: &bbolt.Options{
				Timeout:        time.Second,
				NoFreelistSync: true,
				FreelistType:   bbolt.FreelistMapType,
			},
		})
		if err != nil {
			return nil, fmt.Errorf("open raft.db: %w", err)
		}
		return &logStore{logs: bolt, stable: bolt, close: bolt.Close, backend: LogStoreBoltDB}, nil
	}
	return nil, fmt.Errorf("raft_logstore.backend: must be %s or %s, got %q", LogStoreBoltDB, LogStoreWAL, backend)
}

// LogStoreBackend returns the backend of the Raft log on disk
// (LogStoreBoltDB or LogStoreWAL), "" for a server in memory.
func (s *Server) LogStoreBackend() string { return s.logStore }
