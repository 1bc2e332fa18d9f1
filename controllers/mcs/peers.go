package mcs

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// peerSync keeps the View's peer informers in step with the ClusterPeers, their Secrets and
// this cluster's ID: any change to those runs View.SyncPeers (one worker, one queue key).
type peerSync struct{ view *View }

func (p *peerSync) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	return ctrl.Result{}, p.view.SyncPeers(ctx)
}

// setupPeerSync registers the View's peer follower and its lifetime with the manager.
func setupPeerSync(mgr ctrl.Manager, v *View) error {
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { v.Run(ctx); return nil })); err != nil {
		return err
	}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "peers"}}}
	})
	return ctrl.NewControllerManagedBy(mgr).Named("mcs-peers").
		Watches(&fabricv1.ClusterPeer{}, one).
		Watches(&fabricv1.ClusterNetwork{}, one).
		// The manager watches Secrets in the operator's namespace only; a peer whose Secret
		// lives elsewhere is read again when its ClusterPeer changes.
		Watches(&corev1.Secret{}, one).
		Complete(&peerSync{view: v})
}
