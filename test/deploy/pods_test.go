package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The pods of these tests run as plain processes. What a kubelet and the
// cluster would provide is filled in here, and nothing else is changed:
//   - the downward API (metadata.name, metadata.namespace, spec.nodeName,
//     status.podIP, status.hostIP) and Secret keys become env values, and
//     $(VAR) references are expanded the way the kubelet does;
//   - every volume is a directory of the pod's temp dir, ConfigMaps written
//     into it, and the mount paths in the command line and env point there;
//   - "tribune" (the image's binary) is the binary built from this tree, and
//     PATH (set by the image) finds it, sh, wget and grep;
//   - cluster DNS: a -retry-join of a name cluster DNS would resolve turns
//     into one -retry-join per address it resolves to, as memberlist joins
//     every address of a name.
// A pod has one loopback address (127.x.y.z): no network namespace, so the
// hostPort forwarding from HOST_IP to POD_IP is modelled by giving a
// DaemonSet pod the address of its node.

// cluster is what the pods of one test see: Secrets, cluster DNS, the
// binary, and host directories for hostPath volumes.
type cluster struct {
	m       *manifests
	secrets map[string]map[string]string
	dns     map[string][]string
	// hostPaths maps a hostPath volume's path to its directory per node.
	hostPaths map[string]map[string]string
	bin       string
	dir       string
}

// pod is one pod's container, resolved and ready to run.
type pod struct {
	name, namespace, node, podIP, hostIP string
	container                            corev1.Container
	dir                                  string
	mounts                               map[string]string // mount path -> directory
	env                                  []string          // KEY=VALUE, PATH last
	envMap                               map[string]string
	argv                                 []string
	logPath                              string
	c                                    *cluster

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// expand replaces $(VAR) with env's value as Kubernetes does for command,
// args and env values: $$ is a literal $, and a reference to an undefined
// variable is left as it is.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// newPod resolves the first container of spec for a pod named name on node,
// with the given addresses. volumeClaims are the StatefulSet's claim
// templates, which become directories like emptyDir.
func (c *cluster) newPod(t *testing.T, name, namespace, node, podIP, hostIP string, spec corev1.PodSpec, volumeClaims []string) *pod {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("pod %s: %d containers, want 1", name, len(spec.Containers))
	}
	p := &pod{name: name, namespace: namespace, node: node, podIP: podIP, hostIP: hostIP,
		container: spec.Containers[0], dir: filepath.Join(c.dir, name), mounts: map[string]string{},
		envMap: map[string]string{}, c: c}
	p.logPath = filepath.Join(p.dir, "log")
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := p.mountVolumes(spec, volumeClaims); err != nil {
		t.Fatalf("pod %s: %v", name, err)
	}
	if err := p.resolveEnv(); err != nil {
		t.Fatalf("pod %s: %v", name, err)
	}
	p.argv = p.resolveCommand(append(append([]string{}, p.container.Command...), p.container.Args...))
	for _, a := range p.argv {
		if strings.Contains(a, "$(") {
			t.Fatalf("pod %s: unresolved reference in %q", name, a)
		}
	}
	return p
}

func (p *pod) mountVolumes(spec corev1.PodSpec, volumeClaims []string) error {
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	claims := map[string]bool{}
	for _, c := range volumeClaims {
		claims[c] = true
	}
	for _, vm := range p.container.VolumeMounts {
		dir := filepath.Join(p.dir, "volumes", vm.Name)
		v, ok := vols[vm.Name]
		switch {
		case !ok && claims[vm.Name], ok && v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
		case !ok:
			return fmt.Errorf("volume mount %s: no such volume or claim", vm.Name)
		case v.ConfigMap != nil:
			cm, err := p.c.m.configMapNamed(v.ConfigMap.Name)
			if err != nil {
				return fmt.Errorf("volume %s: %w", vm.Name, err)
			}
			if err := writeFiles(dir, cm.Data); err != nil {
				return err
			}
		case v.Secret != nil:
			data, ok := p.c.secrets[v.Secret.SecretName]
			if !ok {
				return fmt.Errorf("volume %s: Secret %s does not exist", vm.Name, v.Secret.SecretName)
			}
			if err := writeFiles(dir, data); err != nil {
				return err
			}
		case v.HostPath != nil:
			d, ok := p.c.hostPaths[v.HostPath.Path][p.node]
			if !ok {
				return fmt.Errorf("volume %s: no host directory %s on node %s", vm.Name, v.HostPath.Path, p.node)
			}
			dir = d
		default:
			return fmt.Errorf("volume %s: unsupported volume source", vm.Name)
		}
		p.mounts[vm.MountPath] = dir
	}
	return nil
}

func writeFiles(dir string, data map[string]string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// fieldValue answers a downward API fieldRef.
func (p *pod) fieldValue(path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.name, nil
	case "metadata.namespace":
		return p.namespace, nil
	case "spec.nodeName":
		return p.node, nil
	case "status.podIP":
		return p.podIP, nil
	case "status.hostIP":
		return p.hostIP, nil
	}
	return "", fmt.Errorf("fieldRef %s is not supported here", path)
}

func (p *pod) resolveEnv() error {
	for _, e := range p.container.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = expand(e.Value, p.envMap)
		case e.ValueFrom.FieldRef != nil:
			var err error
			if v, err = p.fieldValue(e.ValueFrom.FieldRef.FieldPath); err != nil {
				return fmt.Errorf("env %s: %w", e.Name, err)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := p.c.secrets[ref.Name][ref.Key]
			if !ok {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return fmt.Errorf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			v = s
		default:
			return fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
		p.envMap[e.Name] = p.mapPaths(v)
	}
	keys := make([]string, 0, len(p.envMap))
	for k := range p.envMap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.env = append(p.env, k+"="+p.envMap[k])
	}
	p.env = append(p.env, "PATH="+filepath.Dir(p.c.bin)+":/usr/local/bin:/usr/bin:/bin")
	return nil
}

// mapPaths points the container paths of s at the pod's volume directories.
func (p *pod) mapPaths(s string) string {
	paths := make([]string, 0, len(p.mounts))
	for mp := range p.mounts {
		paths = append(paths, mp)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, mp := range paths {
		s = strings.ReplaceAll(s, mp, p.mounts[mp])
	}
	return s
}

// resolveCommand expands references, maps paths and the binary, and turns
// -retry-join of a cluster DNS name into one flag per address.
func (p *pod) resolveCommand(cmd []string) []string {
	var out []string
	for i, a := range cmd {
		a = p.mapPaths(expand(a, p.envMap))
		if i == 0 && a == "tribune" {
			a = p.c.bin
		}
		if v, ok := strings.CutPrefix(a, "-retry-join="); ok {
			host, port := v, ""
			if h, pt, err := net.SplitHostPort(v); err == nil {
				host, port = h, pt
			}
			if ips, ok := p.c.dns[host]; ok {
				for _, ip := range ips {
					if port != "" {
						ip = net.JoinHostPort(ip, port)
					}
					out = append(out, "-retry-join="+ip)
				}
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// start runs the container's process; it is killed when the test ends.
func (p *pod) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env, cmd.Dir = p.env, p.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("pod %s: start %v: %v", p.name, p.argv, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("---- pod %s (%s) log, last 3000 bytes ----\n%s", p.name, p.podIP, b)
		}
	})
}

// exited reports whether the process has ended.
func (p *pod) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// exec runs a probe's or a hook's command in the pod's environment.
func (p *pod) exec(ctx context.Context, command []string) error {
	argv := p.resolveCommand(command)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = p.env, p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pod %s: %v: %w: %s", p.name, command, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ready runs the container's readiness probe once.
func (p *pod) ready(ctx context.Context) error {
	pr := p.container.ReadinessProbe
	if pr == nil || pr.Exec == nil {
		return fmt.Errorf("pod %s: no exec readiness probe", p.name)
	}
	return p.exec(ctx, pr.Exec.Command)
}

// terminate stops the pod as the kubelet does: SIGTERM, then SIGKILL after
// the grace period. It returns once the process has exited.
func (p *pod) terminate(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}
