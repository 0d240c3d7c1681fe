package main

import (
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestKV(t *testing.T) {
	addr := startAgent(t)
	put := kvPutCommand(strings.NewReader(""))

	t.Run("put then get", func(t *testing.T) {
		r := mustExec(t, put, addr, "app/config", "hello world")
		if r.stdout != "Success! Data written to: app/config\n" {
			t.Errorf("put stdout = %q", r.stdout)
		}
		r = mustExec(t, runKVGet, addr, "app/config")
		if r.stdout != "hello world\n" {
			t.Errorf("get stdout = %q", r.stdout)
		}
		// A leading slash is dropped, as Consul's CLI does.
		r = mustExec(t, runKVGet, addr, "/app/config")
		if r.stdout != "hello world\n" {
			t.Errorf("get /key stdout = %q", r.stdout)
		}
	})

	t.Run("through the dispatcher", func(t *testing.T) {
		r := runCmd(run, "kv", "put", addr, "dispatch/k", "v")
		if r.code != 0 || r.stdout != "Success! Data written to: dispatch/k\n" {
			t.Fatalf("kv put: %v", r)
		}
		r = runCmd(run, "kv", "get", addr, "dispatch/k")
		if r.code != 0 || r.stdout != "v\n" {
			t.Fatalf("kv get: %v", r)
		}
	})

	t.Run("missing key", func(t *testing.T) {
		r := runCmd(runKVGet, addr, "no/such/key")
		if r.code != 1 || r.stdout != "" || r.stderr != "Error! No key exists at: no/such/key\n" {
			t.Errorf("got %v", r)
		}
	})

	t.Run("empty value", func(t *testing.T) {
		mustExec(t, put, addr, "empty")
		r := mustExec(t, runKVGet, addr, "empty")
		if r.stdout != "\n" {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("flags and detailed", func(t *testing.T) {
		mustExec(t, put, addr, "-flags=42", "detail/k", "v1")
		r := mustExec(t, runKVGet, addr, "-detailed", "detail/k")
		fields := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				t.Fatalf("detailed line %q: want 2 fields", line)
			}
			fields[f[0]] = f[1]
		}
		for k, want := range map[string]string{"Flags": "42", "Key": "detail/k", "LockIndex": "0", "Session": "-", "Value": "v1"} {
			if fields[k] != want {
				t.Errorf("%s = %q, want %q (output %q)", k, fields[k], want, r.stdout)
			}
		}
		for _, k := range []string{"CreateIndex", "ModifyIndex"} {
			if n, err := strconv.ParseUint(fields[k], 10, 64); err != nil || n == 0 {
				t.Errorf("%s = %q, want a positive index", k, fields[k])
			}
		}
		// Field names are aligned in one column, as Consul prints them.
		if !strings.HasPrefix(r.stdout, "CreateIndex      ") {
			t.Errorf("detailed layout: %q", r.stdout)
		}
	})

	t.Run("recurse", func(t *testing.T) {
		for k, v := range map[string]string{"rec/a": "1", "rec/b/c": "2", "rec/b/d": "3", "recx": "no"} {
			mustExec(t, put, addr, k, v)
		}
		r := mustExec(t, runKVGet, addr, "-recurse", "rec/")
		if want := "rec/a:1\nrec/b/c:2\nrec/b/d:3\n"; r.stdout != want {
			t.Errorf("stdout = %q, want %q", r.stdout, want)
		}
		// A prefix with nothing under it prints nothing and succeeds.
		r = mustExec(t, runKVGet, addr, "-recurse", "nothing/here/")
		if r.stdout != "" {
			t.Errorf("empty prefix stdout = %q", r.stdout)
		}
	})

	t.Run("keys with separator", func(t *testing.T) {
		for _, k := range []string{"ks/a", "ks/b/c", "ks/b/d", "ks/e/f/g"} {
			mustExec(t, put, addr, k, "x")
		}
		r := mustExec(t, runKVGet, addr, "-keys", "ks/")
		if want := "ks/a\nks/b/\nks/e/\n"; r.stdout != want {
			t.Errorf("-keys stdout = %q, want %q", r.stdout, want)
		}
		r = mustExec(t, runKVGet, addr, "-keys", "-separator=", "ks/")
		if want := "ks/a\nks/b/c\nks/b/d\nks/e/f/g\n"; r.stdout != want {
			t.Errorf("-separator= stdout = %q, want %q", r.stdout, want)
		}
	})

	t.Run("cas", func(t *testing.T) {
		mustExec(t, put, addr, "cas/k", "v1")
		idx := modifyIndex(t, addr, "cas/k")
		r := mustExec(t, put, addr, "-cas", "-modify-index="+strconv.FormatUint(idx, 10), "cas/k", "v2")
		if r.stdout != "Success! Data written to: cas/k\n" {
			t.Errorf("cas stdout = %q", r.stdout)
		}
		// The old index is stale now.
		r = runCmd(put, addr, "-cas", "-modify-index="+strconv.FormatUint(idx, 10), "cas/k", "v3")
		if r.code != 1 || r.stderr != "Error! Did not write to cas/k: CAS failed\n" {
			t.Errorf("stale cas: %v", r)
		}
		if got := mustExec(t, runKVGet, addr, "cas/k").stdout; got != "v2\n" {
			t.Errorf("value after failed cas = %q", got)
		}
		// -modify-index=0 creates only if the key is missing.
		r = runCmd(put, addr, "-cas", "-modify-index=0", "cas/k", "v4")
		if r.code != 1 {
			t.Errorf("cas create over existing key: %v", r)
		}
		mustExec(t, put, addr, "-cas", "-modify-index=0", "cas/new", "v")
		r = runCmd(put, addr, "-cas", "cas/k", "v5")
		if r.code != 1 || !strings.Contains(r.stderr, "-modify-index") {
			t.Errorf("cas without index: %v", r)
		}
	})

	t.Run("delete", func(t *testing.T) {
		mustExec(t, put, addr, "del/one", "1")
		r := mustExec(t, runKVDelete, addr, "del/one")
		if r.stdout != "Success! Deleted key: del/one\n" {
			t.Errorf("delete stdout = %q", r.stdout)
		}
		if r := runCmd(runKVGet, addr, "del/one"); r.code != 1 {
			t.Errorf("get after delete: %v", r)
		}
		r = runCmd(runKVDelete, addr)
		if r.code != 1 || r.stderr != "Error! Missing KEY argument\n" {
			t.Errorf("delete without key: %v", r)
		}
	})

	t.Run("delete recurse", func(t *testing.T) {
		for _, k := range []string{"tree/a", "tree/b/c", "treehouse"} {
			mustExec(t, put, addr, k, "x")
		}
		r := mustExec(t, runKVDelete, addr, "-recurse", "tree/")
		if r.stdout != "Success! Deleted keys with prefix: tree/\n" {
			t.Errorf("stdout = %q", r.stdout)
		}
		r = mustExec(t, runKVGet, addr, "-keys", "-separator=", "tree")
		if r.stdout != "treehouse\n" {
			t.Errorf("keys left = %q", r.stdout)
		}
		if r := runCmd(runKVDelete, addr, "-recurse", "-cas", "-modify-index=1", "tree/"); r.code != 1 {
			t.Errorf("-cas with -recurse: %v", r)
		}
	})

	t.Run("delete cas", func(t *testing.T) {
		mustExec(t, put, addr, "dcas/k", "v")
		idx := modifyIndex(t, addr, "dcas/k")
		r := runCmd(runKVDelete, addr, "-cas", "-modify-index="+strconv.FormatUint(idx+1000, 10), "dcas/k")
		if r.code != 1 || r.stderr != "Error! Did not delete key dcas/k: CAS failed\n" {
			t.Errorf("stale delete cas: %v", r)
		}
		r = mustExec(t, runKVDelete, addr, "-cas", "-modify-index="+strconv.FormatUint(idx, 10), "dcas/k")
		if r.stdout != "Success! Deleted key: dcas/k\n" {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("value from stdin", func(t *testing.T) {
		stdinPut := kvPutCommand(strings.NewReader("line one\nline two\n"))
		mustExec(t, stdinPut, addr, "stdin/k", "-")
		r := mustExec(t, runKVGet, addr, "stdin/k")
		if r.stdout != "line one\nline two\n\n" {
			t.Errorf("stdout = %q", r.stdout)
		}
		// "-" followed by more characters is a literal value.
		mustExec(t, stdinPut, addr, "stdin/lit", "-5")
		if got := mustExec(t, runKVGet, addr, "stdin/lit").stdout; got != "-5\n" {
			t.Errorf("literal -5 = %q", got)
		}
	})

	t.Run("value from file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "value.txt")
		if err := os.WriteFile(path, []byte("from a file"), 0o600); err != nil {
			t.Fatal(err)
		}
		mustExec(t, put, addr, "file/k", "@"+path)
		if got := mustExec(t, runKVGet, addr, "file/k").stdout; got != "from a file\n" {
			t.Errorf("stdout = %q", got)
		}
		r := runCmd(put, addr, "file/k", "@"+path+".missing")
		if r.code != 1 || !strings.HasPrefix(r.stderr, "Error! Failed to read data: ") {
			t.Errorf("missing file: %v", r)
		}
	})

	t.Run("base64", func(t *testing.T) {
		raw := []byte{0, 1, 2, 0xff}
		mustExec(t, put, addr, "-base64", "b64/k", base64.StdEncoding.EncodeToString(raw))
		r := mustExec(t, runKVGet, addr, "-base64", "b64/k")
		if r.stdout != base64.StdEncoding.EncodeToString(raw)+"\n" {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("argument errors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cmd  func([]string, io.Writer, io.Writer) int
			args []string
			want string
		}{
			{"get without key", runKVGet, nil, "Error! Missing KEY argument"},
			{"get two keys", runKVGet, []string{"a", "b"}, "Too many arguments"},
			{"put without key", put, nil, "Error! Missing KEY argument"},
			{"put three args", put, []string{"a", "b", "c"}, "Too many arguments"},
			{"acquire without session", put, []string{"-acquire", "a"}, "Missing -session"},
			{"unknown flag", runKVGet, []string{"-bogus", "a"}, "Usage: tribune kv get"},
		} {
			r := runCmd(tc.cmd, append([]string{addr}, tc.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%s: want exit 1 with %q, got %v", tc.name, tc.want, r)
			}
		}
	})

	t.Run("help", func(t *testing.T) {
		r := runCmd(put, "-h")
		if r.code != 0 || !strings.Contains(r.stderr, "HTTP API Options") || !strings.Contains(r.stderr, "-modify-index") {
			t.Errorf("-h: %v", r)
		}
	})
}

// modifyIndex reads a key's ModifyIndex through "kv get -detailed".
func modifyIndex(t *testing.T, addr, key string) uint64 {
	t.Helper()
	r := mustExec(t, runKVGet, addr, "-detailed", key)
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "ModifyIndex" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("ModifyIndex %q: %v", f[1], err)
			}
			return n
		}
	}
	t.Fatalf("no ModifyIndex in %q", r.stdout)
	return 0
}
