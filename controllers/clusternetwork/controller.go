package clusternetwork

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
	"github.com/weft-net/weft/internal/render"
	"github.com/weft-net/weft/internal/version"
)

// Options configures the ClusterNetwork controller.
type Options struct {
	// Backends are the datapath backends this build can run.
	Backends []fabricv1.DatapathBackend
	// Namespace is where node workloads run (the operator's namespace).
	Namespace string
	// Images of the node workloads.
	Images render.Images
	// NodeCleanupTimeout bounds how long a deleted ClusterNetwork waits for the node
	// agents to remove weft from their nodes (0: DefaultNodeCleanupTimeout).
	NodeCleanupTimeout time.Duration
}

// Reconciler reconciles the ClusterNetwork singleton.
type Reconciler struct {
	client.Client
	// APIReader reads what the operator does not cache (the cluster DNS's ConfigMap).
	APIReader client.Reader
	Options
}

// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks/finalizers,verbs=update
// +kubebuilder:rbac:groups=fabric.weft.dev,resources=clusternetworks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,namespace=weft-system,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=weft-system,resources=serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// The operator changes only the ClusterRoles and bindings it renders (creating cannot be
// limited by name; it never needs to change another).
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings,verbs=update;patch;delete,resourceNames=weft-agent;weft-gateway;weft-dns
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,namespace=weft-system,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Reconcile validates the ClusterNetwork and reports its state.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := r.Get(ctx, req.NamespacedName, cn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cn.DeletionTimestamp.IsZero() {
		// What the ClusterNetwork owns goes with it (owner references) — once the agents
		// have removed weft from their nodes; what it changed elsewhere is undone here.
		if err := r.removeClusterDNS(ctx, cn); err != nil {
			return ctrl.Result{}, err
		}
		return r.cleanNodes(ctx, cn)
	}
	before := cn.DeepCopy()
	defer func() {
		cn.Status.ObservedGeneration = cn.Generation
		cn.Status.OperatorVersion = version.Version
		if err := patch.Status(ctx, r.Client, before, cn, statusOf); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("patching status: %w", err))
		}
	}()
	return phases.Run(ctx, cn,
		r.validate,
		r.checkCapabilities,
		r.ensureCleanupFinalizer,
		r.ensureAgents,
		r.ensureClusterDNS,
		r.ensureClusterProperties,
		r.observeDNSResolvers,
		r.countNodes,
		r.markReady,
	)
}

func statusOf(cn *fabricv1.ClusterNetwork) any { return cn.Status }

func (r *Reconciler) validate(_ context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	if problems := Validate(cn.Spec, r.Backends); len(problems) > 0 {
		reason, msg := summarize(problems)
		conditions.MarkStalled(&cn.Status.Conditions, cn.Generation, reason, msg)
		return ctrl.Result{}, phases.ErrHalt
	}
	return ctrl.Result{}, nil
}

// checkCapabilities refuses a backend and encapsulation that some node's agent says its
// datapath cannot do (before the agents roll to settings they cannot run).
func (r *Reconciler) checkCapabilities(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	nodes := &fabricv1.FabricNodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	if msg := UnsupportedOn(cn.Spec, nodes.Items); msg != "" {
		conditions.MarkStalled(&cn.Status.Conditions, cn.Generation, fabricv1.ReasonUnsupportedEncapsulation, msg)
		return ctrl.Result{}, phases.ErrHalt
	}
	return ctrl.Result{}, nil
}

// UnsupportedOn says which nodes cannot run the spec's backend with its encapsulation,
// according to what their agents report in their FabricNodes (nodes whose agent has not
// reported yet are not judged).
func UnsupportedOn(spec fabricv1.ClusterNetworkSpec, nodes []fabricv1.FabricNode) string {
	backend := spec.Datapath.Backend
	if backend == "" {
		backend = fabricv1.DatapathOVS
	}
	encap := spec.Datapath.Encapsulation
	if encap == "" {
		encap = fabricv1.EncapsulationGeneve
	}
	var bad []string
	var can []string
	for _, n := range nodes {
		if len(n.Status.Capabilities) == 0 {
			continue
		}
		var here []string
		for _, c := range n.Status.Capabilities {
			if c.Backend == backend {
				for _, e := range c.Encapsulations {
					here = append(here, string(e))
				}
			}
		}
		if !slices.Contains(here, string(encap)) {
			bad = append(bad, n.Name)
			can = here
		}
	}
	if len(bad) == 0 {
		return ""
	}
	slices.Sort(bad)
	return fmt.Sprintf("the %s datapath cannot use %s encapsulation on nodes %s (there it supports: %s); choose another encapsulation or backend",
		backend, encap, strings.Join(bad, ", "), strings.Join(can, ", "))
}

// ensureAgents applies the node agents' objects (server-side apply: fields weft does not set
// are left to others), owned by the ClusterNetwork.
func (r *Reconciler) ensureAgents(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	// The policy bounding each node's workloads to their own node's objects goes first,
	// before any of them runs.
	objs := append(render.NodeIdentity(r.Namespace), render.Agent(r.Namespace, r.Images, cn)...)
	if r.Images.Gateway != "" {
		objs = append(objs, render.Gateway(r.Namespace, r.Images, cn)...)
	}
	if r.Images.DNS != "" {
		objs = append(objs, render.DNS(r.Namespace, r.Images, cn)...)
	}
	for _, o := range objs {
		if err := controllerutil.SetControllerReference(cn, o, r.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Patch(ctx, o, client.Apply, client.FieldOwner("weft-operator"), client.ForceOwnership); err != nil {
			return ctrl.Result{}, fmt.Errorf("applying %T %s: %w", o, o.GetName(), err)
		}
	}
	return ctrl.Result{}, nil
}

// countNodes records nodes, pod blocks and agents; until every agent runs the current
// settings, the ClusterNetwork is Reconciling.
func (r *Reconciler) countNodes(ctx context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	fabricNodes := &fabricv1.FabricNodeList{}
	if err := r.List(ctx, fabricNodes); err != nil {
		return ctrl.Result{}, err
	}
	counts := &fabricv1.NodeCounts{Total: int32(len(nodes.Items))}
	exists := map[string]bool{}
	for _, n := range nodes.Items {
		exists[n.Name] = true
	}
	for _, n := range fabricNodes.Items {
		if exists[n.Name] && len(n.Spec.PodCIDRs) > 0 {
			counts.WithPodBlock++
		}
	}
	ds := &appsv1.DaemonSet{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: render.AgentName}, ds); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		// Just applied and not yet in the cache: the DaemonSet's own event brings us back.
		cn.Status.Nodes = counts
		conditions.MarkReconciling(&cn.Status.Conditions, cn.Generation, fabricv1.ReasonAgentsRollingOut,
			"waiting for the node agents' DaemonSet")
		return ctrl.Result{}, phases.ErrHalt
	}
	counts.AgentsDesired, counts.AgentsReady = ds.Status.DesiredNumberScheduled, ds.Status.NumberReady
	cn.Status.Nodes = counts
	rolledOut := ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled == ds.Status.DesiredNumberScheduled &&
		ds.Status.NumberReady == ds.Status.DesiredNumberScheduled
	if !rolledOut {
		conditions.MarkReconciling(&cn.Status.Conditions, cn.Generation, fabricv1.ReasonAgentsRollingOut,
			fmt.Sprintf("%d of %d node agents ready (%d updated)", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, ds.Status.UpdatedNumberScheduled))
		return ctrl.Result{}, phases.ErrHalt
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) markReady(_ context.Context, cn *fabricv1.ClusterNetwork) (ctrl.Result, error) {
	conditions.MarkReady(&cn.Status.Conditions, cn.Generation, fabricv1.ReasonReconciled,
		fmt.Sprintf("cluster %s: pods %s, services %s, %s datapath", cn.Spec.ClusterID,
			join(cn.Spec.PodCIDRs), join(cn.Spec.ServiceCIDRs), render.BackendOf(cn)))
	return ctrl.Result{}, nil
}

func join(cidrs []fabricv1.CIDR) string {
	s := make([]string, len(cidrs))
	for i, c := range cidrs {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

// toSingleton maps any event to the ClusterNetwork.
var toSingleton = handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: fabricv1.ClusterNetworkName}}}
})

// SetupWithManager registers the controller. It watches only the singleton's name.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if len(r.Backends) == 0 {
		return errors.New("clusternetwork: Options.Backends is empty")
	}
	if r.Namespace == "" || r.Images.Agent == "" || r.Images.OVS == "" {
		return errors.New("clusternetwork: Options.Namespace and Options.Images are required")
	}
	onlyDefault := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetName() == fabricv1.ClusterNetworkName
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusternetwork").
		For(&fabricv1.ClusterNetwork{}, builder.WithPredicates(onlyDefault, predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.DaemonSet{}).
		// Nodes come and go; their FabricNodes carry blocks, capabilities and cleanups (not
		// the policies they realize: that is the fabricpolicy controller's).
		Watches(&corev1.Node{}, toSingleton, builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		// The cluster DNS Service: its cluster IPs are the resolvers FQDN rules trust.
		Watches(&corev1.Service{}, toSingleton, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == fabricv1.ClusterDNSNamespace && o.GetName() == fabricv1.ClusterDNSService
		}))).
		Watches(&fabricv1.FabricNode{}, toSingleton, builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			old, cur := e.ObjectOld.(*fabricv1.FabricNode), e.ObjectNew.(*fabricv1.FabricNode)
			return !equality.Semantic.DeepEqual(old.Spec, cur.Spec) ||
				!equality.Semantic.DeepEqual(old.Status.Capabilities, cur.Status.Capabilities) ||
				!equality.Semantic.DeepEqual(old.Status.Cleanup, cur.Status.Cleanup)
		}})).
		Complete(phases.QuietConflicts(r))
}
