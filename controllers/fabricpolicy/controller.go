package fabricpolicy

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
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
	// ReasonEnforcementPending: the policy is valid; some node's datapath does not enforce
	// this generation yet.
	ReasonEnforcementPending = "EnforcementPending"
	// ReasonEnforced: every node's datapath enforces this generation.
	ReasonEnforced = "Enforced"
)

// Reconciler reports each FabricPolicy's state.
type Reconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=fabricnodes,verbs=get;list;watch

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
		return ctrl.Result{}, phases.ErrHalt
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

// countNodes counts the nodes that should enforce the policy (those with a weft pod
// block: they run the agent) and those whose agent reports, in its FabricNode, that it
// enforces this generation.
func (r *Reconciler) countNodes(ctx context.Context, p *fabricv1.FabricPolicy) (ctrl.Result, error) {
	nodes := &fabricv1.FabricNodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	var desired, realized int32
	for _, n := range nodes.Items {
		if len(n.Spec.PodCIDRs) == 0 || !n.DeletionTimestamp.IsZero() {
			continue
		}
		desired++
		if n.Status.RealizedGenerations()[p.Name] >= p.Generation {
			realized++
		}
	}
	SetEnforcement(p, desired, realized)
	return ctrl.Result{}, nil
}

// SetEnforcement reports on how many of the nodes that should enforce the policy do.
func SetEnforcement(p *fabricv1.FabricPolicy, desired, realized int32) {
	p.Status.DesiredNodes, p.Status.RealizedNodes = desired, realized
	if realized < desired {
		conditions.MarkReconciling(&p.Status.Conditions, p.Generation, ReasonEnforcementPending,
			fmt.Sprintf("enforced on %d of %d nodes", realized, desired))
		return
	}
	conditions.MarkReady(&p.Status.Conditions, p.Generation, ReasonEnforced, fmt.Sprintf("enforced on all %d nodes", desired))
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
		// A node's agent reporting what it enforces, a node gaining a block or going.
		Watches(&fabricv1.FabricNode{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return allPolicies(ctx, mgr.GetClient())
		}), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			old, cur := e.ObjectOld.(*fabricv1.FabricNode), e.ObjectNew.(*fabricv1.FabricNode)
			return !equality.Semantic.DeepEqual(old.Spec.PodCIDRs, cur.Spec.PodCIDRs) ||
				!equality.Semantic.DeepEqual(old.Status.RealizedPolicies, cur.Status.RealizedPolicies)
		}})).
		Named("fabricpolicy").
		Complete(phases.QuietConflicts(r))
}

func policiesOf(ctx context.Context, c client.Client, tier string) []reconcile.Request {
	return listPolicies(ctx, c, client.MatchingFields{IndexTier: tier})
}

func allPolicies(ctx context.Context, c client.Client) []reconcile.Request {
	return listPolicies(ctx, c)
}

func listPolicies(ctx context.Context, c client.Client, opts ...client.ListOption) []reconcile.Request {
	list := &fabricv1.FabricPolicyList{}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
	}
	return reqs
}
