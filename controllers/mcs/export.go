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
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/internal/mcs"
	"github.com/weft-net/weft/internal/patch"
)

// Resync bounds how long a change in a peer (a conflicting export) takes to show.
const Resync = 5 * time.Second

// ExportReconciler reconciles ServiceExports.
type ExportReconciler struct {
	client.Client
	View *View
}

// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceexports,verbs=get;list;watch
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceexports/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=multicluster.x-k8s.io,resources=serviceimports/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

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
		return ctrl.Result{RequeueAfter: Resync}, nil
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
	if err := r.publish(ctx, k, export); err != nil {
		setCond(se, mcsv1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1.ServiceExportReasonFailed, err.Error())
		return ctrl.Result{}, err
	}
	// Conflicts: every cluster's export of the service, as this cluster sees them.
	recs, viewErr := r.View.Read(ctx)
	exports := exportsOf(recs, k)
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
	return ctrl.Result{RequeueAfter: Resync}, viewErr
}

func (r *ExportReconciler) invalid(se *mcsv1.ServiceExport, reason mcsv1.ServiceExportConditionReason, msg string) {
	setCond(se, mcsv1.ServiceExportConditionValid, metav1.ConditionFalse, reason, msg)
	setCond(se, mcsv1.ServiceExportConditionReady, metav1.ConditionFalse, reason, "not exported: "+msg)
	meta.RemoveStatusCondition(&se.Status.Conditions, string(mcsv1.ServiceExportConditionConflict))
}

// publish writes the export's records: the ServiceImport describing it and the
// EndpointSlices of its ready endpoints.
func (r *ExportReconciler) publish(ctx context.Context, k mcs.Key, e mcs.Export) error {
	ns := r.View.Namespace
	if err := apply(ctx, r.Client, mcs.Record(ns, k, e), func(have, want *mcsv1.ServiceImport) {
		have.Labels, have.Annotations, have.Spec = want.Labels, want.Annotations, want.Spec
	}); err != nil {
		return err
	}
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
	keep := map[string]bool{}
	for _, rec := range mcs.EndpointRecords(ns, k, e.Cluster, own) {
		keep[rec.Name] = true
		if err := apply(ctx, r.Client, rec, func(have, want *discoveryv1.EndpointSlice) {
			have.Labels, have.Endpoints, have.Ports = want.Labels, want.Endpoints, want.Ports
		}); err != nil {
			return err
		}
	}
	return r.deleteRecordSlices(ctx, k, keep)
}

// withdraw deletes the export's records.
func (r *ExportReconciler) withdraw(ctx context.Context, k mcs.Key) error {
	rec := &mcsv1.ServiceImport{}
	err := r.Get(ctx, types.NamespacedName{Namespace: r.View.Namespace, Name: mcs.RecordName(k)}, rec)
	if err == nil && rec.Labels[mcs.LabelRecord] == "true" {
		err = r.Delete(ctx, rec)
	}
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	return r.deleteRecordSlices(ctx, k, nil)
}

func (r *ExportReconciler) deleteRecordSlices(ctx context.Context, k mcs.Key, keep map[string]bool) error {
	slices := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, slices, client.InNamespace(r.View.Namespace), client.MatchingLabels{mcs.LabelRecord: "true",
		mcsv1.LabelServiceName: k.Name, mcs.LabelServiceNamespace: k.Namespace}); err != nil {
		return err
	}
	var errs []error
	for i := range slices.Items {
		if !keep[slices.Items[i].Name] {
			errs = append(errs, client.IgnoreNotFound(r.Delete(ctx, &slices.Items[i])))
		}
	}
	return errors.Join(errs...)
}

// SetupWithManager watches ServiceExports, the Services and EndpointSlices they export, and
// their records.
func (r *ExportReconciler) SetupWithManager(mgr ctrl.Manager) error {
	sameName := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}}
	})
	bySlice := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[mcs.LabelRecord] == "true" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[mcs.LabelServiceNamespace], Name: l[mcsv1.LabelServiceName]}}}
		}
		if name := l[discoveryv1.LabelServiceName]; name != "" && l[discoveryv1.LabelManagedBy] != mcs.ManagedBy {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
		}
		return nil
	})
	byRecord := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[mcs.LabelRecord] != "true" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[mcs.LabelServiceNamespace], Name: l[mcsv1.LabelServiceName]}}}
	})
	// A peer's change to its export of a Service re-evaluates the conflicts of this
	// cluster's export of it (a full queue drops it: the Resync requeue catches up).
	peerChanges := newServiceQueue()
	r.View.OnChange(func(k mcs.Key) { peerChanges.offer(k) })
	return ctrl.NewControllerManagedBy(mgr).Named("serviceexport").
		For(&mcsv1.ServiceExport{}).
		WatchesRawSource(peerChanges.source()).
		Watches(&corev1.Service{}, sameName).
		Watches(&discoveryv1.EndpointSlice{}, bySlice).
		Watches(&mcsv1.ServiceImport{}, byRecord).
		Complete(r)
}

func setCond(se *mcsv1.ServiceExport, t mcsv1.ServiceExportConditionType, status metav1.ConditionStatus, reason mcsv1.ServiceExportConditionReason, msg string) {
	meta.SetStatusCondition(&se.Status.Conditions, metav1.Condition{Type: string(t), Status: status, Reason: string(reason),
		Message: msg, ObservedGeneration: se.Generation})
}

// apply creates want, or updates the existing object with update when it differs.
func apply[T client.Object](ctx context.Context, c client.Client, want T, update func(have, want T)) error {
	have := want.DeepCopyObject().(T)
	err := c.Get(ctx, client.ObjectKeyFromObject(want), have)
	if apierrors.IsNotFound(err) {
		return c.Create(ctx, want)
	}
	if err != nil {
		return err
	}
	before := have.DeepCopyObject()
	update(have, want)
	if equality.Semantic.DeepEqual(before, have) {
		return nil
	}
	return c.Update(ctx, have)
}
