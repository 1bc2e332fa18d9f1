// Package olmbundle generates weft's OLM bundle (bundle/ and bundle.Dockerfile) from config/:
// the install kustomization (config/default), the samples (config/samples), the hand-written
// ClusterServiceVersion parts (config/manifests) and the image table (internal/images). The
// output depends on nothing but those files and the options, so regenerating it leaves no diff.
//
// It neither builds nor pushes the bundle image, and it does not talk to a cluster.
package olmbundle

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Package is the bundle's OLM package name.
const Package = "weft"

// Options say where config/ is, where the bundle goes and what it is called.
type Options struct {
	// Root is the repository root (config/ is read from it).
	Root string
	// Out receives manifests/, metadata/ and tests/ (normally Root/bundle).
	Out string
	// Dockerfile is where bundle.Dockerfile is written (normally Root/bundle.Dockerfile);
	// its paths are relative to Root.
	Dockerfile string
	// Version is the operator's version, without a leading v.
	Version string
	// Channels the bundle is published in; DefaultChannel is one of them.
	Channels       []string
	DefaultChannel string
}

// Validate reports every bad option at once.
func (o Options) Validate() error {
	var errs []string
	if o.Root == "" || o.Out == "" || o.Dockerfile == "" {
		errs = append(errs, "root, output directory and Dockerfile path are required")
	}
	if o.Version == "" || strings.HasPrefix(o.Version, "v") {
		errs = append(errs, fmt.Sprintf("version %q must be set and have no leading v", o.Version))
	}
	if len(o.Channels) == 0 || !slices.Contains(o.Channels, o.DefaultChannel) {
		errs = append(errs, fmt.Sprintf("default channel %q must be one of the channels %v", o.DefaultChannel, o.Channels))
	}
	if len(errs) > 0 {
		return fmt.Errorf("bundle options: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Generate writes the bundle, replacing what was in Out.
func Generate(o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	files, err := Render(o)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(o.Out); err != nil {
		return err
	}
	for name, data := range files {
		path := filepath.Join(o.Out, name)
		if name == dockerfileName {
			path = o.Dockerfile
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// dockerfileName is bundle.Dockerfile's key in Render's result.
const dockerfileName = "../bundle.Dockerfile"

// Render returns the bundle's files by path under Out (bundle.Dockerfile as
// "../bundle.Dockerfile").
func Render(o Options) (map[string][]byte, error) {
	install, err := kustomize(filepath.Join(o.Root, "config", "default"))
	if err != nil {
		return nil, err
	}
	samples, err := kustomize(filepath.Join(o.Root, "config", "samples"))
	if err != nil {
		return nil, err
	}
	base, err := os.ReadFile(filepath.Join(o.Root, "config", "manifests", "bases", Package+".clusterserviceversion.yaml"))
	if err != nil {
		return nil, err
	}
	icon, err := os.ReadFile(filepath.Join(o.Root, "config", "manifests", "icon.svg"))
	if err != nil {
		return nil, err
	}
	csv, extra, err := buildCSV(o, base, icon, install, samples)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	if files["manifests/"+Package+".clusterserviceversion.yaml"], err = marshal(csv); err != nil {
		return nil, err
	}
	for _, obj := range extra {
		if files["manifests/"+manifestName(obj)], err = marshal(obj.Object); err != nil {
			return nil, err
		}
	}
	annotations := bundleAnnotations(o)
	if files["metadata/annotations.yaml"], err = marshal(map[string]any{"annotations": annotations}); err != nil {
		return nil, err
	}
	files["tests/scorecard/config.yaml"] = scorecardConfig()
	files[dockerfileName] = dockerfile(annotations, o)
	return files, nil
}

// kustomize renders a kustomization directory.
func kustomize(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

// manifestName names extra manifests the way operator-sdk does: CRDs as
// <group>_<plural>.yaml, anything else as <name>_<group>_<version>_<kind>.yaml.
func manifestName(obj *unstructured.Unstructured) string {
	if obj.GetKind() == "CustomResourceDefinition" {
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
		return group + "_" + plural + ".yaml"
	}
	gv := strings.ReplaceAll(obj.GetAPIVersion(), "/", "_")
	if !strings.Contains(gv, "_") {
		gv = "v1_" + gv
	}
	return fmt.Sprintf("%s_%s_%s.yaml", obj.GetName(), gv, strings.ToLower(obj.GetKind()))
}

// marshal writes YAML with sorted keys, without the empty fields Go types carry
// (creationTimestamp: null, status: {}) and without a top-level status.
func marshal(v any) ([]byte, error) {
	js, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m any
	if err := yaml.Unmarshal(js, &m); err != nil {
		return nil, err
	}
	prune(m)
	if top, ok := m.(map[string]any); ok {
		delete(top, "status") // a manifest is a desired state
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte("---\n"), bytes.TrimLeft(out, "\n")...), nil
}

// prune drops creationTimestamp: null and empty status maps, recursively.
func prune(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if k == "creationTimestamp" && val == nil {
				delete(t, k)
				continue
			}
			if sub, ok := val.(map[string]any); ok && k == "status" && len(sub) == 0 {
				delete(t, k)
				continue
			}
			prune(val)
		}
	case []any:
		for _, e := range t {
			prune(e)
		}
	}
}

// bundleAnnotations are metadata/annotations.yaml's (and bundle.Dockerfile's labels).
func bundleAnnotations(o Options) map[string]string {
	return map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         Package,
		"operators.operatorframework.io.bundle.channels.v1":        strings.Join(o.Channels, ","),
		"operators.operatorframework.io.bundle.channel.default.v1": o.DefaultChannel,
		"operators.operatorframework.io.test.mediatype.v1":         "scorecard+v1",
		"operators.operatorframework.io.test.config.v1":            "tests/scorecard/",
	}
}

// dockerfile builds the bundle image: the same annotations as labels, and the three
// directories at the image's root.
func dockerfile(annotations map[string]string, o Options) []byte {
	rel, err := filepath.Rel(o.Root, o.Out)
	if err != nil || strings.HasPrefix(rel, "..") {
		rel = "bundle"
	}
	var b strings.Builder
	b.WriteString("# Generated by `make bundle` (internal/olmbundle); do not edit.\n")
	b.WriteString("#   docker build -f bundle.Dockerfile -t ghcr.io/weft-net/weft-bundle:v" + o.Version + " .\n")
	b.WriteString("FROM scratch\n\n")
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "LABEL %s=%s\n", k, annotations[k])
	}
	fmt.Fprintf(&b, "\nCOPY %s/manifests /manifests/\nCOPY %s/metadata /metadata/\nCOPY %s/tests/scorecard /tests/scorecard/\n", rel, rel, rel)
	return []byte(b.String())
}

// ScorecardVersion is the operator-sdk release whose scorecard-test image runs the tests.
const ScorecardVersion = "v1.42.0"

// scorecardConfig is the default scorecard suite: the basic spec check and the OLM checks.
func scorecardConfig() []byte {
	var b strings.Builder
	b.WriteString(`# Generated by ` + "`make bundle`" + ` (internal/olmbundle); do not edit.
# Run against a cluster with OLM: operator-sdk scorecard bundle/
apiVersion: scorecard.operatorframework.io/v1alpha3
kind: Configuration
metadata:
  name: config
stages:
- parallel: true
  tests:
`)
	for _, t := range []struct{ suite, name string }{
		{"basic", "basic-check-spec"},
		{"olm", "olm-bundle-validation"},
		{"olm", "olm-crds-have-validation"},
		{"olm", "olm-crds-have-resources"},
		{"olm", "olm-spec-descriptors"},
		{"olm", "olm-status-descriptors"},
	} {
		fmt.Fprintf(&b, "  - entrypoint:\n    - scorecard-test\n    - %s\n    image: quay.io/operator-framework/scorecard-test:%s\n    labels:\n      suite: %s\n      test: %s-test\n",
			t.name, ScorecardVersion, t.suite, t.name)
	}
	b.WriteString("storage:\n  spec:\n    mountPath: {}\n")
	return []byte(b.String())
}
