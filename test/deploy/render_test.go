package deploy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

var update = flag.Bool("update", false, "rewrite deploy/rendered from the kustomize overlays")

// checksumAnnotation is the pod template annotation that holds the
// checksum of the ConfigMap the pods mount, so that a change of the
// configuration changes the template and rolls the pods.
const checksumAnnotation = "tribune.io/config-checksum"

// overlays are the overlays of deploy/kustomize/overlays (two datacenters,
// and dc1 with static-pod servers), each rendered
// to deploy/rendered/<name>.yaml.
var overlays = []string{"dc1", "dc2", "dc1-static"}

// deployDir returns the repository's deploy/ directory.
func deployDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// configChecksum is the checksum of a ConfigMap's data: SHA-256 over every
// key and value in key order, each followed by a NUL byte.
func configChecksum(data map[string]string) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%s\x00", k, data[k])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// render builds one overlay with kustomize and sets the checksum
// annotation on every pod template that mounts a ConfigMap of the output.
func render(t testing.TB, overlay string) []byte {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), filepath.Join(deployDir(t), "kustomize", "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	if err := annotateChecksums(m); err != nil {
		t.Fatalf("%s: %v", overlay, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("%s: %v", overlay, err)
	}
	header := fmt.Sprintf("# Rendered from deploy/kustomize/overlays/%s by `go test ./test/deploy -update`.\n# Do not edit: change the kustomize files and render again.\n", overlay)
	return append([]byte(header), out...)
}

func annotateChecksums(m resmap.ResMap) error {
	configMaps := map[string]map[string]string{}
	for _, r := range m.Resources() {
		if r.GetKind() == "ConfigMap" {
			configMaps[r.GetName()] = r.GetDataMap()
		}
	}
	for _, r := range m.Resources() {
		if k := r.GetKind(); k != "StatefulSet" && k != "DaemonSet" {
			continue
		}
		vols, err := r.Pipe(kyaml.Lookup("spec", "template", "spec", "volumes"))
		if err != nil {
			return fmt.Errorf("%s %s: %w", r.GetKind(), r.GetName(), err)
		}
		var mounted []string
		if vols != nil {
			elems, err := vols.Elements()
			if err != nil {
				return err
			}
			for _, v := range elems {
				if n, _ := v.GetString("configMap.name"); n != "" {
					mounted = append(mounted, n)
				}
			}
		}
		if len(mounted) != 1 {
			return fmt.Errorf("%s %s mounts %d ConfigMaps, want 1", r.GetKind(), r.GetName(), len(mounted))
		}
		data, ok := configMaps[mounted[0]]
		if !ok {
			return fmt.Errorf("%s %s mounts ConfigMap %s, which the overlay does not define", r.GetKind(), r.GetName(), mounted[0])
		}
		if _, err := r.Pipe(kyaml.LookupCreate(kyaml.MappingNode, "spec", "template", "metadata", "annotations"),
			kyaml.SetField(checksumAnnotation, kyaml.NewStringRNode(configChecksum(data)))); err != nil {
			return fmt.Errorf("%s %s: annotate: %w", r.GetKind(), r.GetName(), err)
		}
	}
	return nil
}

// TestRenderedUpToDate checks that deploy/rendered holds what the kustomize
// overlays render to, so the plain YAML and the kustomize files cannot
// drift apart. With -update it rewrites deploy/rendered.
func TestRenderedUpToDate(t *testing.T) {
	for _, o := range overlays {
		got := render(t, o)
		path := filepath.Join(deployDir(t), "rendered", o+".yaml")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (render it with go test ./test/deploy -run TestRenderedUpToDate -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what deploy/kustomize/overlays/%s renders to; run go test ./test/deploy -run TestRenderedUpToDate -update", path, o)
		}
	}
}
