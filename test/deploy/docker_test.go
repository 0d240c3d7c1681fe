package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/test/procs"
	"github.com/tribune-mesh/tribune/test/wait"
)

func entrypoint(t testing.TB) string {
	return filepath.Join(deployDir(t), "docker", "docker-entrypoint.sh")
}

// freePort returns a port free for TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	return procs.FreePorts(t, 1)[0]
}

// imageEnv is a container's environment in the image: PATH finds tribune
// (as /usr/local/bin does in the image) and the tools the entry point uses.
func imageEnv(t *testing.T, extra ...string) []string {
	return append([]string{"PATH=" + filepath.Dir(procs.Binary(t)) + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}, extra...)
}

// TestEntrypointAgent starts the agent through the image's entry point with
// Consul's image variables: the data and config directories, a JSON
// CONSUL_LOCAL_CONFIG, and the bind and client interfaces (lo here).
func TestEntrypointAgent(t *testing.T) {
	dir := t.TempDir()
	data, conf := filepath.Join(dir, "data"), filepath.Join(dir, "config")
	for _, d := range []string{data, conf} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	http := freePort(t)
	local := fmt.Sprintf(`{"node_name": "docker-1", "datacenter": "dc7", "server": true, "bootstrap_expect": 1,
		"ports": {"http": %d, "dns": %d, "grpc": %d, "server": %d, "serf_lan": %d, "serf_wan": %d}}`,
		http, freePort(t), freePort(t), freePort(t), freePort(t), freePort(t))
	logPath := filepath.Join(dir, "log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", entrypoint(t), "agent", "-log-level=debug")
	cmd.Env = imageEnv(t, "CONSUL_DATA_DIR="+data, "CONSUL_CONFIG_DIR="+conf, "CONSUL_LOCAL_CONFIG="+local,
		"CONSUL_BIND_INTERFACE=lo", "CONSUL_CLIENT_INTERFACE=lo")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("entry point log:\n%s", b)
		}
	})

	c := client(t, "127.0.0.1:"+strconv.Itoa(http))
	wait.For(t, 30*time.Second, func() error {
		select {
		case <-exited:
			return fmt.Errorf("the agent exited")
		default:
		}
		leader, err := c.Status().Leader()
		if err != nil || leader == "" {
			return fmt.Errorf("no leader yet (%q, %v)", leader, err)
		}
		return nil
	})
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if self["Config"]["NodeName"] != "docker-1" || self["Config"]["Datacenter"] != "dc7" {
		t.Errorf("agent config %v: CONSUL_LOCAL_CONFIG not applied", self["Config"])
	}
	if addr := self["Member"]["Addr"]; addr != "127.0.0.1" {
		t.Errorf("member address %v, want lo's 127.0.0.1 (CONSUL_BIND_INTERFACE)", addr)
	}
	b, err := os.ReadFile(filepath.Join(conf, "local.json"))
	if err != nil || !json.Valid(b) {
		t.Errorf("local.json: %v %q", err, b)
	}
	if entries, _ := os.ReadDir(data); len(entries) == 0 {
		t.Errorf("CONSUL_DATA_DIR %s is empty: the agent did not use it", data)
	}
	log, _ := os.ReadFile(logPath)
	for _, want := range []string{"Found address '127.0.0.1' for interface 'lo', setting bind option", "setting client option"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("entry point log lacks %q", want)
		}
	}
}

// TestEntrypointCommands checks the other forms of the entry point's
// arguments and its refusals.
func TestEntrypointCommands(t *testing.T) {
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command("/bin/sh", append([]string{entrypoint(t)}, args...)...)
		cmd.Env = imageEnv(t, env...)
		cmd.Env = append(cmd.Env, "CONSUL_CONFIG_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(nil, "version"); err != nil || !strings.HasPrefix(out, "Tribune v") {
		t.Errorf("version: %v %q", err, out)
	}
	if out, err := run(nil, "echo", "not a tribune command"); err != nil || out != "not a tribune command\n" {
		t.Errorf("a command that is not Tribune's should run as it is: %v %q", err, out)
	}
	// A first argument that is a flag means `agent`: -h prints the
	// agent's flags.
	out, _ := run(nil, "-h")
	if !strings.Contains(out, "-bootstrap-expect") {
		t.Errorf("-h should reach `tribune agent -h`: %q", out)
	}
	if out, err := run([]string{"CONSUL_BIND_INTERFACE=nosuch0"}, "agent"); err == nil || !strings.Contains(out, "no IPv4 address on interface 'nosuch0'") {
		t.Errorf("unknown interface: %v %q", err, out)
	}
	if out, err := run([]string{"CONSUL_ALLOW_PRIVILEGED_PORTS=yes"}, "agent"); err == nil || !strings.Contains(out, "NET_BIND_SERVICE") {
		t.Errorf("CONSUL_ALLOW_PRIVILEGED_PORTS: %v %q", err, out)
	}
}

// TestDockerfileContract checks what the manifests assume of the image:
// a multi-stage build of a static binary, tribune on PATH, the entry point,
// and the non-root uid/gid the pods run as.
func TestDockerfileContract(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir(t), "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms int
	var user, entry string
	var static, onPath bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			froms++
		case strings.HasPrefix(line, "USER "):
			user = strings.TrimSpace(strings.TrimPrefix(line, "USER "))
		case strings.HasPrefix(line, "ENTRYPOINT "):
			entry = strings.TrimPrefix(line, "ENTRYPOINT ")
		case strings.Contains(line, "CGO_ENABLED=0"):
			static = true
		case strings.HasPrefix(line, "COPY --from=build") && strings.HasSuffix(line, " /usr/local/bin/tribune"):
			onPath = true
		}
	}
	if froms < 2 || !static || !onPath {
		t.Errorf("Dockerfile: %d stages, CGO_ENABLED=0 %v, tribune in /usr/local/bin %v", froms, static, onPath)
	}
	if entry != `["docker-entrypoint.sh"]` {
		t.Errorf("ENTRYPOINT %s", entry)
	}
	m := decodeFiles(t, renderedPath(t, "dc1"), staticPodPath(t))
	specs := map[string]*int64{}
	for _, ss := range m.statefulSets {
		specs["StatefulSet "+ss.Name] = ss.Spec.Template.Spec.SecurityContext.RunAsUser
		if g := ss.Spec.Template.Spec.SecurityContext.RunAsGroup; g == nil || fmt.Sprint(*ss.Spec.Template.Spec.SecurityContext.RunAsUser)+":"+fmt.Sprint(*g) != user {
			t.Errorf("StatefulSet %s runs as a user/group other than the image's %s", ss.Name, user)
		}
	}
	for _, ds := range m.daemonSets {
		specs["DaemonSet "+ds.Name] = ds.Spec.Template.Spec.SecurityContext.RunAsUser
	}
	for _, p := range m.pods {
		specs["Pod "+p.Name] = p.Spec.SecurityContext.RunAsUser
	}
	for what, uid := range specs {
		if uid == nil || !strings.HasPrefix(user, fmt.Sprint(*uid)+":") {
			t.Errorf("%s runs as uid %v, the image as %s", what, uid, user)
		}
	}
}
