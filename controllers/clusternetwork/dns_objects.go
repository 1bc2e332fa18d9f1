package clusternetwork

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// DNSName names weft-dns's Deployment, Service, ServiceAccount and RBAC.
const DNSName = "weft-dns"

// dnsDomain is the clusterset zone of a ClusterNetwork.
func dnsDomain(cn *fabricv1.ClusterNetwork) string {
	if cn.Spec.DNS.Domain != "" {
		return cn.Spec.DNS.Domain
	}
	return "clusterset.local"
}

// dnsObjects renders weft-dns: a Deployment answering the clusterset zone from the
// ServiceImports and their EndpointSlices, and its Service (what the cluster DNS forwards
// the zone to).
func dnsObjects(namespace string, images Images, cn *fabricv1.ClusterNetwork) []client.Object {
	labels := workloadLabels(DNSName)
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Namespace: namespace, Labels: labels},
	}
	role := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Labels: labels},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: DNSName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: DNSName, Namespace: namespace}},
	}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Namespace: namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": DNSName}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            DNSName,
					PriorityClassName:             "system-cluster-critical",
					TerminationGracePeriodSeconds: ptr.To(int64(5)),
					Containers: []corev1.Container{{
						Name:  "dns",
						Image: images.DNS,
						Args:  []string{"--domain=" + dnsDomain(cn), "--listen=:53", "--ttl=5"},
						Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP}},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")}},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Namespace: namespace, Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app.kubernetes.io/name": DNSName},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromString("dns-tcp"), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	return []client.Object{sa, role, binding, dep, svc}
}

// The cluster DNS (CoreDNS, ConfigMap kube-system/coredns) forwards the clusterset zone to
// weft-dns through a server block between these markers, which the operator owns.
const (
	corefileBegin = "# weft: begin (the clusterset zone is answered by weft-dns; managed by weft-operator)"
	corefileEnd   = "# weft: end"
)

var weftBlock = regexp.MustCompile(`(?s)\n?` + regexp.QuoteMeta(corefileBegin) + `.*?` + regexp.QuoteMeta(corefileEnd) + `\n?`)

// WithClusterSetZone returns corefile with a server block forwarding domain to server (an
// address), replacing the block weft wrote before; an empty server removes it.
func WithClusterSetZone(corefile, domain, server string) string {
	out := weftBlock.ReplaceAllString(corefile, "\n")
	out = strings.TrimRight(out, "\n") + "\n"
	if server == "" {
		return out
	}
	return out + fmt.Sprintf("%s\n%s:53 {\n    errors\n    forward . %s\n}\n%s\n", corefileBegin, domain, server, corefileEnd)
}

// +kubebuilder:rbac:groups="",resources=configmaps,resourceNames=coredns,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,namespace=weft-system,resources=deployments,verbs=get;list;watch;create;update;patch;delete

// ensureClusterDNS makes CoreDNS forward the clusterset zone to weft-dns's Service, once it
// has a ClusterIP, by a server block in ConfigMap kube-system/coredns (CoreDNS's `reload`
// plugin picks it up). The operator may read and write only ConfigMaps named coredns. A
// cluster whose DNS is not configured that way is left alone (forward the zone to the
// Service weft-dns by hand).
func (r *Reconciler) ensureClusterDNS(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	if r.Images.DNS == "" {
		return ctrl.Result{}, nil
	}
	svc := &corev1.Service{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: DNSName}, svc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return ctrl.Result{}, nil
	}
	cm := &corev1.ConfigMap{}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	if err := reader.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: "coredns"}, cm); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	want := WithClusterSetZone(cm.Data["Corefile"], dnsDomain(cn), svc.Spec.ClusterIP)
	if cm.Data["Corefile"] == want || cm.Data["Corefile"] == "" {
		return ctrl.Result{}, nil
	}
	// The finalizer goes on before the block goes in: deleting the ClusterNetwork must
	// always take the block out again.
	if !controllerutil.ContainsFinalizer(cn, fabricv1.FinalizerClusterDNS) {
		// Patched on a copy, and not copied back: this reconcile's status patch (a diff
		// against the object as read) then carries status only.
		with := cn.DeepCopy()
		controllerutil.AddFinalizer(with, fabricv1.FinalizerClusterDNS)
		if err := r.Patch(ctx, with, client.MergeFromWithOptions(cn, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer %s: %w", fabricv1.FinalizerClusterDNS, err)
		}
	}
	cm.Data["Corefile"] = want
	return ctrl.Result{}, r.Update(ctx, cm)
}

// removeClusterDNS takes weft's server block out of the cluster DNS's Corefile, then the
// finalizer off the ClusterNetwork being deleted.
func (r *Reconciler) removeClusterDNS(ctx context.Context, cn *fabricv1.ClusterNetwork) error {
	if !controllerutil.ContainsFinalizer(cn, fabricv1.FinalizerClusterDNS) {
		return nil
	}
	cm := &corev1.ConfigMap{}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	err := reader.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: "coredns"}, cm)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	default:
		if without := WithClusterSetZone(cm.Data["Corefile"], "", ""); without != cm.Data["Corefile"] && cm.Data["Corefile"] != "" {
			cm.Data["Corefile"] = without
			if err := r.Update(ctx, cm); err != nil {
				return fmt.Errorf("removing the clusterset zone from the Corefile: %w", err)
			}
		}
	}
	base := cn.DeepCopy()
	controllerutil.RemoveFinalizer(cn, fabricv1.FinalizerClusterDNS)
	return r.Patch(ctx, cn, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}
