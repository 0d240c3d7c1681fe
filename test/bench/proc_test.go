package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	procharness "github.com/tribune-mesh/tribune/test/procs"
)

// workDir is the temporary directory of this run: the built binary, the
// agents' logs and data directories.
var workDir string

// tribuneBin returns the tribune binary: BENCH_TRIBUNE when set, else
// ./cmd/tribune built once by the shared process harness.
func tribuneBin(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("BENCH_TRIBUNE"); p != "" {
		return p
	}
	return procharness.Binary(tb)
}

// ports are one agent's ports.
type ports struct {
	HTTP, DNS, Server, SerfLAN, SerfWAN, GRPC int
}

func newPorts(tb testing.TB) ports {
	p := procharness.FreePorts(tb, 6)
	return ports{HTTP: p[0], DNS: p[1], Server: p[2], SerfLAN: p[3], SerfWAN: p[4], GRPC: p[5]}
}

func (p ports) flags() []string {
	return []string{
		"-http-port", strconv.Itoa(p.HTTP),
		"-dns-port", strconv.Itoa(p.DNS),
		"-server-port", strconv.Itoa(p.Server),
		"-serf-lan-port", strconv.Itoa(p.SerfLAN),
		"-serf-wan-port", strconv.Itoa(p.SerfWAN),
		"-grpc-port", strconv.Itoa(p.GRPC),
	}
}

// proc is one agent process, run by the shared process harness.
type proc = procharness.Agent

var (
	startedMu sync.Mutex
	started   []*proc
)

// killAll SIGKILLs every process this run started and still runs.
func killAll() {
	startedMu.Lock()
	all := append([]*proc(nil), started...)
	startedMu.Unlock()
	for _, p := range all {
		p.Kill()
	}
}

// newProc prepares an agent process with its log in workDir; every crash
// is printed.
func newProc(name, bin string, pp ports, args []string) *proc {
	p := &proc{
		Name:     name,
		Bin:      bin,
		Args:     args,
		HTTPPort: pp.HTTP,
		DNSPort:  pp.DNS,
		RPCPort:  pp.Server,
		SerfPort: pp.SerfLAN,
		LogPath:  filepath.Join(workDir, name+".log"),
		Logf:     func(format string, args ...any) { fmt.Printf("bench: "+format+"\n", args...) },
	}
	startedMu.Lock()
	started = append(started, p)
	startedMu.Unlock()
	return p
}

// procStatusKiB returns a "Vm..." field of /proc/<pid>/status in KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(b, field)
}

func parseStatusKiB(status []byte, field string) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// cpuTicks returns utime+stime of a process in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

func parseStatTicks(stat []byte) (int64, error) {
	// The command name (field 2) may hold spaces; fields count from the
	// last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	s, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return u + s, nil
}

// socketFDs counts the open sockets of a process.
func socketFDs(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n, nil
}

// raiseFDLimit sets the soft open-file limit to the hard one. Calling
// Setrlimit also makes the agents started afterwards inherit the raised
// limit (Go otherwise restores the original one in children).
func raiseFDLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}
