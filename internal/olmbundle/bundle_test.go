package olmbundle

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/internal/images"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/version"
)

const root = "../.."

// options are the Makefile's: the committed bundle is generated with them.
func options(t *testing.T) Options {
	t.Helper()
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*\?=\s*(\S+)`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("Makefile sets no %s", name)
		}
		return string(m[1])
	}
	return Options{Root: root, Out: filepath.Join(root, "bundle"), Dockerfile: filepath.Join(root, "bundle.Dockerfile"),
		Version: get("VERSION"), Channels: strings.Split(get("CHANNELS"), ","), DefaultChannel: get("DEFAULT_CHANNEL")}
}

func TestVersionComesFromTheMakefile(t *testing.T) {
	o := options(t)
	if version.Version != "v"+o.Version {
		t.Errorf("internal/version says %s, the Makefile's VERSION %s", version.Version, o.Version)
	}
	kust, err := os.ReadFile(filepath.Join(root, "config", "manager", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "newTag: v" + o.Version; !bytes.Contains(kust, []byte(want)) {
		t.Errorf("config/manager/kustomization.yaml should say %q (the Makefile's VERSION)", want)
	}
}

func TestRegeneratingTheBundleLeavesNoDiff(t *testing.T) {
	o := options(t)
	files, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	err = filepath.WalkDir(o.Out, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(o.Out, path)
			onDisk = append(onDisk, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		path := filepath.Join(o.Out, name)
		if name == dockerfileName {
			path = o.Dockerfile
		} else if i := slices.Index(onDisk, name); i >= 0 {
			onDisk = slices.Delete(onDisk, i, i+1)
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is stale (run `make bundle` and commit it): %v", name, err)
		}
	}
	for _, f := range onDisk {
		t.Errorf("bundle/%s is not generated any more: run `make bundle`", f)
	}
	// Twice in a row gives the same bytes (no map order, no timestamps).
	again, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if !bytes.Equal(files[name], again[name]) {
			t.Errorf("%s differs between two renders", name)
		}
	}
}

func TestBundlePassesOperatorHubValidators(t *testing.T) {
	b, err := manifests.GetBundleFromDir(filepath.Join(root, "bundle", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	validators := append(validation.DefaultBundleValidators,
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.GoodPracticesValidator,
		validation.ObjectValidator,
		validation.AlphaDeprecatedAPIsValidator,
	)
	// k8s-version: check for APIs removed up to the Kubernetes this repository runs.
	results := validators.Validate(b, map[string]string{"k8s-version": "1.37"})
	n := 0
	for _, r := range results {
		for _, e := range r.Errors {
			t.Errorf("%s: error: %s", r.Name, e)
			n++
		}
		for _, w := range r.Warnings {
			t.Errorf("%s: warning: %s", r.Name, w)
			n++
		}
	}
	if n == 0 {
		t.Logf("%d validator results, no errors, no warnings", len(results))
	}
}

// TestBundleLayout checks what the validators do not: the layout OLM and the bundle image
// expect, annotations equal to the Dockerfile's labels, and the CSV's content.
func TestBundleLayout(t *testing.T) {
	o := options(t)
	for _, f := range []string{"manifests/weft.clusterserviceversion.yaml", "metadata/annotations.yaml", "tests/scorecard/config.yaml"} {
		if _, err := os.Stat(filepath.Join(o.Out, f)); err != nil {
			t.Errorf("bundle/%s: %v", f, err)
		}
	}
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	data, err := os.ReadFile(filepath.Join(o.Out, "metadata", "annotations.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &meta); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         "weft",
		"operators.operatorframework.io.bundle.channels.v1":        strings.Join(o.Channels, ","),
		"operators.operatorframework.io.bundle.channel.default.v1": o.DefaultChannel,
	}
	for k, v := range want {
		if meta.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, meta.Annotations[k], v)
		}
	}
	for _, c := range o.Channels {
		if c != "stable" && c != "candidate" {
			t.Errorf("channel %q: weft publishes in stable and candidate", c)
		}
	}
	df, err := os.ReadFile(o.Dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range meta.Annotations {
		if !bytes.Contains(df, []byte("LABEL "+k+"="+v+"\n")) {
			t.Errorf("bundle.Dockerfile lacks LABEL %s=%s", k, v)
		}
	}
	for _, dir := range []string{"manifests", "metadata", "tests/scorecard"} {
		if !bytes.Contains(df, []byte("COPY bundle/"+dir+" /"+dir+"/\n")) {
			t.Errorf("bundle.Dockerfile does not copy bundle/%s to /%s/", dir, dir)
		}
	}

	b, err := manifests.GetBundleFromDir(filepath.Join(o.Out, "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	csv := b.CSV
	if csv.Name != "weft.v"+o.Version || csv.Spec.Version.String() != o.Version {
		t.Errorf("CSV %s version %s, want weft.v%s", csv.Name, csv.Spec.Version, o.Version)
	}
	owned := map[string]bool{}
	for _, d := range csv.Spec.CustomResourceDefinitions.Owned {
		owned[d.Name] = true
		if d.DisplayName == "" || d.Description == "" {
			t.Errorf("owned CRD %s/%s has no displayName or description", d.Name, d.Version)
		}
	}
	for _, crd := range b.V1CRDs {
		if !owned[crd.Name] {
			t.Errorf("CRD %s ships in the bundle but the CSV does not own it", crd.Name)
		}
	}
	// Exactly the CRDs config/crd installs (weft's, ClusterProperty, the MCS kinds).
	var kust struct {
		Resources []string `json:"resources"`
	}
	kb, err := os.ReadFile(filepath.Join(root, "config", "crd", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(kb, &kust); err != nil {
		t.Fatal(err)
	}
	if len(b.V1CRDs) != len(kust.Resources) || len(b.V1CRDs) < 7 {
		t.Errorf("bundle has %d CRDs, want the %d config/crd lists", len(b.V1CRDs), len(kust.Resources))
	}
	var related []string
	for _, r := range csv.Spec.RelatedImages {
		related = append(related, r.Image)
	}
	for _, im := range images.All {
		if !slices.Contains(related, images.Ref(im.Name, o.Version)) {
			t.Errorf("relatedImages lacks %s", images.Ref(im.Name, o.Version))
		}
	}
	deploys := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deploys) != 1 {
		t.Fatalf("%d install deployments, want the operator's", len(deploys))
	}
	c := deploys[0].Spec.Template.Spec.Containers[0]
	if c.Image != images.Ref("weft-operator", o.Version) {
		t.Errorf("operator image %s", c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("operator container needs cpu/memory requests and a memory limit: %v", c.Resources)
	}
	if !slices.Contains(c.Args, "--webhook-certs=provided") || !slices.Contains(c.Args, "--webhook-cert-dir="+olmCertDir) {
		t.Errorf("under OLM the operator must use the certificate OLM mounts: args %v", c.Args)
	}
	// The operator accepts the CSV's arguments as they are.
	cfg := operator.DefaultConfig()
	fs := flag.NewFlagSet("weft-operator", flag.ContinueOnError)
	cfg.AddFlags(fs)
	if err := fs.Parse(c.Args); err != nil {
		t.Errorf("the operator refuses the CSV's args %v: %v", c.Args, err)
	} else if err := cfg.Validate(); err != nil {
		t.Errorf("the CSV's args %v: %v", c.Args, err)
	} else if !cfg.Webhook.CertsProvided || cfg.AgentImage != images.Ref("weft-agent", o.Version) {
		t.Errorf("the CSV's args give %+v", cfg)
	}
	if len(csv.Spec.WebhookDefinitions) == 0 || csv.Spec.WebhookDefinitions[0].DeploymentName != deploys[0].Name {
		t.Errorf("webhook definitions %+v should be served by deployment %s", csv.Spec.WebhookDefinitions, deploys[0].Name)
	}
	if len(csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions) == 0 || len(csv.Spec.InstallStrategy.StrategySpec.Permissions) == 0 {
		t.Error("the CSV needs the operator's ClusterRole and Role from config/rbac")
	}
	supported := map[string]bool{}
	for _, m := range csv.Spec.InstallModes {
		supported[string(m.Type)] = m.Supported
	}
	if !supported["AllNamespaces"] || supported["OwnNamespace"] || supported["SingleNamespace"] || supported["MultiNamespace"] {
		t.Errorf("install modes %v: weft is cluster-wide (AllNamespaces only)", csv.Spec.InstallModes)
	}
	if csv.Annotations["categories"] != "Networking" {
		t.Errorf("category %q", csv.Annotations["categories"])
	}
}

// The generator refuses a config/ it cannot represent instead of dropping parts of it.
func TestOptionsAreChecked(t *testing.T) {
	for _, o := range []Options{
		{Root: ".", Out: "x", Dockerfile: "y", Version: "v0.1.0", Channels: []string{"stable"}, DefaultChannel: "stable"},
		{Root: ".", Out: "x", Dockerfile: "y", Version: "0.1.0", Channels: []string{"stable"}, DefaultChannel: "fast"},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
