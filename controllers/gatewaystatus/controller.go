// Package gatewaystatus publishes the cluster's gateways in ClusterNetwork.status.gateways,
// which peer clusters read: what each gateway announces in its FabricGateway (endpoint,
// tunnel, keys, per-peer ports, tunnels), and whether it is healthy — while it keeps renewing
// its Lease. It is its own controller so that following Lease expiries (every couple of
// seconds) costs a cached list and, most of the time, nothing else.
package gatewaystatus

import (
	"context"
	"maps"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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

// Reconciler keeps ClusterNetwork.status.gateways.
type Reconciler struct {
	client.Client
	// Namespace holds the gateways' Leases (the operator's namespace).
	Namespace string
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=weft-system,resources=leases,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricgateways,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// Reconcile publishes the gateways and comes back when the next healthy Lease would expire.
// A renewal alone changes nothing in the status (see keepRenewTimes): gateways renew every
// half second, and the status must stay still at rest.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := r.Get(ctx, req.NamespacedName, cn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	leases := &coordinationv1.LeaseList{}
	if err := r.List(ctx, leases, client.InNamespace(r.Namespace), client.HasLabels{fabricv1.LabelGateway}); err != nil {
		return ctrl.Result{}, err
	}
	fgs := &fabricv1.FabricGatewayList{}
	if err := r.List(ctx, fgs); err != nil {
		return ctrl.Result{}, err
	}
	announced := make(map[string]*fabricv1.FabricGateway, len(fgs.Items))
	for i := range fgs.Items {
		announced[fgs.Items[i].Name] = &fgs.Items[i]
	}
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	labels := make(map[string]map[string]string, len(nodes.Items))
	for _, n := range nodes.Items {
		labels[n.Name] = n.Labels
	}
	before := cn.DeepCopy()
	gws, next := gatewaysFromLeases(leases.Items, announced, time.Now())
	gws = withoutRetired(gws, labels, cn.Spec.Gateways.NodeSelector)
	cn.Status.Gateways = keepRenewTimes(cn.Status.Gateways, gws)
	if err := patch.Status(ctx, r.Client, before, cn, func(c *fabricv1.ClusterNetwork) any { return c.Status.Gateways }); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// SetupWithManager registers the controller: the singleton ClusterNetwork when it appears,
// gateway Leases that appear, go, or are renewed after they had expired (a Lease renewed in
// time needs nothing: the requeue at its expiry checks it), FabricGateways whose status
// changes, and Nodes whose labels change or that go.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	singleton := []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fabricv1.ClusterNetworkName}}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("gatewaystatus").
		For(&fabricv1.ClusterNetwork{}, builder.WithPredicates(
			predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == fabricv1.ClusterNetworkName }),
			predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if o.GetNamespace() != r.Namespace || o.GetLabels()[fabricv1.LabelGateway] == "" {
				return nil
			}
			return singleton
		}), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			old, ok := e.ObjectOld.(*coordinationv1.Lease)
			return !ok || leaseExpired(old, time.Now())
		}})).
		// A node taken out of the gateways (its stopped gateway is then dropped), or gone.
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return singleton
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
			},
			DeleteFunc: func(event.DeleteEvent) bool { return true },
		})).
		Watches(&fabricv1.FabricGateway{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return singleton
		}), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			old, okOld := e.ObjectOld.(*fabricv1.FabricGateway)
			cur, okNew := e.ObjectNew.(*fabricv1.FabricGateway)
			return !okOld || !okNew || !equality.Semantic.DeepEqual(old.Status, cur.Status)
		}})).
		Complete(phases.QuietConflicts(r))
}
