package olmbundle

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/lib/version"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/internal/images"
)

// olmCertDir is where OLM mounts the webhook serving certificate it issues
// (tls.crt, tls.key) into the deployment that serves a webhook definition.
const olmCertDir = "/tmp/k8s-webhook-server/serving-certs"

// installed sorts the rendered install objects by what the CSV does with them.
type installed struct {
	crds        []*apiextensionsv1.CustomResourceDefinition
	crdObjects  []*unstructured.Unstructured
	deployment  *appsv1.Deployment
	clusterRole map[string]rbacv1.ClusterRole
	role        map[string]rbacv1.Role
	bindings    []*unstructured.Unstructured // ClusterRoleBindings and RoleBindings
	webhooks    []admissionv1.ValidatingWebhook
	extra       []*unstructured.Unstructured // shipped as they are (aggregated ClusterRoles)
}

func from[T any](u *unstructured.Unstructured) (*T, error) {
	var t T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &t); err != nil {
		return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return &t, nil
}

// sortInstall files each object of config/default where the CSV needs it. Objects OLM makes
// itself (the Namespace, the ServiceAccount, the webhook Service, the bindings of the
// operator's roles) are left out.
func sortInstall(objs []*unstructured.Unstructured) (*installed, error) {
	in := &installed{clusterRole: map[string]rbacv1.ClusterRole{}, role: map[string]rbacv1.Role{}}
	var clusterRoles []*unstructured.Unstructured
	for _, u := range objs {
		switch u.GetKind() {
		case "CustomResourceDefinition":
			crd, err := from[apiextensionsv1.CustomResourceDefinition](u)
			if err != nil {
				return nil, err
			}
			in.crds = append(in.crds, crd)
			in.crdObjects = append(in.crdObjects, u)
		case "Deployment":
			if in.deployment != nil {
				return nil, fmt.Errorf("config/default has two Deployments (%s, %s); the CSV installs one", in.deployment.Name, u.GetName())
			}
			d, err := from[appsv1.Deployment](u)
			if err != nil {
				return nil, err
			}
			in.deployment = d
		case "ClusterRole":
			clusterRoles = append(clusterRoles, u)
		case "Role":
			r, err := from[rbacv1.Role](u)
			if err != nil {
				return nil, err
			}
			in.role[r.Name] = *r
		case "ClusterRoleBinding", "RoleBinding":
			in.bindings = append(in.bindings, u)
		case "ValidatingWebhookConfiguration":
			w, err := from[admissionv1.ValidatingWebhookConfiguration](u)
			if err != nil {
				return nil, err
			}
			in.webhooks = append(in.webhooks, w.Webhooks...)
		case "Namespace", "ServiceAccount", "Service":
		default:
			return nil, fmt.Errorf("config/default has a %s (%s) the bundle does not know what to do with", u.GetKind(), u.GetName())
		}
	}
	if in.deployment == nil {
		return nil, fmt.Errorf("config/default has no Deployment")
	}
	bound := map[string]bool{}
	for _, b := range in.bindings {
		ref, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
		kind, _, _ := unstructured.NestedString(b.Object, "roleRef", "kind")
		bound[kind+"/"+ref] = true
	}
	for _, u := range clusterRoles {
		if !bound["ClusterRole/"+u.GetName()] {
			in.extra = append(in.extra, u)
			continue
		}
		r, err := from[rbacv1.ClusterRole](u)
		if err != nil {
			return nil, err
		}
		in.clusterRole[r.Name] = *r
	}
	return in, nil
}

// buildCSV completes the base CSV from config/default, the samples and the image table. It
// returns the CSV and the extra manifests (CRDs, unbound ClusterRoles) that ship beside it.
func buildCSV(o Options, baseYAML, icon []byte, install, samples []*unstructured.Unstructured) (*operatorsv1alpha1.ClusterServiceVersion, []*unstructured.Unstructured, error) {
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	if err := yaml.UnmarshalStrict(baseYAML, csv); err != nil {
		return nil, nil, fmt.Errorf("config/manifests/bases: %w", err)
	}
	in, err := sortInstall(install)
	if err != nil {
		return nil, nil, err
	}
	v, err := semver.Parse(o.Version)
	if err != nil {
		return nil, nil, fmt.Errorf("version %q: %w", o.Version, err)
	}
	csv.Name = Package + ".v" + o.Version
	csv.Spec.Version = version.OperatorVersion{Version: v}
	csv.Spec.Icon = []operatorsv1alpha1.Icon{{Data: base64.StdEncoding.EncodeToString(icon), MediaType: "image/svg+xml"}}
	operatorImage := images.Ref("weft-operator", o.Version)
	csv.Annotations["containerImage"] = operatorImage
	for _, im := range images.All {
		csv.Spec.RelatedImages = append(csv.Spec.RelatedImages, operatorsv1alpha1.RelatedImage{Name: im.Name, Image: images.Ref(im.Name, o.Version)})
	}

	examples, err := almExamples(samples)
	if err != nil {
		return nil, nil, err
	}
	csv.Annotations["alm-examples"] = examples

	owned, err := ownedCRDs(csv.Spec.CustomResourceDefinitions.Owned, in.crds)
	if err != nil {
		return nil, nil, err
	}
	csv.Spec.CustomResourceDefinitions.Owned = owned

	deploy, webhookPort, err := operatorDeployment(in.deployment, o.Version)
	if err != nil {
		return nil, nil, err
	}
	sa := deploy.Spec.Template.Spec.ServiceAccountName
	strategy := operatorsv1alpha1.StrategyDetailsDeployment{
		DeploymentSpecs: []operatorsv1alpha1.StrategyDeploymentSpec{{Name: deploy.Name, Label: deploy.Labels, Spec: deploy.Spec}},
	}
	for _, b := range in.bindings {
		if !bindsTo(b, sa) {
			continue
		}
		ref, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
		kind, _, _ := unstructured.NestedString(b.Object, "roleRef", "kind")
		switch {
		case b.GetKind() == "ClusterRoleBinding":
			strategy.ClusterPermissions = append(strategy.ClusterPermissions, operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: sa, Rules: in.clusterRole[ref].Rules})
		case kind == "Role":
			strategy.Permissions = append(strategy.Permissions, operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: sa, Rules: in.role[ref].Rules})
		default:
			return nil, nil, fmt.Errorf("RoleBinding %s binds ClusterRole %s in one namespace; the CSV cannot say that", b.GetName(), ref)
		}
	}
	if len(strategy.ClusterPermissions) == 0 {
		return nil, nil, fmt.Errorf("no ClusterRoleBinding binds ServiceAccount %s", sa)
	}
	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment, StrategySpec: strategy}

	for _, w := range in.webhooks {
		def := operatorsv1alpha1.WebhookDescription{
			GenerateName:            w.Name,
			Type:                    operatorsv1alpha1.ValidatingAdmissionWebhook,
			DeploymentName:          deploy.Name,
			ContainerPort:           443,
			TargetPort:              ptr.To(intstr.FromInt32(webhookPort)),
			Rules:                   w.Rules,
			FailurePolicy:           w.FailurePolicy,
			MatchPolicy:             w.MatchPolicy,
			ObjectSelector:          w.ObjectSelector,
			SideEffects:             w.SideEffects,
			TimeoutSeconds:          w.TimeoutSeconds,
			AdmissionReviewVersions: w.AdmissionReviewVersions,
		}
		if w.ClientConfig.Service != nil {
			def.WebhookPath = w.ClientConfig.Service.Path
		}
		csv.Spec.WebhookDefinitions = append(csv.Spec.WebhookDefinitions, def)
	}

	extra := append(slices.Clone(in.crdObjects), in.extra...)
	return csv, extra, nil
}

func bindsTo(b *unstructured.Unstructured, sa string) bool {
	subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
	for _, s := range subjects {
		m, _ := s.(map[string]any)
		if m["kind"] == "ServiceAccount" && m["name"] == sa {
			return true
		}
	}
	return false
}

// operatorDeployment adapts config/default's Deployment to OLM: the image at this version,
// every operand image named explicitly (so mirroring tools rewrite them with relatedImages),
// and the webhook certificate OLM issues instead of the operator's own. It returns the
// deployment and the webhook's container port.
func operatorDeployment(d *appsv1.Deployment, ver string) (*appsv1.Deployment, int32, error) {
	d = d.DeepCopy()
	spec := &d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		return nil, 0, fmt.Errorf("deployment %s has %d containers; the bundle expects the operator alone", d.Name, len(spec.Containers))
	}
	c := &spec.Containers[0]
	c.Image = images.Ref("weft-operator", ver)
	var port int32
	for _, p := range c.Ports {
		if p.Name == "webhook" {
			port = p.ContainerPort
		}
	}
	if port == 0 {
		return nil, 0, fmt.Errorf("deployment %s: the operator container has no port named webhook", d.Name)
	}
	var certVolume string
	for _, m := range c.VolumeMounts {
		for _, a := range c.Args {
			if a == "--webhook-cert-dir="+m.MountPath {
				certVolume = m.Name
			}
		}
	}
	c.Args = slices.DeleteFunc(c.Args, func(a string) bool {
		return strings.HasPrefix(a, "--webhook-cert-dir=") || strings.HasPrefix(a, "--webhook-certs=")
	})
	c.Args = append(c.Args, "--webhook-certs=provided", "--webhook-cert-dir="+olmCertDir)
	for _, flag := range []struct{ flag, image string }{
		{"--agent-image", "weft-agent"}, {"--ovs-image", "weft-ovs"},
		{"--gateway-image", "weft-gateway"}, {"--dns-image", "weft-dns"},
	} {
		c.Args = append(c.Args, flag.flag+"="+images.Ref(flag.image, ver))
	}
	if certVolume != "" {
		c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == certVolume })
		spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == certVolume })
	}
	return d, port, nil
}

// ownedCRDs lists every served version of every CRD, with the base's display name,
// description and descriptors for that CRD; a CRD the base does not describe is an error
// (the good-practices validator wants a description for each).
func ownedCRDs(base []operatorsv1alpha1.CRDDescription, crds []*apiextensionsv1.CustomResourceDefinition) ([]operatorsv1alpha1.CRDDescription, error) {
	byName := map[string]operatorsv1alpha1.CRDDescription{}
	for _, d := range base {
		byName[d.Name] = d
	}
	var owned []operatorsv1alpha1.CRDDescription
	for _, crd := range crds {
		d, ok := byName[crd.Name]
		if !ok {
			return nil, fmt.Errorf("CRD %s has no entry in config/manifests/bases: give it a displayName and description", crd.Name)
		}
		delete(byName, crd.Name)
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			e := d
			e.Version, e.Kind = v.Name, crd.Spec.Names.Kind
			owned = append(owned, e)
		}
	}
	for name := range byName {
		return nil, fmt.Errorf("config/manifests/bases describes CRD %s, which config/default does not install", name)
	}
	slices.SortStableFunc(owned, func(a, b operatorsv1alpha1.CRDDescription) int {
		return strings.Compare(a.Name+"/"+a.Version, b.Name+"/"+b.Version)
	})
	return owned, nil
}

// almExamples is the samples as a JSON array, in the kustomization's order.
func almExamples(samples []*unstructured.Unstructured) (string, error) {
	var list []map[string]any
	for _, s := range samples {
		list = append(list, s.Object)
	}
	js, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return "", err
	}
	return string(js), nil
}
