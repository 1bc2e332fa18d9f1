// Package peeraliases publishes how this cluster sees the peers it gives aliases to
// (each ClusterPeer's status.aliases) in ClusterNetwork.status.peerAliases, where every
// peer reads it with the ClusterNetwork it already reads: a peer's gateways translate what
// they send here into this view.
package peeraliases

import (
	"context"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// Reconciler keeps ClusterNetwork.status.peerAliases.
type Reconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusterpeers,verbs=get;list;watch

// Reconcile writes the aliases of every ClusterPeer that has some, when they changed.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := r.Get(ctx, req.NamespacedName, cn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := r.List(ctx, peers); err != nil {
		return ctrl.Result{}, err
	}
	before := cn.DeepCopy()
	cn.Status.PeerAliases = Published(peers.Items)
	return ctrl.Result{}, patch.Status(ctx, r.Client, before, cn, func(c *fabricv1.ClusterNetwork) any { return c.Status.PeerAliases })
}

// Published is what status.peerAliases says for these peers: one entry per cluster with
// aliases (the first ClusterPeer of a cluster ID, by name, where several name it), by
// cluster ID.
func Published(peers []fabricv1.ClusterPeer) []fabricv1.PeerAliases {
	slices.SortFunc(peers, func(a, b fabricv1.ClusterPeer) int { return strings.Compare(a.Name, b.Name) })
	var out []fabricv1.PeerAliases
	seen := map[string]bool{}
	for _, p := range peers {
		if len(p.Status.Aliases) == 0 || seen[p.Spec.ClusterID] {
			continue
		}
		seen[p.Spec.ClusterID] = true
		out = append(out, fabricv1.PeerAliases{ClusterID: p.Spec.ClusterID, Aliases: slices.Clone(p.Status.Aliases)})
	}
	slices.SortFunc(out, func(a, b fabricv1.PeerAliases) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out
}

// SetupWithManager registers the controller: the ClusterNetwork when it appears, and
// ClusterPeers whose aliases change, appear with some or go.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	singleton := []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fabricv1.ClusterNetworkName}}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("peeraliases").
		For(&fabricv1.ClusterNetwork{}, builder.WithPredicates(
			predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == fabricv1.ClusterNetworkName }),
			predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		Watches(&fabricv1.ClusterPeer{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return singleton
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return len(e.Object.(*fabricv1.ClusterPeer).Status.Aliases) > 0 },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return !slices.Equal(e.ObjectOld.(*fabricv1.ClusterPeer).Status.Aliases, e.ObjectNew.(*fabricv1.ClusterPeer).Status.Aliases)
			},
			DeleteFunc: func(e event.DeleteEvent) bool { return true },
		})).
		Complete(phases.QuietConflicts(r))
}
