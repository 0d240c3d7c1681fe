package agent_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent"
)

// snapClient bounds every request: a restore that hangs fails the test
// instead of hanging it.
var snapClient = &http.Client{Timeout: 20 * time.Second}

func snapDo(t *testing.T, a *agent.Agent, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := snapClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// rewriteHeader returns archive with its header changed by edit.
func rewriteHeader(t *testing.T, archive []byte, edit func(map[string]any)) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	hdr := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&hdr); err != nil {
		t.Fatal(err)
	}
	edit(hdr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if err := json.NewEncoder(zw).Encode(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(zw, br); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestSnapshotRestoreRefusesWrappingIndex is issue 10 High #2: a snapshot
// whose header Index is near 2^64 wrapped Raft's index, the PUT never
// returned and every later write hung. Every out-of-range header field is
// refused with 400 and the agent keeps serving writes.
func TestSnapshotRestoreRefusesWrappingIndex(t *testing.T) {
	a, c := startAPI(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "before", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	code, archive := snapDo(t, a, http.MethodGet, "/v1/snapshot", nil)
	if code != http.StatusOK {
		t.Fatalf("save: %d %s", code, archive)
	}

	bad := []struct {
		name string
		edit func(map[string]any)
	}{
		{"index 2^64-1", func(h map[string]any) { h["Index"] = uint64(math.MaxUint64) }},
		{"index 2^64-2", func(h map[string]any) { h["Index"] = uint64(math.MaxUint64 - 1) }},
		{"index 2^63", func(h map[string]any) { h["Index"] = uint64(1) << 63 }},
		{"index 0", func(h map[string]any) { h["Index"] = 0 }},
		{"index below the state's", func(h map[string]any) { h["Index"] = 1 }},
		{"term 2^64-1", func(h map[string]any) { h["Term"] = uint64(math.MaxUint64) }},
		{"version 2", func(h map[string]any) { h["Version"] = 2 }},
	}
	for _, tc := range bad {
		name := tc.name
		code, body := snapDo(t, a, http.MethodPut, "/v1/snapshot", rewriteHeader(t, archive, tc.edit))
		if code != http.StatusBadRequest {
			t.Fatalf("%s: restore answered %d %s, want 400", name, code, body)
		}
		if code, body := snapDo(t, a, http.MethodPut, "/v1/kv/a", []byte("x")); code != http.StatusOK || string(bytes.TrimSpace(body)) != "true" {
			t.Fatalf("%s: write after the refused restore: %d %s", name, code, body)
		}
	}

	// The unchanged archive restores, and writes go on.
	if _, err := c.KV().Put(&api.KVPair{Key: "later", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
	if code, body := snapDo(t, a, http.MethodPut, "/v1/snapshot", archive); code != http.StatusOK {
		t.Fatalf("valid restore: %d %s", code, body)
	}
	if p, _, err := c.KV().Get("later", nil); err != nil || p != nil {
		t.Fatalf("key written after the snapshot survived the restore: %v %v", p, err)
	}
	if p, _, err := c.KV().Get("before", nil); err != nil || p == nil {
		t.Fatalf("key of the snapshot missing after the restore: %v", err)
	}
	if code, body := snapDo(t, a, http.MethodPut, "/v1/kv/after", []byte("x")); code != http.StatusOK {
		t.Fatalf("write after the restore: %d %s", code, body)
	}
}
