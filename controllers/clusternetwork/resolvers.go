package clusternetwork

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch

// observeDNSResolvers records in status.dnsResolvers the resolvers FQDN rules learn from, for
// the agents: spec.dns.resolvers, or else the cluster DNS Service's cluster IPs. A cluster
// without that Service has none until the administrator names them (FQDN rules then allow
// nothing, rather than learning from anyone).
func (r *Reconciler) observeDNSResolvers(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	var want []string
	for _, a := range cn.Spec.DNS.Resolvers {
		want = append(want, string(a))
	}
	if len(want) == 0 {
		svc := &corev1.Service{}
		err := r.Get(ctx, types.NamespacedName{Namespace: fabricv1.ClusterDNSNamespace, Name: fabricv1.ClusterDNSService}, svc)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return ctrl.Result{}, err
		default:
			want = clusterIPs(svc)
		}
	}
	cn.Status.DNSResolvers = want // the status is patched only if it differs
	return ctrl.Result{}, nil
}

// clusterIPs are a Service's cluster IPs (none for a headless one).
func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if ip != corev1.ClusterIPNone && ip != "" {
			out = append(out, ip)
		}
	}
	return out
}
