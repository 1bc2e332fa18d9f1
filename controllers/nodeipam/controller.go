package nodeipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	k8sworkqueue "k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/phases"
	"github.com/weft-net/weft/internal/podblocks"
)

// Reconciler allocates node pod blocks. It runs with one worker (and, with leader election,
// in one replica), so two nodes are never given the same block.
type Reconciler struct {
	client.Client
	// APIReader reads FabricNodes around an allocation: the cache may not show a block given
	// a moment ago, and handing it out twice would be worse than a slower read.
	APIReader client.Reader
	Recorder  record.EventRecorder
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricnodes,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile gives the node a FabricNode with its blocks unless it already has valid ones.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	node := &corev1.Node{}
	if err := r.Get(ctx, req.NamespacedName, node); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if node.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	cn := &fabricv1.ClusterNetwork{}
	if err := r.Get(ctx, types.NamespacedName{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // nothing to allocate from yet
	}
	pools := podblocks.Of(cn)
	if len(pools.CIDRs) == 0 {
		return ctrl.Result{}, nil // an invalid spec: the ClusterNetwork controller reports it
	}
	fn := &fabricv1.FabricNode{}
	if err := r.Get(ctx, req.NamespacedName, fn); err == nil {
		if _, ok := pools.Own(fn.Spec.PodCIDRs); ok {
			all := &fabricv1.FabricNodeList{}
			if err := r.List(ctx, all); err != nil {
				return ctrl.Result{}, err
			}
			if !overlapsOlder(pools, fn.Name, all.Items) {
				return ctrl.Result{}, nil
			}
		}
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	// About to allocate: from here on, read the API server, not the cache.
	fn = &fabricv1.FabricNode{}
	exists := true
	if err := r.APIReader.Get(ctx, req.NamespacedName, fn); apierrors.IsNotFound(err) {
		exists = false
	} else if err != nil {
		return ctrl.Result{}, err
	}
	all := &fabricv1.FabricNodeList{}
	if err := r.APIReader.List(ctx, all); err != nil {
		return ctrl.Result{}, err
	}
	kept, whole := pools.Valid(fn.Spec.PodCIDRs) // whole: the FabricNode may stay
	if exists && (!whole || overlapsOlder(pools, fn.Name, all.Items)) {
		// Blocks the operator would never have given (outside the range, of another size, not
		// network addresses, another node's) cannot be edited away (they are immutable): the
		// FabricNode is replaced. Agents never routed to them (podblocks.Filter).
		r.Recorder.Eventf(node, corev1.EventTypeWarning, "InvalidPodCIDRs", "FabricNode %s claims %v, not valid for this cluster: replaced", fn.Name, fn.Spec.PodCIDRs)
		if err := r.Delete(ctx, fn, client.Preconditions{UID: &fn.UID}); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		return ctrl.Result{Requeue: true}, nil
	}
	if exists && len(kept) == len(pools.CIDRs) {
		return ctrl.Result{}, nil
	}
	used := map[netip.Prefix]bool{}
	for _, other := range all.Items {
		if other.Name == node.Name {
			continue
		}
		for _, c := range other.Spec.PodCIDRs {
			if b, reason, _ := pools.CheckOne(c); reason == "" {
				used[b] = true
			}
		}
	}
	blocks := kept
	for _, pool := range pools.CIDRs {
		if slices.ContainsFunc(kept, func(b netip.Prefix) bool { return b.Addr().Is4() == pool.Addr().Is4() }) {
			continue // a family the node has (a range added later: only the new family's block)
		}
		b, err := nextFree(pool, pools.MaskSize(pool), used)
		if err != nil {
			r.Recorder.Eventf(node, corev1.EventTypeWarning, fabricv1.ReasonPodCIDRExhausted, "no pod block for node %s: %v", node.Name, err)
			return ctrl.Result{}, nil // retried when a FabricNode goes away
		}
		blocks = append(blocks, b)
	}
	fn.Spec.PodCIDRs = make([]fabricv1.CIDR, len(blocks))
	for i, b := range blocks {
		fn.Spec.PodCIDRs[i] = fabricv1.CIDR(b.String())
	}
	var err error
	if exists {
		err = r.Update(ctx, fn)
	} else {
		fn.Name = node.Name
		// Owned by its Node: the garbage collector deletes it with the node, freeing the block.
		fn.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		err = r.Create(ctx, fn)
	}
	if err != nil {
		if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, fmt.Errorf("recording blocks of node %s: %w", node.Name, err)
	}
	r.Recorder.Eventf(node, corev1.EventTypeNormal, "PodCIDRAllocated", "pod blocks %s", format(blocks))
	ctrl.LoggerFrom(ctx).Info("allocated pod blocks", "node", node.Name, "blocks", format(blocks))
	return ctrl.Result{}, nil
}

// overlapsOlder says whether a block of node's FabricNode overlaps one an older FabricNode
// holds (the order agents use: podblocks.Filter).
func overlapsOlder(pools podblocks.Pools, node string, all []fabricv1.FabricNode) bool {
	claims := make([]podblocks.Claim, 0, len(all))
	for _, fn := range all {
		claims = append(claims, podblocks.Claim{Node: fn.Name, Since: fn.CreationTimestamp.Time, CIDRs: fn.Spec.PodCIDRs})
	}
	_, refused := pools.Filter("", nil, claims)
	for _, r := range refused {
		if r.Node == node && r.Reason == fabricv1.BlockOverlaps {
			return true
		}
	}
	return false
}

// SetupWithManager registers the controller: a new node, a FabricNode's change and a
// ClusterNetwork change revisit the nodes (a FabricNode going away frees a block a waiting
// node may take). Node updates — heartbeats, mostly — are not looked at.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("weft-operator")
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodeipam").
		For(&corev1.Node{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		Watches(&fabricv1.FabricNode{}, handler.Funcs{
			CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue) { q.Add(named(e.Object.GetName())) },
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue) { q.Add(named(e.ObjectNew.GetName())) },
			DeleteFunc: func(ctx context.Context, _ event.DeleteEvent, q workqueue) {
				for _, req := range r.allNodes(ctx, nil) {
					q.Add(req)
				}
			},
		}).
		Watches(&fabricv1.ClusterNetwork{}, handler.EnqueueRequestsFromMapFunc(r.allNodes)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(phases.QuietConflicts(r))
}

type workqueue = k8sworkqueue.TypedRateLimitingInterface[reconcile.Request]

func named(name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Name: name}}
}

func (r *Reconciler) allNodes(ctx context.Context, _ client.Object) []reconcile.Request {
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, len(nodes.Items))
	for i, n := range nodes.Items {
		reqs[i] = named(n.Name)
	}
	return reqs
}
