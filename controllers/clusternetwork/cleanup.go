package clusternetwork

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// agent removed weft from it (its FabricNode's status.cleanup names the ClusterNetwork's
// UID), or until the time limit; then takes the finalizer off and deletes the FabricNodes.
// The Reconciling condition names the nodes it waits for.
func (r *Reconciler) cleanNodes(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cn, fabricv1.FinalizerNodeCleanup) {
		return ctrl.Result{}, nil
	}
	nodes := &fabricv1.FabricNodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	cleaned := map[string]bool{}
	for _, n := range nodes.Items {
		cleaned[n.Name] = n.Status.Cleanup != nil && n.Status.Cleanup.ClusterNetworkUID == string(cn.UID)
	}
	withAgent, err := r.nodesWithAgents(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	var waiting []string
	for n := range withAgent {
		if !cleaned[n] {
			waiting = append(waiting, n)
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
	// same decision only while the FabricNodes are still there.
	base := cn.DeepCopy()
	controllerutil.RemoveFinalizer(cn, fabricv1.FinalizerNodeCleanup)
	if err := r.Patch(ctx, cn, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, err
	}
	// weft is gone from the nodes: so are the records of their blocks (a new ClusterNetwork
	// gives new ones).
	for _, n := range nodes.Items {
		if err := r.Delete(ctx, &n); err != nil && !apierrors.IsNotFound(err) {
			log.Error(err, "deleting the FabricNode", "node", n.Name)
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
