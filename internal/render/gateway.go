package render

import (
	"fmt"

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

// GatewayName names the gateways' DaemonSet, ServiceAccount and RBAC.
const GatewayName = "weft-gateway"

// annotationTunnelConfig on the gateways' pod template holds the tunnel driver and port.
const annotationTunnelConfig = "fabric.weft.dev/tunnel-config"

// The operator holds what it grants the gateways:
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricgateways,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricgateways/status,verbs=get;update;patch

// Gateway renders what runs on gateway nodes (those spec.gateways.nodeSelector picks).
// A gateway reads the ClusterNetwork, the ClusterPeers and its Node, reports itself in its
// FabricGateway and renews its Lease.
func Gateway(namespace string, images Images, cn *fabricv1.ClusterNetwork) []client.Object {
	labels := workloadLabels(GatewayName)
	metricsArg, metricsPort := secureMetrics(GatewayMetricsPort)
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Namespace: namespace, Labels: labels},
	}
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: GatewayName, Namespace: namespace}}
	clusterRole := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Labels: labels},
		Rules: append([]rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"clusternetworks", "clusterpeers"}, Verbs: []string{"get", "list", "watch"}},
			// Its own FabricGateway (the node identity policy holds it to its own): created
			// once, then its status; the spec (a key rotation request) is the administrator's.
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"fabricgateways"}, Verbs: []string{"get", "list", "watch", "create"}},
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"fabricgateways/status"}, Verbs: []string{"update", "patch"}},
			// Events on ClusterPeers when a peer's gateway fails or comes back; events about
			// cluster-scoped objects live in the default namespace.
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		}, metricsReviews...),
	}
	clusterBinding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: GatewayName},
		Subjects:   subjects,
	}
	role := &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Namespace: namespace, Labels: labels},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
			Verbs: []string{"get", "create", "update"}}},
	}
	binding := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Namespace: namespace, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: GatewayName},
		Subjects:   subjects,
	}
	selector := cn.Spec.Gateways.NodeSelector
	if len(selector) == 0 {
		selector = map[string]string{fabricv1.LabelGateway: "true"}
	}
	ds := &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: GatewayName, Namespace: namespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": GatewayName}},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				// Gateways read their tunnel settings when they start: a change rolls them.
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					annotationTunnelConfig: fmt.Sprintf("%s:%d", cn.Spec.Gateways.Tunnel, cn.Spec.Gateways.Port)}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            GatewayName,
					HostNetwork:                   true,
					DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
					PriorityClassName:             "system-node-critical",
					NodeSelector:                  selector,
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To(int64(5)),
					Containers: []corev1.Container{{
						Name:  "gateway",
						Image: images.Gateway,
						Args:  []string{metricsArg},
						Ports: []corev1.ContainerPort{metricsPort},
						Env: []corev1.EnvVar{
							{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
						},
						SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
						VolumeMounts: []corev1.VolumeMount{{Name: "state", MountPath: "/var/lib/weft/gateway"},
							{Name: "wireguard", MountPath: "/var/run/wireguard"}},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
					}},
					Volumes: []corev1.Volume{hostPath("state", "/var/lib/weft/gateway"), hostPath("wireguard", "/var/run/wireguard")},
				},
			},
		},
	}
	return []client.Object{sa, clusterRole, clusterBinding, role, binding, ds}
}
