package deploy

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tribune-mesh/tribune/agent/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The names the manifests agree on.
const (
	serverName = "tribune-server"
	clientName = "tribune-client"
	gossipKey  = "tribune-gossip-key"
	agentToken = "tribune-agent-token"
)

// gossipKeygen returns a fresh gossip key, as `tribune keygen` prints one.
func gossipKeygen(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// testSecrets are the Secrets an operator creates before applying the
// manifests (see deploy/README.md).
func testSecrets(t testing.TB, token string) map[string]map[string]string {
	return map[string]map[string]string{
		gossipKey:  {"key": gossipKeygen(t)},
		agentToken: {"token": token},
	}
}

// loadAgentConfig loads the configuration a pod's tribune process would:
// its command line, with the files of its volumes, through agent/config.
// Any warning (an unknown key, a key set twice) fails the test.
func loadAgentConfig(t *testing.T, p *pod) *config.Config {
	t.Helper()
	if len(p.argv) < 2 || p.argv[1] != "agent" {
		t.Fatalf("pod %s: command %v does not run `tribune agent`", p.name, p.argv)
	}
	cfg, warnings, err := config.Load(config.LoadOptions{Args: p.argv[2:]})
	if err != nil {
		t.Fatalf("pod %s: the agent rejects its configuration: %v", p.name, err)
	}
	for _, w := range warnings {
		t.Errorf("pod %s: configuration warning: %s", p.name, w)
	}
	return cfg
}

// selects fails the test unless sel selects exactly the pod labels.
func selects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	if sel == nil {
		t.Errorf("%s: no selector", what)
		return
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if s.Empty() || !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not select the pod labels %v", what, sel, podLabels)
	}
}

// containerPort returns the container's port named name.
func containerPort(t *testing.T, c corev1.Container, name string) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			if p.Protocol == "" {
				p.Protocol = corev1.ProtocolTCP
			}
			return p
		}
	}
	t.Errorf("container %s has no port named %s", c.Name, name)
	return corev1.ContainerPort{}
}

func envVar(t *testing.T, c corev1.Container, name string) corev1.EnvVar {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e
		}
	}
	t.Errorf("container %s has no env %s", c.Name, name)
	return corev1.EnvVar{Name: name}
}

func wantFieldRef(t *testing.T, c corev1.Container, name, path string) {
	t.Helper()
	e := envVar(t, c, name)
	if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
		t.Errorf("env %s: want the downward API's %s, got %+v", name, path, e)
	}
}

func wantSecretRef(t *testing.T, c corev1.Container, name, secret, key string) {
	t.Helper()
	e := envVar(t, c, name)
	if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != secret || e.ValueFrom.SecretKeyRef.Key != key {
		t.Errorf("env %s: want Secret %s key %s, got %+v", name, secret, key, e)
	}
}

var refRE = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// envOrder fails the test if a $(VAR) of an env value, a command or an arg
// names a variable not defined before it: the kubelet would leave it as it
// is.
func envOrder(t *testing.T, c corev1.Container) {
	t.Helper()
	defined := map[string]bool{}
	for _, e := range c.Env {
		for _, m := range refRE.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("env %s refers to $(%s), not defined before it", e.Name, m[1])
			}
		}
		defined[e.Name] = true
	}
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		for _, m := range refRE.FindAllStringSubmatch(a, -1) {
			if !defined[m[1]] {
				t.Errorf("arg %q refers to $(%s), which the env does not define", a, m[1])
			}
		}
	}
}

// checkAgentPorts checks that the ports the agent listens on are the
// container's ports of the same names.
func checkAgentPorts(t *testing.T, c corev1.Container, cfg *config.Config, server bool) {
	t.Helper()
	want := map[string]int{"http": cfg.Ports.HTTP, "grpc": cfg.Ports.GRPC, "dns-tcp": cfg.Ports.DNS, "dns-udp": cfg.Ports.DNS,
		"serflan-tcp": cfg.Ports.SerfLAN, "serflan-udp": cfg.Ports.SerfLAN}
	if server {
		want["server"] = cfg.Ports.Server
		want["serfwan-tcp"] = cfg.Ports.SerfWAN
		want["serfwan-udp"] = cfg.Ports.SerfWAN
	}
	for name, port := range want {
		p := containerPort(t, c, name)
		if int(p.ContainerPort) != port {
			t.Errorf("port %s: container port %d, the agent listens on %d", name, p.ContainerPort, port)
		}
		if wantProto := corev1.ProtocolTCP; strings.HasSuffix(name, "-udp") && p.Protocol != corev1.ProtocolUDP || !strings.HasSuffix(name, "-udp") && p.Protocol != wantProto {
			t.Errorf("port %s: protocol %s", name, p.Protocol)
		}
	}
	if cfg.Ports.HTTP != 8500 || cfg.Ports.GRPC != 8502 || cfg.Ports.DNS != 8600 || cfg.Ports.SerfLAN != 8301 {
		t.Errorf("ports %+v: want Consul's defaults (8500, 8502, 8600, 8301)", cfg.Ports)
	}
}

// checkLeaderProbe checks that readiness means "this agent sees a leader".
func checkLeaderProbe(t *testing.T, c corev1.Container) {
	t.Helper()
	pr := c.ReadinessProbe
	if pr == nil || pr.Exec == nil {
		t.Errorf("container %s: no exec readiness probe", c.Name)
		return
	}
	if !strings.Contains(strings.Join(pr.Exec.Command, " "), "/v1/status/leader") {
		t.Errorf("container %s: the readiness probe %v does not ask /v1/status/leader", c.Name, pr.Exec.Command)
	}
}

func mountOf(t *testing.T, c corev1.Container, volume string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if vm.Name == volume {
			return vm.MountPath
		}
	}
	t.Errorf("container %s does not mount volume %s", c.Name, volume)
	return ""
}

// TestContract checks, for every datacenter overlay, what the objects of
// the rendered YAML promise each other and what the agent makes of the
// configuration they give it.
func TestContract(t *testing.T) {
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) { checkOverlay(t, o) })
	}
}

func checkOverlay(t *testing.T, overlay string) {
	m := decodeFiles(t, renderedPath(t, overlay))
	dc := strings.TrimSuffix(overlay, "-static")
	ds, ok := m.daemonSets[clientName]
	if !ok {
		t.Fatalf("no DaemonSet %s", clientName)
	}
	ns := ds.Namespace
	if _, ok := m.namespaces[ns]; !ok || ns == "" {
		t.Errorf("DaemonSet in namespace %q: the overlay must create it", ns)
	}
	for kind, names := range map[string][]string{
		"Service": keys(m.services), "ConfigMap": keys(m.configMaps), "StatefulSet": keys(m.statefulSets),
		"DaemonSet": keys(m.daemonSets), "PodDisruptionBudget": keys(m.pdbs),
	} {
		for _, n := range names {
			if got := namespaceOf(m, kind, n); got != ns {
				t.Errorf("%s %s in namespace %q, want %q", kind, n, got, ns)
			}
		}
	}

	// The servers' headless Service, which every agent retry_joins.
	svc, ok := m.services[serverName]
	if !ok {
		t.Fatalf("no Service %s", serverName)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: clusterIP %q, want None (headless)", svc.Name, svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: publishNotReadyAddresses off: servers become ready only after they have joined each other through it", svc.Name)
	}
	if len(ds.Spec.Template.Labels) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("Service %s also selects the client pods", svc.Name)
	}
	headless := fmt.Sprintf("%s.%s.svc", svc.Name, ns)
	c := &cluster{m: m, secrets: testSecrets(t, "agent-token-1"), bin: "tribune", dir: t.TempDir()}

	// The servers: a StatefulSet, or static pods (TestStaticPodContract)
	// in an overlay named -static, which leaves the StatefulSet, its PDB
	// and its ConfigMap out.
	if ss, ok := m.statefulSets[serverName]; ok {
		checkServers(t, m, c, ss, svc, dc, headless)
	} else if overlay == dc || len(m.pdbs) > 0 || len(m.configMaps) != 1 {
		t.Errorf("overlay %s: no server StatefulSet, yet not a -static overlay with only the client's ConfigMap", overlay)
	}

	// Client DaemonSet.
	cpl := ds.Spec.Template.Labels
	selects(t, "DaemonSet", ds.Spec.Selector, cpl)
	cc := ds.Spec.Template.Spec.Containers[0]
	envOrder(t, cc)
	wantFieldRef(t, cc, "NODE", "spec.nodeName")
	wantFieldRef(t, cc, "HOST_IP", "status.hostIP")
	wantFieldRef(t, cc, "POD_IP", "status.podIP")
	wantSecretRef(t, cc, "GOSSIP_KEY", gossipKey, "key")
	wantSecretRef(t, cc, "AGENT_TOKEN", agentToken, "token")
	if !slices.Contains(cc.Args, "-advertise=$(HOST_IP)") {
		t.Errorf("DaemonSet args %v: want -advertise=$(HOST_IP)", cc.Args)
	}
	for _, name := range []string{"http", "grpc", "dns-tcp", "dns-udp", "serflan-tcp", "serflan-udp"} {
		if p := containerPort(t, cc, name); p.HostPort == 0 || p.HostPort != p.ContainerPort {
			t.Errorf("DaemonSet port %s: hostPort %d, want %d", name, p.HostPort, p.ContainerPort)
		}
	}
	if l := cc.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Exec == nil || !slices.Equal(l.PreStop.Exec.Command, []string{"tribune", "leave"}) {
		t.Errorf("DaemonSet: want a preStop hook running tribune leave")
	}
	checkLeaderProbe(t, cc)
	var cm *corev1.ConfigMap
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			var err error
			if cm, err = m.configMapNamed(v.ConfigMap.Name); err != nil {
				t.Fatalf("DaemonSet: %v", err)
			}
		}
	}
	if cm == nil {
		t.Fatalf("DaemonSet mounts no ConfigMap")
	}
	if got, want := ds.Spec.Template.Annotations[checksumAnnotation], configChecksum(cm.Data); got != want {
		t.Errorf("DaemonSet annotation %s = %q, want %q (the checksum of ConfigMap %s)", checksumAnnotation, got, want, cm.Name)
	}

	cp := c.newPod(t, ds.Name+"-abcde", ns, "node-1", "10.0.0.20", "10.1.0.1", ds.Spec.Template.Spec, nil)
	ccfg := loadAgentConfig(t, cp)
	if ccfg.Server || !ccfg.LeaveOnTerminate {
		t.Errorf("client config: server=%v leave_on_terminate=%v, want a client that leaves on SIGTERM", ccfg.Server, ccfg.LeaveOnTerminate)
	}
	if ccfg.Datacenter != dc {
		t.Errorf("client config: datacenter %q, want %q", ccfg.Datacenter, dc)
	}
	if ccfg.NodeName != "node-1" || ccfg.AdvertiseAddrLAN != cp.hostIP || ccfg.BindAddr != cp.podIP || !slices.Equal(ccfg.ClientAddrs, []string{cp.podIP}) {
		t.Errorf("client config: node %s advertise %s bind %s client %v: want the node's name, the host IP and the pod IP",
			ccfg.NodeName, ccfg.AdvertiseAddrLAN, ccfg.BindAddr, ccfg.ClientAddrs)
	}
	if ccfg.ACL.Tokens.Agent != "agent-token-1" {
		t.Errorf("client config: acl.tokens.agent %q is not the Secret's token", ccfg.ACL.Tokens.Agent)
	}
	if ccfg.Encrypt != c.secrets[gossipKey]["key"] {
		t.Errorf("client config: encrypt is not the Secret's gossip key")
	}
	if !slices.Equal(ccfg.RetryJoin, []string{headless}) {
		t.Errorf("client config: retry_join %v, want the headless Service %s", ccfg.RetryJoin, headless)
	}
	checkAgentPorts(t, cc, ccfg, false)
}

// checkServers checks the server StatefulSet of an overlay, its PDB, and
// the configuration its pods load.
func checkServers(t *testing.T, m *manifests, c *cluster, ss *appsv1.StatefulSet, svc *corev1.Service, dc, headless string) {
	t.Helper()
	ns := ss.Namespace
	replicas := int(*ss.Spec.Replicas)
	if replicas != 3 && replicas != 5 {
		t.Errorf("%d servers: want 3 or 5", replicas)
	}
	if ss.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: want Parallel, or the servers wait for each other forever", ss.Spec.PodManagementPolicy)
	}
	podLabels := ss.Spec.Template.Labels
	selects(t, "StatefulSet", ss.Spec.Selector, podLabels)
	if ss.Spec.ServiceName != svc.Name {
		t.Errorf("StatefulSet serviceName %q, want the headless Service %s", ss.Spec.ServiceName, svc.Name)
	}
	selects(t, "Service "+svc.Name, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, podLabels)
	sc := ss.Spec.Template.Spec.Containers[0]
	for _, sp := range svc.Spec.Ports {
		cp := containerPort(t, sc, sp.TargetPort.String())
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if cp.Protocol != proto || cp.ContainerPort != sp.Port {
			t.Errorf("Service port %s %d/%s targets container port %d/%s", sp.Name, sp.Port, proto, cp.ContainerPort, cp.Protocol)
		}
	}
	var pdbFound bool
	for _, pdb := range m.pdbs {
		if sel, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); sel != nil && sel.Matches(labels.Set(podLabels)) {
			pdbFound = true
			selects(t, "PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector, podLabels)
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || pdb.Spec.MinAvailable != nil {
				t.Errorf("PodDisruptionBudget %s: want maxUnavailable 1 only", pdb.Name)
			}
		}
	}
	if !pdbFound {
		t.Errorf("no PodDisruptionBudget covers the servers")
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Fatalf("StatefulSet: want one volume claim template named data")
	}
	envOrder(t, sc)
	checkLeaderProbe(t, sc)
	wantFieldRef(t, sc, "POD_IP", "status.podIP")
	wantFieldRef(t, sc, "POD_NAME", "metadata.name")
	wantSecretRef(t, sc, "GOSSIP_KEY", gossipKey, "key")

	// What the server agent makes of it.
	sp := c.newPod(t, ss.Name+"-0", ns, "node-1", "10.0.0.10", "10.1.0.1", ss.Spec.Template.Spec, []string{"data"})
	scfg := loadAgentConfig(t, sp)
	if !scfg.Server || scfg.BootstrapExpect != replicas {
		t.Errorf("server config: server=%v bootstrap_expect=%d, want true and %d (the replicas)", scfg.Server, scfg.BootstrapExpect, replicas)
	}
	if scfg.LeaveOnTerminate {
		t.Errorf("server config: leave_on_terminate is on: a rolling restart would shrink the quorum")
	}
	if scfg.Datacenter != dc {
		t.Errorf("server config: datacenter %q, want %q", scfg.Datacenter, dc)
	}
	if scfg.Encrypt != c.secrets[gossipKey]["key"] {
		t.Errorf("server config: encrypt is not the Secret's gossip key")
	}
	if scfg.DataDir != sp.mounts[mountOf(t, sc, "data")] {
		t.Errorf("server config: data_dir %s is not the PVC's mount", scfg.DataDir)
	}
	if scfg.NodeName != sp.name || scfg.BindAddr != sp.podIP || !slices.Equal(scfg.ClientAddrs, []string{sp.podIP}) {
		t.Errorf("server config: node %s bind %s client %v, want the pod's name and IP", scfg.NodeName, scfg.BindAddr, scfg.ClientAddrs)
	}
	if !slices.Equal(scfg.RetryJoin, []string{headless}) {
		t.Errorf("server config: retry_join %v, want the headless Service %s", scfg.RetryJoin, headless)
	}
	checkAgentPorts(t, sc, scfg, true)
	if got, want := ss.Spec.Template.Annotations[checksumAnnotation], configChecksum(m.configMaps[ss.Spec.Template.Spec.Volumes[0].ConfigMap.Name].Data); got != want {
		t.Errorf("StatefulSet annotation %s = %q, want %q", checksumAnnotation, got, want)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func namespaceOf(m *manifests, kind, name string) string {
	switch kind {
	case "Service":
		return m.services[name].Namespace
	case "ConfigMap":
		return m.configMaps[name].Namespace
	case "StatefulSet":
		return m.statefulSets[name].Namespace
	case "DaemonSet":
		return m.daemonSets[name].Namespace
	case "PodDisruptionBudget":
		return m.pdbs[name].Namespace
	}
	return ""
}

// staticHostFiles writes what an operator puts in /etc/tribune on a
// control-plane node: deploy/static-pod/server.hcl and a gossip key file.
func staticHostFiles(t *testing.T, dir, key string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(deployDir(t), "static-pod", "server.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, map[string]string{"server.hcl": string(src), "gossip.hcl": fmt.Sprintf("encrypt = %q\n", key)}); err != nil {
		t.Fatal(err)
	}
}

// TestStaticPodContract checks the static pod: host network, data on the
// host, every control-plane host in retry_join, nothing a static pod cannot
// refer to, and the configuration the agent loads from the host's files.
func TestStaticPodContract(t *testing.T) {
	m := decodeFiles(t, staticPodPath(t))
	sp, ok := m.pods[serverName]
	if !ok || len(m.pods) != 1 {
		t.Fatalf("want one Pod %s", serverName)
	}
	spec := sp.Spec
	if !spec.HostNetwork {
		t.Errorf("static pod: hostNetwork off")
	}
	if spec.ServiceAccountName != "" || len(spec.ImagePullSecrets) > 0 {
		t.Errorf("static pod refers to API objects, which the kubelet cannot resolve for it")
	}
	c := spec.Containers[0]
	for _, e := range c.Env {
		if e.ValueFrom != nil && (e.ValueFrom.SecretKeyRef != nil || e.ValueFrom.ConfigMapKeyRef != nil) {
			t.Errorf("static pod env %s refers to a Secret or ConfigMap", e.Name)
		}
	}
	var hosts []string
	for _, a := range c.Args {
		if h, ok := strings.CutPrefix(a, "-retry-join="); ok {
			hosts = append(hosts, h)
		}
	}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("static pod volume %s is not a hostPath", v.Name)
		}
	}
	// The mirror pod is what the headless Service of the overlays finds:
	// same namespace, labels its selector selects.
	for _, o := range overlays {
		om := decodeFiles(t, renderedPath(t, o))
		svc, ok := om.services[serverName]
		if !ok {
			t.Fatalf("%s: no Service %s", o, serverName)
		}
		if svc.Namespace != sp.Namespace || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sp.Labels)) {
			t.Errorf("%s: Service %s/%s (selector %v) does not select the static pod %s/%s (labels %v)", o, svc.Namespace, svc.Name, svc.Spec.Selector, sp.Namespace, sp.Name, sp.Labels)
		}
	}
	envOrder(t, c)
	checkLeaderProbe(t, c)
	wantFieldRef(t, c, "HOST_IP", "status.hostIP")
	wantFieldRef(t, c, "NODE", "spec.nodeName")

	etc := t.TempDir()
	data := t.TempDir()
	key := gossipKeygen(t)
	staticHostFiles(t, etc, key)
	cl := &cluster{m: m, bin: "tribune", dir: t.TempDir(),
		hostPaths: map[string]map[string]string{"/etc/tribune": {"cp-1": etc}, "/var/lib/tribune": {"cp-1": data}}}
	p := cl.newPod(t, "tribune-server-cp-1", sp.Namespace, "cp-1", "10.2.0.1", "10.2.0.1", spec, nil)
	cfg := loadAgentConfig(t, p)
	if !cfg.Server || cfg.BootstrapExpect != len(hosts) || len(hosts) != 3 {
		t.Errorf("static server: server=%v bootstrap_expect=%d with %d control-plane hosts in retry_join, want 3 and 3", cfg.Server, cfg.BootstrapExpect, len(hosts))
	}
	if cfg.LeaveOnTerminate || cfg.Encrypt != key || cfg.DataDir != data || cfg.BindAddr != p.hostIP || cfg.NodeName != "cp-1" {
		t.Errorf("static server: leave_on_terminate=%v encrypt set=%v data_dir=%s bind=%s node=%s", cfg.LeaveOnTerminate, cfg.Encrypt == key, cfg.DataDir, cfg.BindAddr, cfg.NodeName)
	}
	checkAgentPorts(t, c, cfg, true)
}
