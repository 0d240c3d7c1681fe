package fault

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// evidence is everything a run recorded, as written to history.json.
type evidence struct {
	Seed          uint64         `json:"seed"`
	Duration      string         `json:"duration"`
	Faults        []Event        `json:"faults"`
	Register      []KVOp         `json:"register"`
	Holds         []Hold         `json:"lock_holds"`
	Appends       []Append       `json:"lock_appends"`
	Registrations []Registration `json:"catalog"`
	Set           []SetAdd       `json:"set"`
	Problems      []string       `json:"problems"`
}

// keep writes the run's evidence into a new folder under cfg.OutDir:
// history.json (every operation and fault, times in ns since the run
// started), kv.html (porcupine's visualization, when the register check
// failed), problems.txt and every agent's log.
func (r *run) keep(res *RunResult) (string, error) {
	folder, err := evidenceFolder(r.cfg, "seed")
	if err != nil {
		return "", err
	}
	ev := evidence{
		Seed: r.cfg.Seed, Duration: r.cfg.Duration.String(), Faults: r.nem.Events.Items(),
		Register: r.reg.Ops.Items(), Holds: r.lock.Holds.Items(), Appends: r.lock.Appends.Items(),
		Registrations: r.catalog.Regs.Items(), Set: r.set.Adds.Items(), Problems: res.Problems,
	}
	if err := writeEvidence(folder, ev, res.Problems, r.c.All()); err != nil {
		return folder, err
	}
	return folder, r.lin.Visualize(filepath.Join(folder, "kv.html"))
}

// evidenceFolder makes a new folder for a run's evidence under cfg.OutDir
// (default: tribune-jepsen in the temp dir), named kind-<seed>-<time>.
func evidenceFolder(cfg Config, kind string) (string, error) {
	out := cfg.OutDir
	if out == "" {
		out = filepath.Join(os.TempDir(), "tribune-jepsen")
	}
	folder := filepath.Join(out, fmt.Sprintf("%s-%d-%s", kind, cfg.Seed, time.Now().Format("20060102-150405")))
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return "", fmt.Errorf("evidence folder: %w", err)
	}
	return folder, nil
}

// writeEvidence writes ev as history.json, the problems as problems.txt
// and a copy of every agent's log into folder.
func writeEvidence(folder string, ev any, problems []string, agents []*Agent) error {
	b, err := json.MarshalIndent(ev, "", " ")
	if err != nil {
		return fmt.Errorf("encode history: %w", err)
	}
	if err := os.WriteFile(filepath.Join(folder, "history.json"), b, 0o644); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	if err := os.WriteFile(filepath.Join(folder, "problems.txt"), []byte(strings.Join(problems, "\n\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write problems: %w", err)
	}
	for _, a := range agents {
		if err := copyFile(a.LogPath, filepath.Join(folder, a.Name+".log"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// keepEvidence keeps a run's evidence with keep when the run is invalid or
// cfg.Keep is set, and returns the folder ("" when not kept).
func keepEvidence(cfg Config, invalid bool, keep func() (string, error)) string {
	if !invalid && !cfg.Keep {
		return ""
	}
	folder, err := keep()
	if err != nil {
		cfg.Logf("keeping the evidence: %v", err)
	}
	return folder
}
