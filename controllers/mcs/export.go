// Package mcs runs Multi-Cluster Services (KEP-1645, sigs.k8s.io/mcs-api) without a broker:
// the export controller validates each ServiceExport and publishes a record of it in the
// operator's namespace, where peers read it; the import controller merges this cluster's
// and its peers' records into a ServiceImport, a derived Service (whose ClusterIP is the
// import's VIP) and EndpointSlices in every namespace that exists here.
package mcs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/mcs"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// Workers is how many Services each MCS controller reconciles at once: their work is
// mostly waiting for the API server.
const Workers = 8

// Setup registers the MCS controllers (exports, imports and the View's peer follower) on one
// View.
func Setup(mgr ctrl.Manager, v *View, m *Metrics) error {
	if err := setupPeerSync(mgr, v); err != nil {
		return fmt.Errorf("mcs peer follower: %w", err)
	}
	if err := (&ExportReconciler{Client: mgr.GetClient(), View: v}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("serviceexport controller: %w", err)
	}
	if err := (&ImportReconciler{Client: mgr.GetClient(), View: v, Recorder: mgr.GetEventRecorderFor("weft-operator"), Metrics: m}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("serviceimport controller: %w", err)
	}
	return nil
}

// ExportReconciler reconciles ServiceExports.
type ExportReconciler struct {
	client.Client
	View *View
}

// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceexports,verbs=get;list;watch
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceexports/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fabric.weft.dev,namespace=weft-system,resources=exportrecords,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Reconcile validates a ServiceExport, publishes (or withdraws) its record, and reports
// Valid, Conflict and Ready.
func (r *ExportReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	k := mcs.Key{Namespace: req.Namespace, Name: req.Name}
	se := &mcsv1.ServiceExport{}
	if err := r.Get(ctx, req.NamespacedName, se); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.withdraw(ctx, k)
		}
		return ctrl.Result{}, err
	}
	if !se.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.withdraw(ctx, k)
	}
	before := se.DeepCopy()
	res, err := r.reconcile(ctx, k, se)
	if perr := patch.Status(ctx, r.Client, before, se, exportStatus); perr != nil {
		err = errors.Join(err, fmt.Errorf("updating status: %w", perr))
	}
	return res, err
}

func exportStatus(se *mcsv1.ServiceExport) any { return se.Status }

func (r *ExportReconciler) reconcile(ctx context.Context, k mcs.Key, se *mcsv1.ServiceExport) (ctrl.Result, error) {
	self, err := r.View.ClusterID(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	if self == "" {
		setCond(se, mcsv1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1.ServiceExportReasonPending,
			"this cluster has no ClusterNetwork with a clusterID yet")
		return ctrl.Result{}, nil // the ClusterNetwork's arrival queues every export
	}
	svc := &corev1.Service{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: k.Name}, svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		r.invalid(se, mcsv1.ServiceExportReasonNoService, fmt.Sprintf("service %s not found", k))
		return ctrl.Result{}, r.withdraw(ctx, k)
	}
	export, err := mcs.ExportOf(self, se, svc)
	if err != nil {
		r.invalid(se, mcsv1.ServiceExportReasonInvalidServiceType, err.Error())
		return ctrl.Result{}, r.withdraw(ctx, k)
	}
	setCond(se, mcsv1.ServiceExportConditionValid, metav1.ConditionTrue, mcsv1.ServiceExportReasonValid, "the service can be exported")
	if err := r.publish(ctx, k, export); apierrors.IsAlreadyExists(err) {
		return ctrl.Result{RequeueAfter: cacheBehind}, nil // made a moment ago: the cache will have it
	} else if err != nil {
		setCond(se, mcsv1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1.ServiceExportReasonFailed, err.Error())
		return ctrl.Result{}, err
	}
	// Conflicts: every cluster's export of the service, as this cluster sees them.
	recs, err := r.View.Exports(ctx, k)
	exports := exportsOf(recs)
	if len(exports) == 0 {
		exports = []mcs.Export{export}
	}
	merged := mcs.Merge(exports)
	if len(merged.Conflicts) == 0 {
		setCond(se, mcsv1.ServiceExportConditionConflict, metav1.ConditionFalse, mcsv1.ServiceExportReasonNoConflicts,
			fmt.Sprintf("exported by %s with no conflict", strings.Join(merged.Clusters, ", ")))
	} else {
		var msgs []string
		for _, c := range merged.Conflicts {
			msgs = append(msgs, string(c.Reason)+": "+c.Message)
		}
		setCond(se, mcsv1.ServiceExportConditionConflict, metav1.ConditionTrue, merged.Conflicts[0].Reason, strings.Join(msgs, "; "))
	}
	setCond(se, mcsv1.ServiceExportConditionReady, metav1.ConditionTrue, mcsv1.ServiceExportReasonExported,
		"published to the clusterset")
	return ctrl.Result{}, err
}

func (r *ExportReconciler) invalid(se *mcsv1.ServiceExport, reason mcsv1.ServiceExportConditionReason, msg string) {
	setCond(se, mcsv1.ServiceExportConditionValid, metav1.ConditionFalse, reason, msg)
	setCond(se, mcsv1.ServiceExportConditionReady, metav1.ConditionFalse, reason, "not exported: "+msg)
	meta.RemoveStatusCondition(&se.Status.Conditions, string(mcsv1.ServiceExportConditionConflict))
}

// publish writes the export's record: the Service's shape and its ready endpoints.
func (r *ExportReconciler) publish(ctx context.Context, k mcs.Key, e mcs.Export) error {
	slices := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, slices, client.InNamespace(k.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: k.Name}); err != nil {
		return err
	}
	var own []discoveryv1.EndpointSlice
	for _, s := range slices.Items {
		if s.Labels[discoveryv1.LabelManagedBy] != mcs.ManagedBy {
			own = append(own, s)
		}
	}
	return apply(ctx, r.Client, mcs.Record(r.View.Namespace, k, e, own), func(have, want *fabricv1.ExportRecord) {
		have.Labels, have.Spec = want.Labels, want.Spec
	})
}

// withdraw deletes the export's record.
func (r *ExportReconciler) withdraw(ctx context.Context, k mcs.Key) error {
	rec := &fabricv1.ExportRecord{}
	err := r.Get(ctx, types.NamespacedName{Namespace: r.View.Namespace, Name: mcs.RecordName(k)}, rec)
	if err == nil {
		err = r.Delete(ctx, rec)
	}
	return client.IgnoreNotFound(err)
}

// SetupWithManager watches ServiceExports, the Services and EndpointSlices they export,
// their records, the peers' records (through the View: conflicts) and the ClusterNetwork
// (this cluster's ID). Nothing is read again on a timer.
func (r *ExportReconciler) SetupWithManager(mgr ctrl.Manager) error {
	fair := newFairness()
	sameName := fair.handler(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}}
	})
	bySlice := fair.handler(func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if name := l[discoveryv1.LabelServiceName]; name != "" && l[discoveryv1.LabelManagedBy] != mcs.ManagedBy {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
		}
		return nil
	})
	byRecord := fair.handler(func(_ context.Context, o client.Object) []reconcile.Request {
		rec, ok := o.(*fabricv1.ExportRecord)
		if !ok || o.GetNamespace() != r.View.Namespace {
			return nil
		}
		return []reconcile.Request{request(mcs.Key{Namespace: rec.Spec.Service.Namespace, Name: rec.Spec.Service.Name})}
	})
	allExports := fair.handler(func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := &mcsv1.ServiceExportList{}
		if err := r.List(ctx, list); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, se := range list.Items {
			out = append(out, request(mcs.Key{Namespace: se.Namespace, Name: se.Name}))
		}
		return out
	})
	// A peer's change to its export of a Service re-evaluates the conflicts of this
	// cluster's export of it.
	peerChanges := newKeySource(fair)
	r.View.OnChange(peerChanges.add)
	return ctrl.NewControllerManagedBy(mgr).Named("serviceexport").
		Watches(&mcsv1.ServiceExport{}, sameName).
		WatchesRawSource(peerChanges.source()).
		Watches(&corev1.Service{}, sameName).
		Watches(&discoveryv1.EndpointSlice{}, bySlice).
		Watches(&fabricv1.ExportRecord{}, byRecord).
		Watches(&fabricv1.ClusterNetwork{}, allExports, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectOld.(*fabricv1.ClusterNetwork).Spec.ClusterID != e.ObjectNew.(*fabricv1.ClusterNetwork).Spec.ClusterID
			}})).
		WithOptions(controller.Options{MaxConcurrentReconciles: Workers}).
		Complete(phases.QuietConflicts(fair.reconciler(r)))
}

func setCond(se *mcsv1.ServiceExport, t mcsv1.ServiceExportConditionType, status metav1.ConditionStatus, reason mcsv1.ServiceExportConditionReason, msg string) {
	meta.SetStatusCondition(&se.Status.Conditions, metav1.Condition{Type: string(t), Status: status, Reason: string(reason),
		Message: msg, ObservedGeneration: se.Generation})
}

// apply creates want, or patches the existing object with update when it differs. A merge
// patch of what differs, not an update: a cache a moment behind the API server makes no
// conflict to retry.
func apply[T client.Object](ctx context.Context, c client.Client, want T, update func(have, want T)) error {
	have := want.DeepCopyObject().(T)
	err := c.Get(ctx, client.ObjectKeyFromObject(want), have)
	if apierrors.IsNotFound(err) {
		return c.Create(ctx, want) // AlreadyExists: the cache is behind (see cacheBehind)
	}
	if err != nil {
		return err
	}
	before := have.DeepCopyObject().(T)
	update(have, want)
	if equality.Semantic.DeepEqual(before, have) {
		return nil
	}
	return c.Patch(ctx, have, client.MergeFrom(before))
}
