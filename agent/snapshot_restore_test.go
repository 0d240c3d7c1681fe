package agent_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"runtime"
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

// gzipBomb returns a small archive that decompresses to more than size
// bytes: a valid header and snapshot start, then one KV value that never
// ends. It is one gzip member repeated (gzip readers read concatenated
// members as one stream), so building it costs little.
func gzipBomb(t *testing.T, size int) []byte {
	t.Helper()
	member := func(data []byte) []byte {
		var b bytes.Buffer
		zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	out := member([]byte(`{"Version":1,"Index":100,"Term":1}` + "\n" + `"tribune-snapshot-v1"` + "\n" +
		`{"T":"kvs","K":{"Key":"bomb","Value":"`))
	const chunk = 8 << 20
	block := member(bytes.Repeat([]byte("A"), chunk))
	for n := 0; n < size; n += chunk {
		out = append(out, block...)
	}
	return out
}

// TestSnapshotRestoreGzipBomb is issue 10 Medium #3: a small upload that
// decompresses to hundreds of MiB is refused without being held in memory.
func TestSnapshotRestoreGzipBomb(t *testing.T) {
	a, c := startAPI(t)
	bomb := gzipBomb(t, 400<<20)
	if len(bomb) > 2<<20 {
		t.Fatalf("bomb is %d bytes, want a small one", len(bomb))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	code, body := snapDo(t, a, http.MethodPut, "/v1/snapshot", bomb)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
		t.Fatalf("bomb restore answered %d %s, want 400 or 413", code, body)
	}
	// The old code decompressed the whole upload into memory, then decoded
	// it again (more than 1 GiB allocated for this bomb).
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256<<20 {
		t.Fatalf("refusing the bomb allocated %d MiB", alloc>>20)
	}
	if after.HeapAlloc > before.HeapAlloc+32<<20 {
		t.Fatalf("heap after the refusal %d MiB, before %d MiB", after.HeapAlloc>>20, before.HeapAlloc>>20)
	}
	if _, err := c.KV().Put(&api.KVPair{Key: "after-bomb", Value: []byte("1")}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotRestoreOneAtATime: while one upload is being read, a second
// restore gets 429; once the first is done, restores are accepted again.
func TestSnapshotRestoreOneAtATime(t *testing.T) {
	a, _ := startAPI(t)
	code, archive := snapDo(t, a, http.MethodGet, "/v1/snapshot", nil)
	if code != http.StatusOK {
		t.Fatalf("save: %d", code)
	}

	// The first upload is junk sent in pieces larger than the client's
	// write buffer (so that they reach the server) and held open.
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPut, "http://"+a.HTTPAddr()+"/v1/snapshot", pr)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan int, 1)
	// A client of its own, so that the upload holds a connection of its
	// own whatever the other requests do.
	own := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(own.CloseIdleConnections)
	go func() {
		resp, err := own.Do(req)
		if err != nil {
			t.Logf("first upload: %v", err)
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	// More than the socket buffers hold between client and server: once
	// written, the first upload's handler is reading it, which it does
	// only holding the restore slot. Every other restore now gets 429.
	junk := bytes.Repeat([]byte("j"), 64<<10)
	for n := 0; n < 16<<20; n += len(junk) {
		if _, err := pw.Write(junk); err != nil {
			t.Fatalf("first upload: %v", err)
		}
	}
	code, body := snapDo(t, a, http.MethodPut, "/v1/snapshot", archive)
	if code != http.StatusTooManyRequests {
		t.Fatalf("concurrent restore answered %d %s, want 429", code, body)
	}
	pw.Close()
	select {
	case code := <-first:
		if code != http.StatusBadRequest {
			t.Fatalf("junk restore answered %d, want 400", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("first restore did not finish")
	}
	if code, body := snapDo(t, a, http.MethodPut, "/v1/snapshot", archive); code != http.StatusOK {
		t.Fatalf("restore after the first finished: %d %s", code, body)
	}
}
