package nodeipam

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/phases"
)

// Reconciler allocates node pod blocks. It runs with one worker (and, with leader election,
// in one replica), so two nodes are never given the same block.
type Reconciler struct {
	client.Client
	// APIReader reads nodes around an allocation: the cache may not show a block given a
	// moment ago, and handing it out twice would be worse than a slower read.
	APIReader client.Reader
	Recorder  record.EventRecorder
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile gives the node its blocks unless it already has valid ones.
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
	pools, maskSize := poolsOf(cn)
	if len(pools) == 0 {
		return ctrl.Result{}, nil // an invalid spec: the ClusterNetwork controller reports it
	}
	if _, ok := parseBlocks(node.Annotations[fabricv1.AnnotationPodCIDRs], pools, maskSize); ok {
		return ctrl.Result{}, nil
	}
	// About to allocate: from here on, read the API server, not the cache.
	if err := r.APIReader.Get(ctx, req.NamespacedName, node); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if _, ok := parseBlocks(node.Annotations[fabricv1.AnnotationPodCIDRs], pools, maskSize); ok {
		return ctrl.Result{}, nil
	}
	nodes := &corev1.NodeList{}
	if err := r.APIReader.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	used := map[netip.Prefix]bool{}
	for _, n := range nodes.Items {
		if n.Name == node.Name {
			continue
		}
		if blocks, ok := parseBlocks(n.Annotations[fabricv1.AnnotationPodCIDRs], pools, maskSize); ok {
			for _, b := range blocks {
				used[b] = true
			}
		}
	}
	var blocks []netip.Prefix
	for _, pool := range pools {
		b, err := nextFree(pool, maskSize(pool), used)
		if err != nil {
			r.Recorder.Eventf(node, corev1.EventTypeWarning, fabricv1.ReasonPodCIDRExhausted, "no pod block for node %s: %v", node.Name, err)
			return ctrl.Result{}, nil // retried when a node goes away
		}
		blocks = append(blocks, b)
	}
	patch := client.MergeFrom(node.DeepCopy())
	if node.Annotations == nil {
		node.Annotations = map[string]string{}
	}
	node.Annotations[fabricv1.AnnotationPodCIDRs] = format(blocks)
	if err := r.Patch(ctx, node, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("recording blocks on node %s: %w", node.Name, err)
	}
	r.Recorder.Eventf(node, corev1.EventTypeNormal, "PodCIDRAllocated", "pod blocks %s", format(blocks))
	ctrl.LoggerFrom(ctx).Info("allocated pod blocks", "node", node.Name, "blocks", format(blocks))
	return ctrl.Result{}, nil
}

// poolsOf returns the valid pod ranges and the block size for each.
func poolsOf(cn *fabricv1.ClusterNetwork) ([]netip.Prefix, func(netip.Prefix) int) {
	var pools []netip.Prefix
	for _, c := range cn.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(string(c)); err == nil && p.Masked() == p {
			pools = append(pools, p)
		}
	}
	v4, v6 := int(cn.Spec.IPAM.NodeMaskSizeIPv4), int(cn.Spec.IPAM.NodeMaskSizeIPv6)
	if v4 == 0 {
		v4 = 24
	}
	if v6 == 0 {
		v6 = 80
	}
	return pools, func(p netip.Prefix) int {
		if p.Addr().Is4() {
			return v4
		}
		return v6
	}
}

// SetupWithManager registers the controller; a ClusterNetwork change revisits every node.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("weft-operator")
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodeipam").
		For(&corev1.Node{}).
		Watches(&fabricv1.ClusterNetwork{}, handler.EnqueueRequestsFromMapFunc(r.allNodes)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(phases.QuietConflicts(r))
}

func (r *Reconciler) allNodes(ctx context.Context, _ client.Object) []reconcile.Request {
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, len(nodes.Items))
	for i, n := range nodes.Items {
		reqs[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: n.Name}}
	}
	return reqs
}
