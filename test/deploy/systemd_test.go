package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/test/procs"
)

// unitValues returns the values of key in a systemd unit file.
func unitValues(unit []byte, key string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestSystemdUnit checks that the unit's command line, with each example
// configuration in its config directory, loads through agent/config into
// the agent the example describes, and that the unit's state directory is
// the examples' data_dir.
func TestSystemdUnit(t *testing.T) {
	dir := filepath.Join(deployDir(t), "systemd")
	unit, err := os.ReadFile(filepath.Join(dir, "tribune.service"))
	if err != nil {
		t.Fatal(err)
	}
	exec := unitValues(unit, "ExecStart")
	if len(exec) != 1 {
		t.Fatalf("ExecStart: %v", exec)
	}
	argv := strings.Fields(exec[0])
	if len(argv) < 2 || filepath.Base(argv[0]) != "tribune" || argv[1] != "agent" {
		t.Fatalf("ExecStart %q does not run tribune agent", exec[0])
	}
	const confDir = "/etc/tribune.d"
	if !strings.Contains(exec[0], "-config-dir="+confDir) {
		t.Fatalf("ExecStart %q does not load %s", exec[0], confDir)
	}
	if sd := unitValues(unit, "StateDirectory"); len(sd) != 1 || sd[0] != "tribune" {
		t.Errorf("StateDirectory %v, want tribune (/var/lib/tribune)", sd)
	}
	for _, example := range []string{"server.hcl", "client.hcl"} {
		t.Run(example, func(t *testing.T) {
			etc := t.TempDir()
			src, err := os.ReadFile(filepath.Join(dir, example))
			if err != nil {
				t.Fatal(err)
			}
			key := gossipKeygen(t)
			if err := writeFiles(etc, map[string]string{example: string(src), "gossip.hcl": fmt.Sprintf("encrypt = %q\n", key)}); err != nil {
				t.Fatal(err)
			}
			var args []string
			for _, a := range argv[2:] {
				args = append(args, strings.ReplaceAll(a, confDir, etc))
			}
			// A machine with one private address, which the agent advertises.
			ifaces := func() ([]net.Addr, error) {
				return []net.Addr{&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}, &net.IPNet{IP: net.IPv4(10, 0, 0, 5), Mask: net.CIDRMask(24, 32)}}, nil
			}
			cfg, warnings, err := config.Load(config.LoadOptions{Args: args, InterfaceAddrs: ifaces, Hostname: func() (string, error) { return "machine-1", nil }})
			if err != nil {
				t.Fatalf("%s: %v", example, err)
			}
			for _, w := range warnings {
				t.Errorf("%s: warning: %s", example, w)
			}
			if cfg.AdvertiseAddrLAN != "10.0.0.5" {
				t.Errorf("%s: advertises %s, want the private address 10.0.0.5", example, cfg.AdvertiseAddrLAN)
			}
			server := example == "server.hcl"
			if cfg.Server != server || cfg.DataDir != "/var/lib/tribune" || cfg.Encrypt != key || len(cfg.RetryJoin) != 3 {
				t.Errorf("%s: server=%v data_dir=%s encrypt set=%v retry_join=%v", example, cfg.Server, cfg.DataDir, cfg.Encrypt == key, cfg.RetryJoin)
			}
			if server && (cfg.BootstrapExpect != len(cfg.RetryJoin) || cfg.LeaveOnTerminate) {
				t.Errorf("server: bootstrap_expect %d for %d servers, leave_on_terminate %v", cfg.BootstrapExpect, len(cfg.RetryJoin), cfg.LeaveOnTerminate)
			}
			if !server && !cfg.LeaveOnTerminate {
				t.Errorf("client: leave_on_terminate off")
			}
		})
	}
}

// TestSystemdVerify runs systemd-analyze verify on the unit, its binary
// path pointed at the binary built from this tree.
func TestSystemdVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd): the unit is checked by TestSystemdUnit only")
	}
	unit, err := os.ReadFile(filepath.Join(deployDir(t), "systemd", "tribune.service"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tribune.service")
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/tribune"), []byte(procs.Binary(t)))
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
