package clusternetwork

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/render"
)

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
	if err := r.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: render.DNSName}, svc); err != nil {
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
	want := render.WithClusterSetZone(cm.Data["Corefile"], render.DNSDomain(cn), svc.Spec.ClusterIP)
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
		if without := render.WithClusterSetZone(cm.Data["Corefile"], "", ""); without != cm.Data["Corefile"] && cm.Data["Corefile"] != "" {
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
