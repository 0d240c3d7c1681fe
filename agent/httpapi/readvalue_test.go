package httpapi

import (
	"bytes"
	"io"
	"net/http/httptest"
	"testing"
)

// TestReadValue: a value with a Content-Length is read in one allocation of
// its size; without one it is read whole; one byte over the limit is kept so
// that the caller can refuse it.
func TestReadValue(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1024)
	r := httptest.NewRequest("PUT", "/v1/kv/k", bytes.NewReader(body))
	rd := bytes.NewReader(body)
	nop := io.NopCloser(rd)
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(body)
		r.Body = nop
		if v, err := readValue(r, 4096); err != nil || len(v) != 1024 {
			t.Fatalf("%d bytes, %v", len(v), err)
		}
	})
	if allocs > 1 {
		t.Fatalf("%.1f allocations for a 1 KiB value", allocs)
	}
	r.ContentLength = -1
	rd.Reset(body)
	r.Body = io.NopCloser(rd)
	if v, err := readValue(r, 100); err != nil || len(v) != 101 {
		t.Fatalf("over the limit without a length: %d bytes, %v", len(v), err)
	}
	r.ContentLength = 0
	r.Body = io.NopCloser(bytes.NewReader(nil))
	if v, err := readValue(r, 100); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %#v %v", v, err)
	}
}
