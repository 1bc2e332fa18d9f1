package clusternetwork

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	aboutv1 "github.com/weft-net/weft/api/about/v1beta1"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// +kubebuilder:rbac:groups=about.k8s.io,resources=clusterproperties,verbs=get;list;watch;create;update;patch;delete

// clusterProperties are the KEP-2149 properties the ClusterNetwork defines.
func clusterProperties(cn *fabricv1.ClusterNetwork) []*aboutv1.ClusterProperty {
	prop := func(name, value string) *aboutv1.ClusterProperty {
		return &aboutv1.ClusterProperty{
			TypeMeta: metav1.TypeMeta{APIVersion: aboutv1.GroupVersion.String(), Kind: "ClusterProperty"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				"app.kubernetes.io/managed-by": "fabric.weft.dev"}},
			Spec: aboutv1.ClusterPropertySpec{Value: value},
		}
	}
	set := cn.Spec.ClusterSetID
	if set == "" {
		set = "default"
	}
	return []*aboutv1.ClusterProperty{
		prop(aboutv1.ClusterIDProperty, cn.Spec.ClusterID),
		prop(aboutv1.ClusterSetProperty, set),
	}
}

// ensureClusterProperties applies the ClusterProperties cluster.clusterset.k8s.io and
// clusterset.k8s.io, owned by the ClusterNetwork (so they go with it). The ClusterNetwork
// is their source of truth: a value written by hand is replaced. Without the
// ClusterProperty CRD (about.k8s.io) there is nothing to write.
func (r *Reconciler) ensureClusterProperties(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	for _, p := range clusterProperties(cn) {
		if err := controllerutil.SetControllerReference(cn, p, r.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		err := r.Patch(ctx, p, client.Apply, client.FieldOwner("weft-operator"), client.ForceOwnership)
		if meta.IsNoMatchError(err) {
			log.FromContext(ctx).V(1).Info("no ClusterProperty CRD (about.k8s.io): cluster properties not written")
			return ctrl.Result{}, nil
		}
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("applying ClusterProperty %s: %w", p.Name, err)
		}
	}
	return ctrl.Result{}, nil
}
