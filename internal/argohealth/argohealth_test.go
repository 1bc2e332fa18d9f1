package argohealth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

const root = "../.."

type testFile struct {
	Tests []struct {
		HealthStatus Status `json:"healthStatus"`
		InputPath    string `json:"inputPath"`
	} `json:"tests"`
}

func loadObject(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "config", "argocd", path))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	u := &unstructured.Unstructured{} // numbers as int64, as the API machinery decodes them
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u.Object
}

// The scripts pass their test cases, in Argo CD's test format.
func TestHealthScriptsPassTheirTestCases(t *testing.T) {
	for script, cases := range map[string]string{"health.lua": "health_test.yaml", "serviceexport.lua": "serviceexport_health_test.yaml"} {
		src, err := Load(root, script)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(root, "config", "argocd", cases))
		if err != nil {
			t.Fatal(err)
		}
		var tf testFile
		if err := yaml.UnmarshalStrict(data, &tf); err != nil {
			t.Fatalf("%s: %v", cases, err)
		}
		if len(tf.Tests) < 4 {
			t.Errorf("%s has %d cases", cases, len(tf.Tests))
		}
		for _, tc := range tf.Tests {
			got, err := Run(src, loadObject(t, tc.InputPath))
			if err != nil {
				t.Errorf("%s on %s: %v", script, tc.InputPath, err)
				continue
			}
			if got != tc.HealthStatus {
				t.Errorf("%s on %s = %+v, want %+v", script, tc.InputPath, got, tc.HealthStatus)
			}
		}
	}
}

// Argo CD's answer agrees with kstatus (Flux, cli-utils) wherever the operator can be seen:
// once it has written observedGeneration. (Before that kstatus says Current for want of a
// status; the script says Progressing. Ready=False alone never comes from weft's operator,
// which always sets Reconciling or Stalled with it; the script calls it Degraded.)
func TestHealthScriptAgreesWithKstatus(t *testing.T) {
	src, err := Load(root, "health.lua")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"clusternetwork-ready.yaml", "clusternetwork-rolling-out.yaml", "clusternetwork-new-generation.yaml", "clusterpeer-stalled.yaml"} {
		obj := loadObject(t, "testdata/"+in)
		got, err := Run(src, obj)
		if err != nil {
			t.Fatal(err)
		}
		res, err := kstatus.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			t.Fatal(err)
		}
		if want := ArgoStatus(res.Status); got.Status != want {
			t.Errorf("%s: kstatus %s (Argo CD %s), script %s", in, res.Status, want, got.Status)
		}
	}
}

func TestEveryCheckIsInTheConfigMapPatch(t *testing.T) {
	want, err := ConfigMapPatch(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "config", "argocd", "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("config/argocd/argocd-cm-patch.yaml is stale: run `make generate-argocd`")
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(got, &cm); err != nil {
		t.Fatal(err)
	}
	for _, c := range Checks {
		script, _ := Load(root, c.Script)
		if strings.TrimSpace(cm.Data[c.Key()]) != strings.TrimSpace(script) {
			t.Errorf("argocd-cm key %s does not hold %s", c.Key(), c.Script)
		}
	}
}

func TestScriptErrorsAreReported(t *testing.T) {
	if _, err := Run(`return {status = "Fine"}`, map[string]any{}); err == nil {
		t.Error("an unknown status was accepted")
	}
	if _, err := Run(`return os.exit(1)`, map[string]any{}); err == nil {
		t.Error("a script reached the os library")
	}
}
