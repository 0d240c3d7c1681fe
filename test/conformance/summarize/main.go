// Command summarize reads a `go test -json` stream and prints the result of
// the top-level tests as one line,
//
//	conformance: P passed, F failed, S skipped of T
//
// followed by the names of the failing tests. It is the last step of
// `make conformance` (test/conformance/run.sh). A test that started and
// never ended (the binary panicked or timed out) counts as failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is the part of a test2json record that summarize reads.
type event struct {
	Action  string
	Package string
	Test    string
}

// tally holds the outcome of each top-level test, keyed by package and name.
type tally struct {
	outcome map[string]string
}

func (t *tally) add(e event) {
	if e.Test == "" || strings.Contains(e.Test, "/") {
		return
	}
	key := e.Package + " " + e.Test
	switch e.Action {
	case "run":
		if _, ok := t.outcome[key]; !ok {
			t.outcome[key] = "run"
		}
	case "pass", "fail", "skip":
		t.outcome[key] = e.Action
	}
}

func summarize(r io.Reader, w io.Writer) (failed int, err error) {
	t := &tally{outcome: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue // build output and other non-JSON lines
		}
		t.add(e)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read go test -json stream: %w", err)
	}
	var pass, skip int
	var fails []string
	for key, o := range t.outcome {
		switch o {
		case "pass":
			pass++
		case "skip":
			skip++
		default: // "fail", or "run" with no end: the binary died under it
			fails = append(fails, key[strings.Index(key, " ")+1:])
		}
	}
	sort.Strings(fails)
	fmt.Fprintf(w, "conformance: %d passed, %d failed, %d skipped of %d\n", pass, len(fails), skip, len(t.outcome))
	for _, f := range fails {
		fmt.Fprintf(w, "  FAIL %s\n", f)
	}
	return len(fails), nil
}

func main() {
	if _, err := summarize(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "summarize:", err)
		os.Exit(1)
	}
}
