package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// manifests are the objects of one or more YAML files, strictly decoded
// into the Kubernetes API types and indexed by name.
type manifests struct {
	namespaces   map[string]*corev1.Namespace
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	statefulSets map[string]*appsv1.StatefulSet
	daemonSets   map[string]*appsv1.DaemonSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
	pods         map[string]*corev1.Pod
}

// apiVersions is every kind the deploy files may hold, with its API version.
var apiVersions = map[string]string{
	"Namespace":           "v1",
	"Service":             "v1",
	"ConfigMap":           "v1",
	"Pod":                 "v1",
	"StatefulSet":         "apps/v1",
	"DaemonSet":           "apps/v1",
	"PodDisruptionBudget": "policy/v1",
}

// splitDocs splits a multi-document YAML file on its "---" lines.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if string(bytes.TrimRight(line, " \r\n")) == "---" {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// decodeFiles strictly decodes every document of the files: an unknown
// field, a duplicate key, a wrong type or an unexpected kind fails the test.
func decodeFiles(t *testing.T, paths ...string) *manifests {
	t.Helper()
	m := &manifests{
		namespaces:   map[string]*corev1.Namespace{},
		services:     map[string]*corev1.Service{},
		configMaps:   map[string]*corev1.ConfigMap{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		daemonSets:   map[string]*appsv1.DaemonSet{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},
		pods:         map[string]*corev1.Pod{},
	}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(data) {
			if err := m.add(doc); err != nil {
				t.Fatalf("%s, document %d: %v", path, i+1, err)
			}
		}
	}
	return m
}

func (m *manifests) add(doc []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	want, ok := apiVersions[head.Kind]
	if !ok {
		return fmt.Errorf("unexpected kind %q", head.Kind)
	}
	if head.APIVersion != want {
		return fmt.Errorf("%s %s: apiVersion %q, want %q", head.Kind, head.Metadata.Name, head.APIVersion, want)
	}
	if head.Metadata.Name == "" {
		return fmt.Errorf("%s without a name", head.Kind)
	}
	var obj any
	switch head.Kind {
	case "Namespace":
		o := &corev1.Namespace{}
		m.namespaces[head.Metadata.Name], obj = o, o
	case "Service":
		o := &corev1.Service{}
		m.services[head.Metadata.Name], obj = o, o
	case "ConfigMap":
		o := &corev1.ConfigMap{}
		m.configMaps[head.Metadata.Name], obj = o, o
	case "Pod":
		o := &corev1.Pod{}
		m.pods[head.Metadata.Name], obj = o, o
	case "StatefulSet":
		o := &appsv1.StatefulSet{}
		m.statefulSets[head.Metadata.Name], obj = o, o
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		m.daemonSets[head.Metadata.Name], obj = o, o
	case "PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		m.pdbs[head.Metadata.Name], obj = o, o
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	return nil
}

// configMapNamed returns the ConfigMap a volume refers to.
func (m *manifests) configMapNamed(name string) (*corev1.ConfigMap, error) {
	cm, ok := m.configMaps[name]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s is not defined", name)
	}
	return cm, nil
}

func renderedPath(t testing.TB, overlay string) string {
	return filepath.Join(deployDir(t), "rendered", overlay+".yaml")
}

func staticPodPath(t testing.TB) string {
	return filepath.Join(deployDir(t), "static-pod", "tribune-server.yaml")
}

// TestManifestsDecodeStrictly decodes every manifest of deploy/ (the
// rendered overlays, the kustomize sources and the static pod) into the
// Kubernetes API types, rejecting unknown fields and duplicate keys.
func TestManifestsDecodeStrictly(t *testing.T) {
	var paths []string
	for _, o := range overlays {
		paths = append(paths, renderedPath(t, o))
	}
	paths = append(paths, staticPodPath(t))
	err := filepath.WalkDir(filepath.Join(deployDir(t), "kustomize"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".yaml") && filepath.Base(p) != "kustomization.yaml" {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		m := decodeFiles(t, p)
		n := len(m.namespaces) + len(m.services) + len(m.configMaps) + len(m.statefulSets) + len(m.daemonSets) + len(m.pdbs) + len(m.pods)
		if n == 0 {
			t.Errorf("%s holds no object", p)
		}
	}
}
