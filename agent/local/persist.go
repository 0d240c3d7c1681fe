package local

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tribune-mesh/tribune/agent/config"
)

// The services and checks registered through the API are kept in the data
// directory, one file each (named by a hash of the ID, as Consul's
// data-dir/services and data-dir/checks are), with the token they were
// registered with, so that a restarted agent still owns them and syncs them
// with that token. Files are 0600 in 0700 directories: they hold secrets.
const (
	servicesDir = "services"
	checksDir   = "checks"
	// maxPersistedFile bounds one file read back (a definition came
	// through a bounded request body); maxPersistedFiles bounds how many
	// of each kind are loaded.
	maxPersistedFile  = 4 << 20
	maxPersistedFiles = 100_000
)

// persisted is one file: the JSON object the definition was registered
// with, decoded again at load by the same decoder as the API's, and its
// token.
type persisted struct {
	Definition map[string]any `json:"Definition"`
	Token      string         `json:"Token,omitempty"`
}

// RegisterService registers a service definition received through the API
// (see AddServiceDefinitionReplacing), synced with def.Token, and keeps it
// in the data directory with raw, the JSON object it was decoded from.
func (l *State) RegisterService(raw map[string]any, def *config.ServiceDefinition, replaceChecks bool) error {
	b, err := json.Marshal(persisted{Definition: raw, Token: def.Token})
	if err != nil {
		return fmt.Errorf("encode service %q for the data dir: %w", def.Name, err)
	}
	if err := l.AddServiceDefinitionReplacing(def, false, replaceChecks); err != nil {
		return err
	}
	return l.persist(servicesDir, def.ServiceID(), b)
}

// RegisterCheck registers a check definition received through the API,
// synced with def.Token, and keeps it in the data directory with raw.
func (l *State) RegisterCheck(raw map[string]any, def *config.CheckDefinition) error {
	b, err := json.Marshal(persisted{Definition: raw, Token: def.Token})
	if err != nil {
		return fmt.Errorf("encode check %q for the data dir: %w", def.Name, err)
	}
	c, err := l.CheckFromDefinition(def, "", false)
	if err != nil {
		return err
	}
	if err := l.AddCheck(c); err != nil {
		return err
	}
	return l.persist(checksDir, c.Health.CheckID, b)
}

func persistedName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// persist writes one file atomically (a temporary file renamed).
func (l *State) persist(kind, id string, b []byte) error {
	if l.dataDir == "" {
		return nil
	}
	dir := filepath.Join(l.dataDir, kind)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("persist %s %q: %w", kind, id, err)
	}
	path := filepath.Join(dir, persistedName(id))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("persist %s %q: %w", kind, id, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("persist %s %q: %w", kind, id, err)
	}
	return nil
}

// unpersist removes the file of a service or check, if there is one.
func (l *State) unpersist(kind, id string) {
	if l.dataDir == "" {
		return
	}
	err := os.Remove(filepath.Join(l.dataDir, kind, persistedName(id)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		l.logger.Warn("cannot remove a deregistered definition from the data dir", "kind", kind, "id", id, "error", err)
	}
}

// LoadPersisted registers again the services and checks an earlier run
// registered through the API, with their tokens. Call it after the
// definitions of the configuration files: an ID registered from those is
// left to them. A file that cannot be read back is logged and skipped; an
// error is returned only when the directory cannot be read.
func (l *State) LoadPersisted() error {
	if l.dataDir == "" {
		return nil
	}
	err := l.loadPersisted(servicesDir, func(p *persisted) error {
		def, err := config.DecodeServiceDefinition(p.Definition)
		if err != nil {
			return err
		}
		if l.Service(def.ServiceID()) != nil {
			return nil
		}
		def.Token = p.Token
		return l.AddServiceDefinition(def, false)
	})
	if err != nil {
		return err
	}
	return l.loadPersisted(checksDir, func(p *persisted) error {
		def, err := config.DecodeCheckDefinition(p.Definition)
		if err != nil {
			return err
		}
		id := def.ID
		if id == "" {
			id = def.Name
		}
		l.mu.Lock()
		_, exists := l.checks[id]
		l.mu.Unlock()
		if exists {
			return nil
		}
		def.Token = p.Token
		c, err := l.CheckFromDefinition(def, "", false)
		if err != nil {
			return err
		}
		return l.AddCheck(c)
	})
}

func (l *State) loadPersisted(kind string, add func(*persisted) error) error {
	dir := filepath.Join(l.dataDir, kind)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read persisted %s: %w", kind, err)
	}
	if len(entries) > maxPersistedFiles {
		l.logger.Warn("too many persisted definitions; loading the first ones", "kind", kind, "count", len(entries), "limit", maxPersistedFiles)
		entries = entries[:maxPersistedFiles]
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		p, err := readPersisted(path)
		if err == nil {
			err = add(p)
		}
		if err != nil {
			l.logger.Warn("skipping a persisted definition that cannot be registered again", "kind", kind, "file", path, "error", err)
		}
	}
	return nil
}

func readPersisted(path string) (*persisted, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPersistedFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPersistedFile {
		return nil, fmt.Errorf("larger than %d bytes", maxPersistedFile)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	if p.Definition == nil {
		return nil, errors.New("no definition")
	}
	return &p, nil
}
