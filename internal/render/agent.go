package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"

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

// AgentName names the agent's DaemonSet, ServiceAccount and RBAC.
const AgentName = "weft-agent"

// AgentHealthPort serves the agent's /healthz, /readyz and /metrics on the node's loopback.
const AgentHealthPort = 10380

// Images of the node workloads.
type Images struct {
	Agent, OVS string
	// Gateway runs on gateway nodes; empty means no gateways are installed.
	Gateway string
	// DNS answers the clusterset zone (weft-dns); empty means it is not installed.
	DNS string
}

// The operator holds what it grants the agent:
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricnodes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=tiers;fabricpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=bgpnodes,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=bgpnodes/status,verbs=get;update;patch

// Agent renders what runs on every node. The pod template carries a hash of the
// datapath settings, so changing them rolls the agents.
func Agent(namespace string, images Images, cn *fabricv1.ClusterNetwork) []client.Object {
	labels := workloadLabels(AgentName)
	metricsArg, metricsPort := secureMetrics(AgentMetricsPort)
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: AgentName, Namespace: namespace, Labels: labels},
	}
	role := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: AgentName, Labels: labels},
		Rules: append([]rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes", "pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
			// Every node's blocks (checked before they are routed to); the agent reports on
			// its own node's FabricNode (the node identity policy holds it to its own).
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"fabricnodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"fabricnodes/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"clusternetworks", "clusterpeers", "tiers", "fabricpolicies"},
				Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			// The node's BGP speaker: its status object, and what it may announce.
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"bgpnodes"}, Verbs: []string{"get", "create", "update", "delete"}},
			{APIGroups: []string{"fabric.weft.dev"}, Resources: []string{"bgpnodes/status"}, Verbs: []string{"update", "patch"}},
			// What it announces (LoadBalancer and clusterset IPs), read from a watch.
			{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports"}, Verbs: []string{"list", "watch"}},
		}, metricsReviews...),
	}
	// The BGP peers' password Secrets, by name, in the operator's namespace (list and watch
	// are allowed by name only with a field selector on it: the agent watches each one).
	var secrets []string
	if b := cn.Spec.BGP; b != nil {
		for _, p := range b.Peers {
			if p.PasswordSecretRef != nil && !slices.Contains(secrets, p.PasswordSecretRef.Name) {
				secrets = append(secrets, p.PasswordSecretRef.Name)
			}
		}
	}
	sort.Strings(secrets)
	secretRole := &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: metav1.ObjectMeta{Name: AgentName + "-bgp-secrets", Namespace: namespace, Labels: labels},
		Rules:      []rbacv1.PolicyRule{},
	}
	if len(secrets) > 0 {
		secretRole.Rules = append(secretRole.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"},
			ResourceNames: secrets, Verbs: []string{"get", "list", "watch"}})
	}
	secretBinding := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: AgentName + "-bgp-secrets", Namespace: namespace, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: secretRole.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: AgentName, Namespace: namespace}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: AgentName, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: AgentName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: AgentName, Namespace: namespace}},
	}
	mount := func(name, path string) corev1.VolumeMount { return corev1.VolumeMount{Name: name, MountPath: path} }
	privileged := &corev1.SecurityContext{Privileged: ptr.To(true)}
	ds := &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: AgentName, Namespace: namespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": AgentName}},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels,
					Annotations: map[string]string{"fabric.weft.dev/datapath-hash": datapathHash(cn)}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            AgentName,
					HostNetwork:                   true,
					DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
					PriorityClassName:             "system-node-critical",
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To(int64(10)),
					Containers: []corev1.Container{
						{
							Name:            "ovs",
							Image:           images.OVS,
							Args:            []string{"--run-dir=/var/run/openvswitch", "--db-dir=/var/lib/openvswitch", "--log-dir=/var/log/openvswitch"},
							SecurityContext: privileged,
							VolumeMounts: []corev1.VolumeMount{mount("ovs-run", "/var/run/openvswitch"),
								mount("ovs-lib", "/var/lib/openvswitch"), mount("ovs-log", "/var/log/openvswitch"), mount("modules", "/lib/modules")},
							Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
								corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
						},
						{
							Name:  "agent",
							Image: images.Agent,
							// Probes and metrics on the node's loopback only: nothing else on
							// the node's network reaches them; metrics over TLS to readers.
							Args:  []string{fmt.Sprintf("--health-addr=127.0.0.1:%d", AgentHealthPort), metricsArg},
							Ports: []corev1.ContainerPort{metricsPort},
							Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
								FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
								{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
									FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
							SecurityContext: privileged,
							VolumeMounts: []corev1.VolumeMount{mount("cni-conf", "/etc/cni/net.d"), mount("cni-bin", "/opt/cni/bin"),
								mount("weft-run", "/var/run/weft"), mount("weft-lib", "/var/lib/weft"), mount("ovs-run", "/var/run/openvswitch"),
								{Name: "netns", MountPath: "/var/run/netns", MountPropagation: ptr.To(corev1.MountPropagationHostToContainer)}},
							ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Host: "127.0.0.1", Path: "/readyz", Port: intstr.FromInt32(AgentHealthPort)}}, PeriodSeconds: 2},
							LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Host: "127.0.0.1", Path: "/healthz", Port: intstr.FromInt32(AgentHealthPort)}}, PeriodSeconds: 10, FailureThreshold: 6},
							Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
								corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
						},
					},
					Volumes: []corev1.Volume{hostPath("cni-conf", "/etc/cni/net.d"), hostPath("cni-bin", "/opt/cni/bin"),
						hostPath("weft-run", "/var/run/weft"), hostPath("weft-lib", "/var/lib/weft"),
						hostPath("ovs-run", "/var/run/openvswitch"), hostPath("ovs-lib", "/var/lib/openvswitch"),
						hostPath("ovs-log", "/var/log/openvswitch"), hostPath("modules", "/lib/modules"), hostPath("netns", "/var/run/netns")},
				},
			},
		},
	}
	if BackendOf(cn) == fabricv1.DatapathEBPF {
		// No Open vSwitch on an eBPF node; pinned programs, links and maps outlive the agent
		// in the node's bpffs.
		pod := &ds.Spec.Template.Spec
		pod.Containers = pod.Containers[1:]
		pod.Volumes = append(pod.Volumes, hostPath("bpffs", "/sys/fs/bpf"))
		agent := &pod.Containers[len(pod.Containers)-1]
		agent.VolumeMounts = append(agent.VolumeMounts, corev1.VolumeMount{Name: "bpffs", MountPath: "/sys/fs/bpf",
			MountPropagation: ptr.To(corev1.MountPropagationBidirectional)})
	}
	return []client.Object{sa, role, binding, secretRole, secretBinding, ds}
}

// workloadLabels are the labels of a node workload's objects.
func workloadLabels(name string) map[string]string {
	return map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "weft",
		"app.kubernetes.io/managed-by": "weft-operator"}
}

// hostPath is a node directory volume, created when missing.
func hostPath(name, path string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
		Path: path, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}}
}

func datapathHash(cn *fabricv1.ClusterNetwork) string {
	d := cn.Spec.Datapath
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", d.Backend, d.Encapsulation, d.MTU)))
	return hex.EncodeToString(sum[:8])
}

// BackendOf is the datapath backend a ClusterNetwork asks for (ovs when it names none).
func BackendOf(cn *fabricv1.ClusterNetwork) fabricv1.DatapathBackend {
	if cn.Spec.Datapath.Backend == "" {
		return fabricv1.DatapathOVS
	}
	return cn.Spec.Datapath.Backend
}
