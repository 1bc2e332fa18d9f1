package mcs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/internal/mcs"
	"github.com/weft-net/weft/internal/patch"
)

// ImportReconciler makes, for every Service exported anywhere in the clusterset, the
// ServiceImport, derived Service and EndpointSlices in its namespace here (when the
// namespace exists), and removes them once nobody exports it.
type ImportReconciler struct {
	client.Client
	View *View
}

// Reconcile handles one exported Service, by namespace and name.
func (r *ImportReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	k := mcs.Key{Namespace: req.Namespace, Name: req.Name}
	recs, viewErr := r.View.Read(ctx)
	if viewErr != nil && recs == nil {
		return ctrl.Result{}, viewErr
	}
	exports := exportsOf(recs, k)
	if len(exports) == 0 {
		return ctrl.Result{}, errors.Join(viewErr, r.remove(ctx, k))
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: k.Namespace}, ns); err != nil {
		// KEP-1645: imports appear only in namespaces that exist in the cluster.
		return ctrl.Result{}, errors.Join(viewErr, client.IgnoreNotFound(err))
	}
	merged := mcs.Merge(exports)

	si := &mcsv1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name}}
	err := r.Get(ctx, client.ObjectKeyFromObject(si), si)
	switch {
	case apierrors.IsNotFound(err):
		si.Labels = map[string]string{"app.kubernetes.io/managed-by": mcs.ManagedBy}
		si.Spec = merged.Spec
		if err := r.Create(ctx, si); err != nil {
			return ctrl.Result{}, err
		}
	case err != nil:
		return ctrl.Result{}, err
	case si.Labels[mcs.LabelRecord] == "true" || si.Labels["app.kubernetes.io/managed-by"] != mcs.ManagedBy:
		return ctrl.Result{}, fmt.Errorf("ServiceImport %s exists and is not weft's: left alone", k)
	}

	svc, err := r.derivedService(ctx, k, si, merged)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.importedSlices(ctx, k, si, merged, recs); err != nil {
		return ctrl.Result{}, err
	}

	want := si.DeepCopy()
	want.Spec = merged.Spec
	// The exported labels and annotations (the oldest export's), but none in weft's own
	// domain (an exported fabric.weft.dev/export-record label would make the import look
	// like a record); weft's managed-by label stays.
	want.Labels, want.Annotations = outsideWeft(merged.Labels), outsideWeft(merged.Annotations)
	if want.Labels == nil {
		want.Labels = map[string]string{}
	}
	want.Labels["app.kubernetes.io/managed-by"] = mcs.ManagedBy
	if merged.Spec.Type == mcsv1.ClusterSetIP && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		want.Spec.IPs = svc.Spec.ClusterIPs
		if len(want.Spec.IPs) == 0 {
			want.Spec.IPs = []string{svc.Spec.ClusterIP}
		}
	}
	// A ClusterSetIP import has the families of its VIPs; a headless one the exported
	// Service's (the oldest export's) — a selector-less headless Service like the derived one
	// is given both families even in a single-stack cluster.
	if merged.Spec.Type == mcsv1.ClusterSetIP {
		want.Spec.IPFamilies = svc.Spec.IPFamilies
	}
	if !reflect.DeepEqual(want.Spec, si.Spec) || !maps.Equal(want.Labels, si.Labels) || !maps.Equal(want.Annotations, si.Annotations) {
		if err := r.Update(ctx, want); err != nil {
			return ctrl.Result{}, err
		}
	}
	before := want.DeepCopy()
	want.Status.EndpointSliceObjects = mcsv1.EndpointSliceObjectsPresent
	want.Status.Clusters = nil
	for _, c := range merged.Clusters {
		want.Status.Clusters = append(want.Status.Clusters, mcsv1.ClusterStatus{Cluster: c})
	}
	meta.SetStatusCondition(&want.Status.Conditions, metav1.Condition{Type: string(mcsv1.ServiceImportConditionReady),
		Status: metav1.ConditionTrue, Reason: string(mcsv1.ServiceImportReasonReady),
		Message: fmt.Sprintf("imported from %d cluster(s)", len(merged.Clusters)), ObservedGeneration: want.Generation})
	if err := patch.Status(ctx, r.Client, before, want, importStatus); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, viewErr
}

func importStatus(si *mcsv1.ServiceImport) any { return si.Status }

// outsideWeft is m without the keys under fabric.weft.dev/ (nil when nothing is left).
func outsideWeft(m map[string]string) map[string]string {
	var out map[string]string
	for k, v := range m {
		if !strings.HasPrefix(k, "fabric.weft.dev/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// derivedService makes the selector-less Service whose ClusterIP is the import's VIP (or
// a headless one); kube-proxy load-balances it over the imported EndpointSlices.
func (r *ImportReconciler) derivedService(ctx context.Context, k mcs.Key, si *mcsv1.ServiceImport, merged mcs.Merged) (*corev1.Service, error) {
	want := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: mcs.DerivedName(k),
		Labels: map[string]string{mcs.LabelDerivedFrom: k.Name, "app.kubernetes.io/managed-by": mcs.ManagedBy}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, SessionAffinity: merged.Spec.SessionAffinity,
			SessionAffinityConfig: merged.Spec.SessionAffinityConfig}}
	if merged.Spec.Type == mcsv1.Headless {
		want.Spec.ClusterIP = corev1.ClusterIPNone
	}
	for _, p := range merged.Spec.Ports {
		sp := corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, AppProtocol: p.AppProtocol, Port: p.Port}
		if p.Name == "" {
			sp.TargetPort = intstr.FromInt32(p.Port)
		}
		want.Spec.Ports = append(want.Spec.Ports, sp)
	}
	if err := controllerutil.SetControllerReference(si, want, r.Scheme()); err != nil {
		return nil, err
	}
	have := &corev1.Service{}
	err := r.Get(ctx, client.ObjectKeyFromObject(want), have)
	if apierrors.IsNotFound(err) {
		return want, r.Create(ctx, want)
	}
	if err != nil {
		return nil, err
	}
	if (have.Spec.ClusterIP == corev1.ClusterIPNone) != (want.Spec.ClusterIP == corev1.ClusterIPNone) {
		// A Service's ClusterIP is immutable: make it again for the other type.
		if err := r.Delete(ctx, have); err != nil {
			return nil, err
		}
		return want, r.Create(ctx, want)
	}
	before := have.DeepCopy()
	have.Labels, have.OwnerReferences = want.Labels, want.OwnerReferences
	have.Spec.Ports, have.Spec.SessionAffinity = want.Spec.Ports, want.Spec.SessionAffinity
	if want.Spec.SessionAffinityConfig != nil || have.Spec.SessionAffinity == corev1.ServiceAffinityNone {
		have.Spec.SessionAffinityConfig = want.Spec.SessionAffinityConfig
	}
	if equality.Semantic.DeepEqual(before, have) {
		return have, nil
	}
	return have, r.Update(ctx, have)
}

// importedSlices gives the derived Service every cluster's endpoints (this one's too).
func (r *ImportReconciler) importedSlices(ctx context.Context, k mcs.Key, si *mcsv1.ServiceImport, merged mcs.Merged, recs []Records) error {
	keep := map[string]bool{}
	for _, rec := range recs {
		served := mcs.ServedPorts(merged, rec.Exports[k])
		for i := range rec.Endpoints[k] {
			want := mcs.ImportedSlice(k, &rec.Endpoints[k][i], served)
			if err := controllerutil.SetControllerReference(si, want, r.Scheme()); err != nil {
				return err
			}
			keep[want.Name] = true
			if err := apply(ctx, r.Client, want, func(have, want *discoveryv1.EndpointSlice) {
				have.Labels, have.OwnerReferences, have.Endpoints, have.Ports = want.Labels, want.OwnerReferences, want.Endpoints, want.Ports
			}); err != nil {
				return err
			}
		}
	}
	return r.deleteSlices(ctx, k, keep)
}

func (r *ImportReconciler) deleteSlices(ctx context.Context, k mcs.Key, keep map[string]bool) error {
	slices := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, slices, client.InNamespace(k.Namespace), client.MatchingLabels{
		discoveryv1.LabelServiceName: mcs.DerivedName(k), discoveryv1.LabelManagedBy: mcs.ManagedBy}); err != nil {
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

// remove deletes weft's ServiceImport, derived Service and slices of a Service nobody
// exports any more (garbage collection would follow the owner references; this does not
// wait for it).
func (r *ImportReconciler) remove(ctx context.Context, k mcs.Key) error {
	var errs []error
	si := &mcsv1.ServiceImport{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: k.Name}, si); err == nil {
		if si.Labels["app.kubernetes.io/managed-by"] == mcs.ManagedBy && si.Labels[mcs.LabelRecord] != "true" {
			errs = append(errs, client.IgnoreNotFound(r.Delete(ctx, si)))
		}
	} else {
		errs = append(errs, client.IgnoreNotFound(err))
	}
	svc := &corev1.Service{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: mcs.DerivedName(k)}, svc); err == nil {
		if svc.Labels["app.kubernetes.io/managed-by"] == mcs.ManagedBy {
			errs = append(errs, client.IgnoreNotFound(r.Delete(ctx, svc)))
		}
	} else {
		errs = append(errs, client.IgnoreNotFound(err))
	}
	errs = append(errs, r.deleteSlices(ctx, k, nil))
	return errors.Join(errs...)
}

// SetupWithManager watches this cluster's records and weft's imports, and the peers'
// records through the View; everything is read again every Resync too.
func (r *ImportReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ticks := newServiceQueue()
	kick := make(chan struct{}, 1)
	r.View.OnChange(func(k mcs.Key) {
		// The Service at once; everything again if the queue is full.
		if !ticks.offer(k) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	})
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { r.View.Run(ctx); return nil })); err != nil {
		return err
	}
	if err := mgr.Add(&resyncer{view: r.View, c: r.Client, out: ticks, kick: kick}); err != nil {
		return err
	}
	byRecord := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[mcs.LabelRecord] == "true" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[mcs.LabelServiceNamespace], Name: l[mcsv1.LabelServiceName]}}}
		}
		if l["app.kubernetes.io/managed-by"] == mcs.ManagedBy {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).Named("serviceimport").
		Watches(&mcsv1.ServiceImport{}, byRecord).
		WatchesRawSource(ticks.source()).
		Complete(r)
}

// resyncer enqueues each Service exported anywhere and each import weft made: every
// Resync, and at once when a peer's change could not be queued by itself.
type resyncer struct {
	view *View
	c    client.Client
	out  serviceQueue
	kick chan struct{}
}

func (s *resyncer) Start(ctx context.Context) error {
	t := time.NewTicker(Resync)
	defer t.Stop()
	for {
		keys := map[mcs.Key]bool{}
		recs, _ := s.view.Read(ctx)
		for _, r := range recs {
			for k := range r.Exports {
				keys[k] = true
			}
		}
		imports := &mcsv1.ServiceImportList{}
		if err := s.c.List(ctx, imports, client.MatchingLabels{"app.kubernetes.io/managed-by": mcs.ManagedBy}); err == nil {
			for _, si := range imports.Items {
				keys[mcs.Key{Namespace: si.Namespace, Name: si.Name}] = true
			}
		}
		for k := range keys {
			select {
			case s.out <- s.out.event(k):
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

// NeedLeaderElection: only the leader writes imports.
func (s *resyncer) NeedLeaderElection() bool { return true }
