package tier

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// indexPriority indexes Tiers by spec.priority, to find the tiers that share one.
const indexPriority = "spec.priority"

// Reconciler keeps built-in tiers present and flags duplicate priorities.
type Reconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=tiers,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=tiers/status,verbs=get;update;patch

// Reconcile re-creates a missing built-in tier, then reports whether the tier holds its priority.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	t := &fabricv1.Tier{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		if apierrors.IsNotFound(err) {
			return r.recreateBuiltin(ctx, req.Name)
		}
		return ctrl.Result{}, err
	}
	if t.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	before := t.DeepCopy()
	defer func() {
		t.Status.ObservedGeneration = t.Generation
		if err := patch.Status(ctx, r.Client, before, t, statusOf); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("patching status: %w", err))
		}
	}()
	return phases.Run(ctx, t,
		r.checkPriority,
		r.markReady,
	)
}

func statusOf(t *fabricv1.Tier) any { return t.Status }

// webhookWait is how often a built-in tier is tried again while the admission webhook that
// checks tiers does not answer yet (the operator's own, starting with it).
const webhookWait = 2 * time.Second

// recreateBuiltin creates a built-in tier that is missing; other names are left alone. At
// start the operator's own webhook, which every Tier passes, has no endpoint yet: that is
// waited for quietly, not reported as an error.
func (r *Reconciler) recreateBuiltin(ctx context.Context, name string) (ctrl.Result, error) {
	want, ok := builtinNamed(name)
	if !ok {
		return ctrl.Result{}, nil
	}
	err := r.Create(ctx, &want)
	switch {
	case webhookNotAnswering(err):
		ctrl.LoggerFrom(ctx).V(1).Info("waiting for the tier webhook to answer", "tier", name)
		return ctrl.Result{RequeueAfter: webhookWait}, nil
	case err != nil && !apierrors.IsAlreadyExists(err):
		return ctrl.Result{}, fmt.Errorf("creating built-in tier %s: %w", name, err)
	}
	ctrl.LoggerFrom(ctx).Info("created built-in tier", "tier", name, "priority", want.Spec.Priority)
	return ctrl.Result{}, nil
}

// webhookNotAnswering says whether the API server refused a request because an admission
// webhook could not be called (no endpoint yet, connection refused).
func webhookNotAnswering(err error) bool {
	return apierrors.IsInternalError(err) && strings.Contains(err.Error(), "failed calling webhook")
}

// checkPriority stalls a tier whose priority an older tier already holds. The admission
// webhook refuses such tiers; this catches the ones created concurrently or while the
// webhook was not installed.
func (r *Reconciler) checkPriority(ctx context.Context, t *fabricv1.Tier) (ctrl.Result, error) {
	same := &fabricv1.TierList{}
	if err := r.List(ctx, same, client.MatchingFields{indexPriority: priorityKey(t.Spec.Priority)}); err != nil {
		return ctrl.Result{}, err
	}
	if h, ok := holder(same.Items); ok && h.Name != t.Name {
		conditions.MarkStalled(&t.Status.Conditions, t.Generation, fabricv1.ReasonDuplicatePriority,
			fmt.Sprintf("priority %d is already held by tier %q; delete this tier or recreate it with another priority",
				t.Spec.Priority, h.Name))
		return ctrl.Result{}, phases.ErrHalt
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) markReady(_ context.Context, t *fabricv1.Tier) (ctrl.Result, error) {
	conditions.MarkReady(&t.Status.Conditions, t.Generation, fabricv1.ReasonReconciled,
		fmt.Sprintf("tier holds priority %d", t.Spec.Priority))
	return ctrl.Result{}, nil
}

func priorityKey(p int32) string { return strconv.Itoa(int(p)) }

// SetupWithManager registers the controller, its index, and a start-up pass over the built-in
// tiers so that missing ones are created when the operator starts.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &fabricv1.Tier{}, indexPriority, func(o client.Object) []string {
		return []string{priorityKey(o.(*fabricv1.Tier).Spec.Priority)}
	}); err != nil {
		return fmt.Errorf("indexing tiers by priority: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("tier").
		For(&fabricv1.Tier{}).
		// A change to one tier can change which tier holds its priority: requeue its peers.
		Watches(&fabricv1.Tier{}, handler.EnqueueRequestsFromMapFunc(r.samePriority)).
		WatchesRawSource(source.Func(enqueueBuiltins)).
		Complete(phases.QuietConflicts(r))
}

func (r *Reconciler) samePriority(ctx context.Context, o client.Object) []reconcile.Request {
	same := &fabricv1.TierList{}
	if err := r.List(ctx, same, client.MatchingFields{indexPriority: priorityKey(o.(*fabricv1.Tier).Spec.Priority)}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(same.Items))
	for _, t := range same.Items {
		if t.Name != o.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: t.Name}})
		}
	}
	return reqs
}

func enqueueBuiltins(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	for _, t := range Builtin {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: t.Name}})
	}
	return nil
}
