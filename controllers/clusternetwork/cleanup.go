package clusternetwork

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/render"
)

// DefaultNodeCleanupTimeout is how long a deleted ClusterNetwork waits for the agents to
// remove weft from their nodes.
const DefaultNodeCleanupTimeout = 2 * time.Minute

// ensureCleanupFinalizer puts FinalizerNodeCleanup on before the agents go out: deleting
// the ClusterNetwork then waits for them to remove weft's datapath from their nodes.
func (r *Reconciler) ensureCleanupFinalizer(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	if controllerutil.ContainsFinalizer(cn, fabricv1.FinalizerNodeCleanup) {
		return ctrl.Result{}, nil
	}
	// Patched on a copy (this reconcile's status patch is a diff against the object read).
	with := cn.DeepCopy()
	controllerutil.AddFinalizer(with, fabricv1.FinalizerNodeCleanup)
	if err := r.Patch(ctx, with, client.MergeFromWithOptions(cn, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, fmt.Errorf("adding finalizer %s: %w", fabricv1.FinalizerNodeCleanup, err)
	}
	cn.Finalizers, cn.ResourceVersion = with.Finalizers, with.ResourceVersion
	return ctrl.Result{}, nil
}

// cleanNodes holds a deleted ClusterNetwork until every node with a node agent says the
// agent removed weft from it (AnnotationNodeCleaned = the ClusterNetwork's UID), or until
// the time limit; then takes the finalizer and the annotations off. The Reconciling
// condition names the nodes it waits for.
func (r *Reconciler) cleanNodes(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cn, fabricv1.FinalizerNodeCleanup) {
		return ctrl.Result{}, nil
	}
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	withAgent, err := r.nodesWithAgents(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	var waiting []string
	for _, n := range nodes.Items {
		if withAgent[n.Name] && n.Annotations[fabricv1.AnnotationNodeCleaned] != string(cn.UID) {
			waiting = append(waiting, n.Name)
		}
	}
	limit := r.NodeCleanupTimeout
	if limit == 0 {
		limit = DefaultNodeCleanupTimeout
	}
	left := time.Until(cn.DeletionTimestamp.Add(limit))
	log := ctrl.LoggerFrom(ctx)
	if len(waiting) > 0 && left > 0 {
		slices.Sort(waiting)
		before := cn.DeepCopy()
		conditions.MarkReconciling(&cn.Status.Conditions, cn.Generation, fabricv1.ReasonCleaningNodes,
			fmt.Sprintf("being deleted: waiting up to %s for the node agents to remove weft from %d of %d nodes: %s",
				left.Round(time.Second), len(waiting), len(withAgent), strings.Join(waiting, ", ")))
		if err := patch.Status(ctx, r.Client, before, cn, statusOf); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: min(left, 5*time.Second)}, nil
	}
	if len(waiting) > 0 {
		log.Info("gave up waiting for node agents to remove weft; their nodes keep what they had", "nodes", waiting, "after", limit)
	}
	// The finalizer first: a conflict here (a stale read) brings the next try back to the
	// same decision only while the annotations are still there.
	base := cn.DeepCopy()
	controllerutil.RemoveFinalizer(cn, fabricv1.FinalizerNodeCleanup)
	if err := r.Patch(ctx, cn, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, err
	}
	for _, n := range nodes.Items {
		if _, ok := n.Annotations[fabricv1.AnnotationNodeCleaned]; ok {
			base := n.DeepCopy()
			delete(n.Annotations, fabricv1.AnnotationNodeCleaned)
			if err := r.Patch(ctx, &n, client.MergeFrom(base)); err != nil {
				// Harmless if left: it names this ClusterNetwork's UID only.
				log.Error(err, "removing the cleanup annotation", "node", n.Name)
			}
		}
	}
	return ctrl.Result{}, nil
}

// nodesWithAgents are the nodes where a node agent's pod runs (or is starting): only those
// can clean up.
func (r *Reconciler) nodesWithAgents(ctx context.Context) (map[string]bool, error) {
	pods := &corev1.PodList{}
	reader := r.APIReader // read directly, only while a deletion waits: no informer on every pod for this
	if reader == nil {
		reader = r.Client
	}
	if err := reader.List(ctx, pods, client.InNamespace(r.Namespace), client.MatchingLabels{"app.kubernetes.io/name": render.AgentName}); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp.IsZero() && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			out[p.Spec.NodeName] = true
		}
	}
	return out, nil
}
