package render

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The workloads' /metrics over TLS, for callers the API server authorizes (bind ClusterRole
// weft-metrics-reader to Prometheus); the container port is named "metrics", which the
// PodMonitors in config/monitoring scrape.
const (
	AgentMetricsPort   = 10381
	GatewayMetricsPort = 10392
	DNSMetricsPort     = 9154
)

// The operator holds what it grants for them:
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsReviews lets a workload ask the API server who calls its metrics and whether they
// may read them.
var metricsReviews = []rbacv1.PolicyRule{
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
}

// secureMetrics is a workload's argument and container port for its TLS metrics.
func secureMetrics(port int32) (string, corev1.ContainerPort) {
	return fmt.Sprintf("--secure-metrics-addr=:%d", port), corev1.ContainerPort{Name: "metrics", ContainerPort: port, Protocol: corev1.ProtocolTCP}
}
