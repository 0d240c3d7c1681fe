package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/tribune-mesh/tribune/server"
)

// runSnapshotSave implements "snapshot save <file>".
func runSnapshotSave(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("snapshot save", "snapshot save [options] FILE",
		"Saves an atomic, point-in-time snapshot of the servers' state to FILE.", stderr, &hf)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "This command takes one argument: <file>")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	rc, _, err := client.Snapshot().Save(hf.queryOptions())
	if err != nil {
		fmt.Fprintf(stderr, "Error saving snapshot: %v\n", err)
		return 1
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, server.MaxSnapshotSize+1))
	if err != nil {
		fmt.Fprintf(stderr, "Error reading snapshot: %v\n", err)
		return 1
	}
	hdr, _, err := server.InspectSnapshot(data)
	if err != nil {
		fmt.Fprintf(stderr, "Error verifying snapshot: %v\n", err)
		return 1
	}
	path := fs.Arg(0)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		fmt.Fprintf(stderr, "Error writing snapshot: %v\n", err)
		return 1
	}
	if err := os.Rename(tmp, path); err != nil {
		fmt.Fprintf(stderr, "Error writing snapshot: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Saved and verified snapshot to index %d\n", hdr.Index)
	return 0
}

// runSnapshotRestore implements "snapshot restore <file>".
func runSnapshotRestore(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("snapshot restore", "snapshot restore [options] FILE",
		"Restores a snapshot taken with 'snapshot save' into the servers, replacing their state.", stderr, &hf)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "This command takes one argument: <file>")
		return 1
	}
	data, err := readBounded(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "Error reading snapshot: %v\n", err)
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if err := client.Snapshot().Restore(nil, bytes.NewReader(data)); err != nil {
		fmt.Fprintf(stderr, "Error restoring snapshot: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "Restored snapshot")
	return 0
}

// runSnapshotInspect implements "snapshot inspect <file>".
func runSnapshotInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("snapshot inspect", "snapshot inspect FILE",
		"Displays information about a snapshot file.", stderr, nil)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "This command takes one argument: <file>")
		return 1
	}
	data, err := readBounded(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "Error reading snapshot: %v\n", err)
		return 1
	}
	hdr, state, err := server.InspectSnapshot(data)
	if err != nil {
		fmt.Fprintf(stderr, "Error inspecting snapshot: %v\n", err)
		return 1
	}
	writeTable(stdout, [][]string{
		{"Index", fmt.Sprint(hdr.Index)},
		{"Term", fmt.Sprint(hdr.Term)},
		{"Datacenter", hdr.Datacenter},
		{"Node", hdr.Node},
		{"Time", hdr.Time.Format("2006-01-02T15:04:05Z")},
		{"Version", fmt.Sprint(hdr.Version)},
		{"Size", fmt.Sprint(len(state))},
	})
	return 0
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, server.MaxSnapshotSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > server.MaxSnapshotSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, server.MaxSnapshotSize)
	}
	return data, nil
}
