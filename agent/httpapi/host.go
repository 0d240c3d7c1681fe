package httpapi

import (
	"bufio"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tribune-mesh/tribune/acl"
)

// agentHost serves GET /v1/agent/host: facts about the machine the agent
// runs on (host, memory, CPUs, the data directory's disk), with the time they
// were collected and the errors met collecting them, as Consul's debug
// bundle reads them. What cannot be read on this platform is left out and
// named in Errors.
func (h *Handler) agentHost(w http.ResponseWriter, r *http.Request) (any, error) {
	authz, err := h.authorize(r)
	if err != nil {
		return nil, err
	}
	if authz.OperatorRead() != acl.Allow {
		return nil, errPermissionDenied
	}
	var errs []string
	hostname, err := os.Hostname()
	if err != nil {
		errs = append(errs, "hostname: "+err.Error())
	}
	host := map[string]any{"hostname": hostname, "os": runtime.GOOS, "kernelArch": runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		host["kernelVersion"] = strings.TrimSpace(string(b))
	}
	if up, err := readUptime(); err == nil {
		host["uptime"] = uint64(up.Seconds())
		host["bootTime"] = uint64(time.Now().Add(-up).Unix())
	} else {
		errs = append(errs, "uptime: "+err.Error())
	}
	out := map[string]any{
		"Host":           host,
		"CPU":            []map[string]any{{"cores": runtime.NumCPU()}},
		"CollectionTime": time.Now().UnixNano(),
	}
	if mem, err := readMeminfo(); err == nil {
		out["Memory"] = mem
	} else {
		errs = append(errs, "memory: "+err.Error())
	}
	dir := h.agent.cfg.DataDir
	if dir == "" {
		dir = os.TempDir()
	}
	if disk, err := diskUsage(dir); err == nil {
		out["Disk"] = disk
	} else {
		errs = append(errs, "disk: "+err.Error())
	}
	if errs == nil {
		errs = []string{}
	}
	out["Errors"] = errs
	return out, nil
}

// readUptime reads the machine's uptime from /proc/uptime.
func readUptime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, os.ErrInvalid
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// readMeminfo reads total, available and used memory from /proc/meminfo.
func readMeminfo() (map[string]any, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kb := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(rest)
		if !ok || len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseUint(fields[0], 10, 64); err == nil {
			kb[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	total, avail := kb["MemTotal"]*1024, kb["MemAvailable"]*1024
	if total == 0 {
		return nil, os.ErrInvalid
	}
	used := total - min(avail, total)
	return map[string]any{"total": total, "available": avail, "used": used,
		"usedPercent": float64(used) / float64(total) * 100, "free": kb["MemFree"] * 1024}, nil
}
