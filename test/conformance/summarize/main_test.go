package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummarizeCountsTopLevelTests(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"api","Test":"TestA"}`,
		`{"Action":"run","Package":"api","Test":"TestA/sub"}`,
		`{"Action":"fail","Package":"api","Test":"TestA/sub"}`,
		`{"Action":"pass","Package":"api","Test":"TestA"}`,
		`{"Action":"run","Package":"api","Test":"TestB"}`,
		`{"Action":"fail","Package":"api","Test":"TestB"}`,
		`{"Action":"run","Package":"api","Test":"TestC"}`,
		`{"Action":"skip","Package":"api","Test":"TestC"}`,
		`{"Action":"run","Package":"api","Test":"TestD"}`,
		`not json: build output`,
		`{"Action":"fail","Package":"api"}`,
	}, "\n")
	var out bytes.Buffer
	failed, err := summarize(strings.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	want := "conformance: 1 passed, 2 failed, 1 skipped of 4\n  FAIL TestB\n  FAIL TestD\n"
	if out.String() != want || failed != 2 {
		t.Fatalf("got %q (failed=%d), want %q", out.String(), failed, want)
	}
}
