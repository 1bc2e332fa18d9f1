package fabricpolicy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/phases"
)

// FinalizerInUse is on a Tier while FabricPolicies name it.
const FinalizerInUse = "fabric.weft.dev/tier-in-use"

// TierInUse keeps FinalizerInUse on the tiers policies name, and only on those: a tier that
// is deleted while in use stays (Terminating, with a warning event naming the policies)
// until its last policy moves or goes. The tier webhook refuses such a deletion up front.
type TierInUse struct {
	client.Client
	Recorder record.EventRecorder
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=tiers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=tiers/finalizers,verbs=update

// Reconcile adds or removes the finalizer by whether policies name the tier.
func (r *TierInUse) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := &fabricv1.Tier{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	users, err := UsersOf(ctx, r.Client, t.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	has := controllerutil.ContainsFinalizer(t, FinalizerInUse)
	switch {
	case len(users) > 0 && !has && t.DeletionTimestamp.IsZero():
		base := t.DeepCopy()
		controllerutil.AddFinalizer(t, FinalizerInUse)
		return ctrl.Result{}, r.Patch(ctx, t, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	case len(users) == 0 && has:
		base := t.DeepCopy()
		controllerutil.RemoveFinalizer(t, FinalizerInUse)
		return ctrl.Result{}, r.Patch(ctx, t, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	case len(users) > 0 && !t.DeletionTimestamp.IsZero():
		r.Recorder.Eventf(t, corev1.EventTypeWarning, "TierInUse", "%s", InUseMessage(t.Name, users))
	}
	return ctrl.Result{}, nil
}

// UsersOf lists (sorted) the FabricPolicies that name a tier.
func UsersOf(ctx context.Context, c client.Reader, tier string) ([]string, error) {
	list := &fabricv1.FabricPolicyList{}
	if err := c.List(ctx, list); err != nil {
		return nil, fmt.Errorf("listing FabricPolicies: %w", err)
	}
	var names []string
	for _, p := range list.Items {
		if p.Spec.Tier == tier && p.DeletionTimestamp.IsZero() {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// InUseMessage says which policies keep a tier.
func InUseMessage(tier string, users []string) string {
	shown := users
	if len(shown) > 5 {
		shown = append(slices.Clone(shown[:5]), fmt.Sprintf("and %d more", len(users)-5))
	}
	return fmt.Sprintf("tier %q is used by FabricPolicies %s: move them to another tier or delete them first",
		tier, strings.Join(shown, ", "))
}

func (r *TierInUse) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&fabricv1.Tier{}).
		Watches(&fabricv1.FabricPolicy{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.(*fabricv1.FabricPolicy).Spec.Tier}}}
		})).
		Named("tier-in-use").
		Complete(phases.QuietConflicts(r))
}
