package clusternetwork

import (
	"context"
	"errors"
	"fmt"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// Options configures the ClusterNetwork controller.
type Options struct {
	// Backends are the datapath backends this build can run.
	Backends []fabricv1.DatapathBackend
}

// Reconciler reconciles the ClusterNetwork singleton.
type Reconciler struct {
	client.Client
	Options
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks,verbs=get;list;watch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks/status,verbs=get;update;patch

// Reconcile validates the ClusterNetwork and reports its state.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := r.Get(ctx, req.NamespacedName, cn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := cn.DeepCopy()
	defer func() {
		cn.Status.ObservedGeneration = cn.Generation
		if err := patch.Status(ctx, r.Client, before, cn, statusOf); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("patching status: %w", err))
		}
	}()
	return phases.Run(ctx, cn,
		r.validate,
		r.markReady,
	)
}

func statusOf(cn *fabricv1.ClusterNetwork) any { return cn.Status }

func (r *Reconciler) validate(_ context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	if problems := Validate(cn.Spec, r.Backends); len(problems) > 0 {
		reason, msg := summarize(problems)
		conditions.MarkStalled(&cn.Status.Conditions, cn.Generation, reason, msg)
		return ctrl.Result{}, phases.Halt
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) markReady(_ context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	conditions.MarkReady(&cn.Status.Conditions, cn.Generation, fabricv1.ReasonReconciled,
		fmt.Sprintf("cluster %s: pods %s, services %s, %s datapath", cn.Spec.ClusterID,
			join(cn.Spec.PodCIDRs), join(cn.Spec.ServiceCIDRs), backendOf(cn)))
	return ctrl.Result{}, nil
}

func backendOf(cn *fabricv1.ClusterNetwork) fabricv1.DatapathBackend {
	if cn.Spec.Datapath.Backend == "" {
		return fabricv1.DatapathOVS
	}
	return cn.Spec.Datapath.Backend
}

func join(cidrs []fabricv1.CIDR) string {
	s := make([]string, len(cidrs))
	for i, c := range cidrs {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

// SetupWithManager registers the controller. It watches only the singleton's name.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if len(r.Backends) == 0 {
		return errors.New("clusternetwork: Options.Backends is empty")
	}
	onlyDefault := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == fabricv1.ClusterNetworkName
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusternetwork").
		For(&fabricv1.ClusterNetwork{}, builder.WithPredicates(onlyDefault, predicate.GenerationChangedPredicate{})).
		Complete(r)
}
