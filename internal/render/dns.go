package render

import (
	"fmt"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// DNSName names weft-dns's Deployment, Service, ServiceAccount and RBAC.
const DNSName = "weft-dns"

// DNSDomain is the clusterset zone of a ClusterNetwork.
func DNSDomain(cn *fabricv1.ClusterNetwork) string {
	if cn.Spec.DNS.Domain != "" {
		return cn.Spec.DNS.Domain
	}
	return "clusterset.local"
}

// DNS renders weft-dns: a Deployment answering the clusterset zone from the
// ServiceImports and their EndpointSlices, and its Service (what the cluster DNS forwards
// the zone to).
func DNS(namespace string, images Images, cn *fabricv1.ClusterNetwork) []client.Object {
	labels := workloadLabels(DNSName)
	metricsArg, metricsPort := secureMetrics(DNSMetricsPort)
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Namespace: namespace, Labels: labels},
	}
	role := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: DNSName, Labels: labels},
		Rules: append([]rbacv1.PolicyRule{
			{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		}, metricsReviews...),
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
						Args:  []string{"--domain=" + DNSDomain(cn), "--listen=:53", "--ttl=5", metricsArg},
						Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP}, metricsPort},
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
