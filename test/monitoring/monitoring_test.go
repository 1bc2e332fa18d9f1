package monitoring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/render"
	"github.com/weft-net/weft/internal/testenv"
)

func monitoringObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.Kustomize("config/monitoring")
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// podTemplates are the pod templates of every weft workload: the operator's Deployment from
// config/default, and what the operator renders for a cluster.
func podTemplates(t *testing.T) map[string]corev1.PodTemplateSpec {
	t.Helper()
	out := map[string]corev1.PodTemplateSpec{}
	add := func(u *unstructured.Unstructured) {
		if u.GetKind() != "Deployment" && u.GetKind() != "DaemonSet" {
			return
		}
		var tmpl corev1.PodTemplateSpec
		m, _, _ := unstructured.NestedMap(u.Object, "spec", "template")
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &tmpl); err != nil {
			t.Fatal(err)
		}
		out[u.GetName()] = tmpl
	}
	def, err := testenv.Kustomize("config/default")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range def {
		add(u)
	}
	cn := &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: fabricv1.ClusterNetworkName},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1", PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}}}
	images := render.Images{Agent: "a", OVS: "o", Gateway: "g", DNS: "d"}
	var rendered []client.Object
	rendered = append(rendered, render.Agent("weft-system", images, cn)...)
	rendered = append(rendered, render.Gateway("weft-system", images, cn)...)
	rendered = append(rendered, render.DNS("weft-system", images, cn)...)
	for _, o := range rendered {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		add(&unstructured.Unstructured{Object: m})
	}
	return out
}

// TestPodMonitorsScrapeWhatTheWorkloadsServe: every PodMonitor selects one weft workload
// whose containers declare the port it scrapes, over https; it authenticates with the token
// Secret of a service account bound to weft-metrics-reader; every workload is scraped.
func TestPodMonitorsScrapeWhatTheWorkloadsServe(t *testing.T) {
	objs := monitoringObjects(t)
	tmpls := podTemplates(t)
	byKind := map[string]map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if byKind[o.GetKind()] == nil {
			byKind[o.GetKind()] = map[string]*unstructured.Unstructured{}
		}
		byKind[o.GetKind()][o.GetName()] = o
	}
	scraped := map[string]bool{}
	for name, pm := range byKind["PodMonitor"] {
		sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
		eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		var matched []string
		for w, tmpl := range tmpls {
			if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(tmpl.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 || len(eps) == 0 {
			t.Errorf("PodMonitor %s selects workloads %v with %d endpoints, want one workload", name, matched, len(eps))
			continue
		}
		scraped[matched[0]] = true
		for _, e := range eps {
			ep := e.(map[string]any)
			port, _ := ep["port"].(string)
			if ep["scheme"] != "https" {
				t.Errorf("PodMonitor %s: scheme %v, want https (weft serves metrics to the network over TLS only)", name, ep["scheme"])
			}
			var declared []string
			for _, c := range tmpls[matched[0]].Spec.Containers {
				for _, p := range c.Ports {
					declared = append(declared, p.Name)
				}
			}
			if !slices.Contains(declared, port) {
				t.Errorf("PodMonitor %s scrapes port %q; %s declares %v", name, port, matched[0], declared)
			}
			secret, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name")
			s := byKind["Secret"][secret]
			if s == nil {
				t.Errorf("PodMonitor %s authenticates with Secret %q, which config/monitoring does not make", name, secret)
				continue
			}
			sa := s.GetAnnotations()[corev1.ServiceAccountNameKey]
			bound := false
			for _, b := range byKind["ClusterRoleBinding"] {
				role, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
				subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
				for _, sub := range subjects {
					if m := sub.(map[string]any); role == "weft-metrics-reader" && m["kind"] == "ServiceAccount" && m["name"] == sa && m["namespace"] == s.GetNamespace() {
						bound = true
					}
				}
			}
			if !bound {
				t.Errorf("PodMonitor %s: service account %q of its token is not bound to weft-metrics-reader", name, sa)
			}
		}
	}
	for _, w := range []string{"weft-operator", render.AgentName, render.GatewayName, render.DNSName} {
		if !scraped[w] {
			t.Errorf("no PodMonitor scrapes %s", w)
		}
	}
}

var metricName = regexp.MustCompile(`\bweft_[a-z0-9_]+`)

// TestMonitoringNamesOnlyDocumentedMetrics: every weft metric an alert or a dashboard panel
// uses is one docs/metrics.md documents (histograms by their base name).
func TestMonitoringNamesOnlyDocumentedMetrics(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(weft_[a-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	for _, f := range []string{"prometheusrule.yaml", "grafana/weft.json"} {
		b, err := os.ReadFile(filepath.Join(root, "config", "monitoring", f))
		if err != nil {
			t.Fatal(err)
		}
		used := metricName.FindAllString(string(b), -1)
		if len(used) < 5 {
			t.Errorf("%s names %d weft metrics", f, len(used))
		}
		for _, m := range used {
			base := m
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(m, suffix); ok && documented[b] {
					base = b
				}
			}
			if !documented[base] {
				t.Errorf("%s uses %s, which docs/metrics.md does not document", f, m)
			}
		}
	}
}

// TestAlertRulesPassPromtool extracts the PrometheusRule's groups and runs `promtool check
// rules` on them and `promtool test rules` on config/monitoring/tests/alerts.yaml.
func TestAlertRulesPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: `make test-deps` installs it (hack/apt-install.sh prometheus)")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var rule *unstructured.Unstructured
	for _, o := range monitoringObjects(t) {
		if o.GetKind() == "PrometheusRule" {
			rule = o
		}
	}
	if rule == nil {
		t.Fatal("config/monitoring has no PrometheusRule")
	}
	spec, _, _ := unstructured.NestedMap(rule.Object, "spec")
	rules, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(root, "config", "monitoring", "tests", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
