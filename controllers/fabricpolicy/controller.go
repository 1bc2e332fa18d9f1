package fabricpolicy

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// IndexTier indexes FabricPolicies by spec.tier.
const IndexTier = "spec.tier"

// Reasons of FabricPolicy conditions.
const (
	// ReasonTierNotFound: the policy names a tier that does not exist.
	ReasonTierNotFound = "TierNotFound"
	// ReasonEnforcementPending: the policy is valid; no node's datapath enforces it yet.
	ReasonEnforcementPending = "EnforcementPending"
)

// Reconciler reports each FabricPolicy's state.
type Reconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// Reconcile: fetch, check the tier, count the nodes, report.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	p := &fabricv1.FabricPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := p.DeepCopy()
	defer func() {
		p.Status.ObservedGeneration = p.Generation
		if err := patch.Status(ctx, r.Client, before, p, statusOf); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("patching status: %w", err))
		}
	}()
	return phases.Run(ctx, p, r.checkTier, r.countNodes)
}

func statusOf(p *fabricv1.FabricPolicy) any { return p.Status }

// checkTier stalls a policy whose tier does not exist (or is being deleted).
func (r *Reconciler) checkTier(ctx context.Context, p *fabricv1.FabricPolicy) (ctrl.Result, error) {
	t := &fabricv1.Tier{}
	err := r.Get(ctx, types.NamespacedName{Name: p.Spec.Tier}, t)
	switch {
	case apierrors.IsNotFound(err):
		SetTierNotFound(p)
		return ctrl.Result{}, phases.Halt
	case err != nil:
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// SetTierNotFound marks a policy whose tier is missing.
func SetTierNotFound(p *fabricv1.FabricPolicy) {
	conditions.MarkStalled(&p.Status.Conditions, p.Generation, ReasonTierNotFound,
		fmt.Sprintf("tier %q does not exist; the policy enforces nothing until it does (kubectl get tiers)", p.Spec.Tier))
}

// countNodes records how many nodes should enforce the policy. No datapath enforces
// FabricPolicies yet, so a valid policy stays Reconciling with none realized.
func (r *Reconciler) countNodes(ctx context.Context, p *fabricv1.FabricPolicy) (ctrl.Result, error) {
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	SetPending(p, int32(len(nodes.Items)))
	return ctrl.Result{}, nil
}

// SetPending reports a valid policy that no node enforces yet.
func SetPending(p *fabricv1.FabricPolicy, desired int32) {
	p.Status.DesiredNodes, p.Status.RealizedNodes = desired, 0
	conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonEnforcementPending,
		fmt.Sprintf("valid; enforced on 0 of %d nodes (the datapath's policy enforcement is not built yet)", desired))
}

// Setup registers the spec.tier index and both controllers of the package.
func Setup(ctx context.Context, mgr ctrl.Manager) error {
	err := mgr.GetFieldIndexer().IndexField(ctx, &fabricv1.FabricPolicy{}, IndexTier, func(o client.Object) []string {
		return []string{o.(*fabricv1.FabricPolicy).Spec.Tier}
	})
	if err != nil {
		return err
	}
	if err := (&Reconciler{Client: mgr.GetClient()}).setup(mgr); err != nil {
		return err
	}
	return (&TierInUse{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("weft-operator")}).setup(mgr)
}

// setup watches policies, and tiers (a tier appearing or going changes the policies that
// name it).
func (r *Reconciler) setup(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&fabricv1.FabricPolicy{}).
		Watches(&fabricv1.Tier{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return policiesOf(ctx, mgr.GetClient(), o.GetName())
		})).
		Named("fabricpolicy").
		Complete(r)
}

func policiesOf(ctx context.Context, c client.Client, tier string) []reconcile.Request {
	list := &fabricv1.FabricPolicyList{}
	if err := c.List(ctx, list, client.MatchingFields{IndexTier: tier}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
	}
	return reqs
}
