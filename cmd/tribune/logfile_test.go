package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tribune-mesh/tribune/agent/config"
)

// log_file, log_rotate_bytes, log_rotate_max_files and log_json as the
// agent command reads them: every line goes to stdout and to the file, the
// file rotates by size, old files are pruned, and JSON lines stay JSON.
func TestAgentLogFile(t *testing.T) {
	dir := t.TempDir()
	cfg, _, err := config.Load(config.LoadOptions{Args: []string{"-dev",
		"-log-file", dir + "/", "-log-rotate-bytes", "400", "-log-rotate-max-files", "2", "-log-json"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogFile != dir+"/" || cfg.LogRotateBytes != 400 || cfg.LogRotateMaxFiles != 2 || cfg.LogRotateDuration.Hours() != 24 {
		t.Fatalf("config: file %q bytes %d max %d duration %s", cfg.LogFile, cfg.LogRotateBytes, cfg.LogRotateMaxFiles, cfg.LogRotateDuration)
	}
	var stdout bytes.Buffer
	logger, file, err := newAgentLogger(cfg, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		logger.Info("a line long enough to make the file rotate", "n", i)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(stdout.String(), "\n"); n != 20 {
		t.Errorf("stdout has %d lines, want 20", n)
	}
	rotated, err := file.Rotated()
	if err != nil {
		t.Fatal(err)
	}
	if len(rotated) != 2 {
		t.Errorf("rotated files %v, want 2 kept", rotated)
	}
	if file.Path() != filepath.Join(dir, "consul.log") {
		t.Errorf("active file %s", file.Path())
	}
	for _, p := range append(rotated, file.Path()) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 400 {
			t.Errorf("%s has %d bytes, over log_rotate_bytes", p, len(b))
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil || v["@message"] == nil {
				t.Errorf("%s: not a JSON log line: %q (%v)", p, line, err)
			}
		}
	}

	for _, args := range [][]string{
		{"-dev", "-log-rotate-bytes", "-1"},
		{"-dev", "-log-rotate-max-files", "-2"},
		{"-dev", "-log-rotate-duration", "-1s"},
	} {
		if _, _, err := config.Load(config.LoadOptions{Args: args}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
