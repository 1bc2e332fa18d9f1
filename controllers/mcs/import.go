package mcs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/mcs"
	"github.com/weft-net/weft/internal/patch"
	"github.com/weft-net/weft/internal/phases"
)

// ImportReconciler makes, for every Service exported anywhere in the clusterset, the
// ServiceImport, derived Service and EndpointSlices in its namespace here (when the
// namespace exists), and removes them once nobody exports it.
type ImportReconciler struct {
	client.Client
	View *View
	// Recorder reports endpoints a peer named outside its ranges (nil: not reported).
	Recorder record.EventRecorder
	// Metrics hears of every import made (nil: not observed).
	Metrics *Metrics

	// releasing is when each import's VIP was first found still allocated while its derived
	// Service was being made again (see createKeepingVIP).
	releasing sync.Map // mcs.Key -> time.Time
}

// vipReleaseWait bounds how long a derived Service made again waits for the API server to
// release its import's VIP: the old Service's delete is seen before its address is freed.
const vipReleaseWait = 10 * time.Second

// errVIPReleasing says the import's VIP is still held by the Service just deleted: the
// derived Service is made again, with that address, in a moment.
var errVIPReleasing = errors.New("the import's VIP is still being released")

// cacheBehind is how soon a Service is reconciled again when the cache has not yet seen an
// object this controller just made.
const cacheBehind = 200 * time.Millisecond

// unreadRequeue is how soon an import held for a peer whose records are not read yet is
// looked at again (from caches only).
const unreadRequeue = 5 * time.Second

// heldForUnreadPeers says whether the import of k names a cluster whose records the view
// does not read yet.
func (r *ImportReconciler) heldForUnreadPeers(ctx context.Context, k mcs.Key) (bool, error) {
	unread, err := r.View.Unread(ctx)
	if err != nil || len(unread) == 0 {
		return false, err
	}
	si := &mcsv1.ServiceImport{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: k.Name}, si); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	for _, c := range si.Status.Clusters {
		if unread[c.Cluster] {
			return true, nil
		}
	}
	return false, nil
}

// ReasonEndpointsOutsidePeerRanges is the reason of the ServiceImport's event when a peer's
// record names endpoint addresses outside the pod ranges that peer may claim.
const ReasonEndpointsOutsidePeerRanges = "EndpointsOutsidePeerRanges"

// ReasonDerivedObjectsFailed is the ServiceImport's Ready reason when its derived Service
// or EndpointSlices could not be written: the message says why.
const ReasonDerivedObjectsFailed = "DerivedObjectsFailed"

// Reconcile handles one exported Service, by namespace and name. It reads only caches (the
// View and the manager's), and writes only what differs from what is there.
func (r *ImportReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	k := mcs.Key{Namespace: req.Namespace, Name: req.Name}
	recs, err := r.View.Exports(ctx, k)
	if err != nil {
		return ctrl.Result{}, err
	}
	// An import that has endpoints from a peer whose records are not read yet stays as it
	// is: removing or shrinking it would cut traffic the data plane still carries (a new
	// operator leader, or a peer's API server away when the operator starts). The peer's
	// informer, once synced, queues the Services it exports; the requeue covers the rest.
	if held, err := r.heldForUnreadPeers(ctx, k); err != nil || held {
		return ctrl.Result{RequeueAfter: unreadRequeue}, err
	}
	if len(recs) == 0 {
		r.releasing.Delete(k)
		return ctrl.Result{}, r.remove(ctx, k)
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, types.NamespacedName{Name: k.Namespace}, ns); err != nil {
		// KEP-1645: imports appear only in namespaces that exist in the cluster.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	merged := mcs.Merge(exportsOf(recs))

	si := &mcsv1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name}}
	err = r.Get(ctx, client.ObjectKeyFromObject(si), si)
	switch {
	case apierrors.IsNotFound(err):
		// The derived Service first, so that the import is made with its VIP and answers in
		// DNS as soon as it exists (its owner reference is added below, once the import is).
		// When the Service cannot be made, the import is made without a VIP and says why
		// (below).
		svc, err := r.derivedService(ctx, k, nil, merged)
		if apierrors.IsAlreadyExists(err) {
			return ctrl.Result{RequeueAfter: cacheBehind}, nil // made a moment ago: the cache will have it
		}
		si.Labels = map[string]string{"app.kubernetes.io/managed-by": mcs.ManagedBy}
		si.Spec = merged.Spec
		if err == nil && merged.Spec.Type == mcsv1.ClusterSetIP && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			si.Spec.IPs, si.Spec.IPFamilies = vipsOf(svc), svc.Spec.IPFamilies
		}
		if err := r.Create(ctx, si); apierrors.IsAlreadyExists(err) {
			return ctrl.Result{RequeueAfter: cacheBehind}, nil // made a moment ago: the cache will have it
		} else if err != nil {
			return ctrl.Result{}, err
		}
		r.Metrics.imported(ctx, recs, time.Now())
	case err != nil:
		return ctrl.Result{}, err
	case si.Labels["app.kubernetes.io/managed-by"] != mcs.ManagedBy:
		return ctrl.Result{}, fmt.Errorf("ServiceImport %s exists and is not weft's: left alone", k)
	}

	// The derived objects; a failure is reported on the import below (and retried), never
	// hidden behind the import's earlier state.
	svc, derivedErr := r.derivedService(ctx, k, si, merged)
	if derivedErr == nil {
		derivedErr = r.importedSlices(ctx, k, si, merged, recs)
	}
	if apierrors.IsAlreadyExists(derivedErr) || errors.Is(derivedErr, errVIPReleasing) {
		// Made a moment ago (the cache will have it), or its VIP is about to be free.
		return ctrl.Result{RequeueAfter: cacheBehind}, nil
	}

	want := si.DeepCopy()
	want.Spec = merged.Spec
	// The exported labels and annotations (the oldest export's), but none in weft's own
	// domain; weft's managed-by label stays.
	want.Labels, want.Annotations = outsideWeft(merged.Labels), outsideWeft(merged.Annotations)
	if want.Labels == nil {
		want.Labels = map[string]string{}
	}
	want.Labels["app.kubernetes.io/managed-by"] = mcs.ManagedBy
	if merged.Spec.Type == mcsv1.ClusterSetIP {
		// The VIP is the derived Service's ClusterIP; while that Service cannot be read or
		// written, the import keeps the address it had.
		want.Spec.IPs, want.Spec.IPFamilies = si.Spec.IPs, si.Spec.IPFamilies
		if svc != nil && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			want.Spec.IPs = vipsOf(svc)
			// A ClusterSetIP import has the families of its VIPs; a headless one the
			// exported Service's (the oldest export's).
			want.Spec.IPFamilies = svc.Spec.IPFamilies
		}
	}
	if !equality.Semantic.DeepEqual(want.Spec, si.Spec) || !maps.Equal(want.Labels, si.Labels) || !maps.Equal(want.Annotations, si.Annotations) {
		if err := r.Patch(ctx, want, client.MergeFrom(si)); err != nil {
			return ctrl.Result{}, errors.Join(derivedErr, err)
		}
	}
	before := want.DeepCopy()
	want.Status.EndpointSliceObjects = mcsv1.EndpointSliceObjectsPresent
	want.Status.Clusters = nil
	for _, c := range merged.Clusters {
		want.Status.Clusters = append(want.Status.Clusters, mcsv1.ClusterStatus{Cluster: c})
	}
	ready := metav1.Condition{Type: string(mcsv1.ServiceImportConditionReady), Status: metav1.ConditionTrue,
		Reason: string(mcsv1.ServiceImportReasonReady), Message: fmt.Sprintf("imported from %d cluster(s)", len(merged.Clusters)),
		ObservedGeneration: want.Generation}
	if derivedErr != nil {
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonDerivedObjectsFailed
		ready.Message = fmt.Sprintf("imported from %d cluster(s), but its Service or EndpointSlices could not be written: %v",
			len(merged.Clusters), derivedErr)
	}
	meta.SetStatusCondition(&want.Status.Conditions, ready)
	if err := patch.Status(ctx, r.Client, before, want, importStatus); err != nil {
		return ctrl.Result{}, errors.Join(derivedErr, err)
	}
	return ctrl.Result{}, derivedErr
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

// vipsOf is the import's VIPs: its derived Service's ClusterIPs.
func vipsOf(svc *corev1.Service) []string {
	if len(svc.Spec.ClusterIPs) > 0 {
		return svc.Spec.ClusterIPs
	}
	return []string{svc.Spec.ClusterIP}
}

// derivedService makes the selector-less Service whose ClusterIP is the import's VIP (or
// a headless one), owned by si (none yet when si is nil); kube-proxy load-balances it over
// the imported EndpointSlices.
func (r *ImportReconciler) derivedService(ctx context.Context, k mcs.Key, si *mcsv1.ServiceImport, merged mcs.Merged) (*corev1.Service, error) {
	want := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: mcs.DerivedName(k),
		Labels: map[string]string{mcs.LabelDerivedFrom: k.Name, "app.kubernetes.io/managed-by": mcs.ManagedBy}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, SessionAffinity: merged.Spec.SessionAffinity,
			SessionAffinityConfig: merged.Spec.SessionAffinityConfig}}
	if merged.Spec.Type == mcsv1.Headless {
		want.Spec.ClusterIP = corev1.ClusterIPNone
	}
	// Named as a multi-port Service must be (see mcs.DerivedPortNames); the target port is
	// what the API server would default it to (the Service has no selector: the imported
	// EndpointSlices say where traffic goes), so an unchanged import compares equal.
	names := mcs.DerivedPortNames(merged.Spec.Ports)
	for i, p := range merged.Spec.Ports {
		want.Spec.Ports = append(want.Spec.Ports, corev1.ServicePort{Name: names[i], Protocol: p.Protocol,
			AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: intstr.FromInt32(p.Port)})
	}
	if si != nil { // nil: made before its import (Reconcile adds the reference after)
		if err := controllerutil.SetControllerReference(si, want, r.Scheme()); err != nil {
			return nil, err
		}
	}
	have := &corev1.Service{}
	err := r.Get(ctx, client.ObjectKeyFromObject(want), have)
	if apierrors.IsNotFound(err) {
		return want, r.createKeepingVIP(ctx, k, want, si)
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
	have.Labels = want.Labels
	if si != nil {
		have.OwnerReferences = want.OwnerReferences
	}
	have.Spec.Ports, have.Spec.SessionAffinity = want.Spec.Ports, want.Spec.SessionAffinity
	if want.Spec.SessionAffinityConfig != nil || have.Spec.SessionAffinity == corev1.ServiceAffinityNone {
		have.Spec.SessionAffinityConfig = want.Spec.SessionAffinityConfig
	}
	if equality.Semantic.DeepEqual(before, have) {
		return have, nil
	}
	return have, r.Patch(ctx, have, client.MergeFrom(before))
}

// createKeepingVIP creates the derived Service. When its import exists with a VIP (the
// Service was deleted, by someone or with an operator restart in between), it asks for that
// address again: clients and DNS caches holding it keep working. The API server frees a
// deleted Service's address only after the delete is seen, so while no other Service holds
// it this waits (errVIPReleasing, at most vipReleaseWait). Only if the address was taken
// meanwhile does the Service get a new one (and the import follows).
func (r *ImportReconciler) createKeepingVIP(ctx context.Context, k mcs.Key, svc *corev1.Service, si *mcsv1.ServiceImport) error {
	if si == nil || si.Spec.Type != mcsv1.ClusterSetIP || len(si.Spec.IPs) == 0 || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return r.Create(ctx, svc)
	}
	keep := svc.DeepCopy()
	keep.Spec.ClusterIP, keep.Spec.ClusterIPs = si.Spec.IPs[0], append([]string(nil), si.Spec.IPs...)
	if len(si.Spec.IPFamilies) == len(si.Spec.IPs) {
		keep.Spec.IPFamilies = append([]corev1.IPFamily(nil), si.Spec.IPFamilies...)
	}
	err := r.Create(ctx, keep)
	if err == nil || !apierrors.IsInvalid(err) {
		r.releasing.Delete(k)
		keep.DeepCopyInto(svc)
		return err
	}
	first, _ := r.releasing.LoadOrStore(k, time.Now())
	holder, lerr := r.holderOf(ctx, si.Spec.IPs)
	if lerr == nil && holder == "" && time.Since(first.(time.Time)) < vipReleaseWait {
		return errVIPReleasing
	}
	r.releasing.Delete(k)
	ctrl.LoggerFrom(ctx).Info("the import's VIP is taken; the derived Service gets a new one", "vip", si.Spec.IPs, "holder", holder, "reason", err.Error())
	return r.Create(ctx, svc)
}

// holderOf names the Service (from the cache) that has one of ips as its ClusterIP, or "".
func (r *ImportReconciler) holderOf(ctx context.Context, ips []string) (string, error) {
	list := &corev1.ServiceList{}
	if err := r.List(ctx, list); err != nil {
		return "", err
	}
	for i := range list.Items {
		for _, ip := range vipsOf(&list.Items[i]) {
			if slices.Contains(ips, ip) {
				return list.Items[i].Namespace + "/" + list.Items[i].Name, nil
			}
		}
	}
	return "", nil
}

// importedSlices gives the derived Service every cluster's endpoints (this one's too).
func (r *ImportReconciler) importedSlices(ctx context.Context, k mcs.Key, si *mcsv1.ServiceImport, merged mcs.Merged, recs []ClusterRecord) error {
	keep := map[string]bool{}
	for _, rec := range recs {
		if len(rec.Dropped) > 0 && r.Recorder != nil {
			r.Recorder.Eventf(si, corev1.EventTypeWarning, ReasonEndpointsOutsidePeerRanges,
				"cluster %s exports %d endpoint address(es) outside the pod ranges it may claim (such as %s): not imported",
				rec.Export.Cluster, len(rec.Dropped), rec.Dropped[0])
		}
		served := mcs.ServedPorts(merged, rec.Export)
		for i := range rec.Endpoints {
			want := mcs.ImportedSlice(k, rec.Export.Cluster, &rec.Endpoints[i], served)
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
		if si.Labels["app.kubernetes.io/managed-by"] == mcs.ManagedBy {
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

// SetupWithManager watches this cluster's records, the peers' (through the View) and what
// weft derived from them (an import, its Service or EndpointSlices changed or removed by
// someone else is put back), and namespaces (an import appears when its namespace does).
// Nothing is read again on a timer.
func (r *ImportReconciler) SetupWithManager(mgr ctrl.Manager) error {
	fair := newFairness()
	keys := newKeySource(fair)
	r.View.OnChange(keys.add)
	byRecord := fair.handler(func(_ context.Context, o client.Object) []reconcile.Request {
		rec, ok := o.(*fabricv1.ExportRecord)
		if !ok || o.GetNamespace() != r.View.Namespace {
			return nil
		}
		return []reconcile.Request{request(mcs.Key{Namespace: rec.Spec.Service.Namespace, Name: rec.Spec.Service.Name})}
	})
	own := func(label string) handler.EventHandler {
		return fair.handler(func(_ context.Context, o client.Object) []reconcile.Request {
			l := o.GetLabels()
			if l["app.kubernetes.io/managed-by"] != mcs.ManagedBy && l[discoveryv1.LabelManagedBy] != mcs.ManagedBy {
				return nil
			}
			name := o.GetName()
			if label != "" {
				name = l[label]
			}
			if name == "" {
				return nil
			}
			return []reconcile.Request{request(mcs.Key{Namespace: o.GetNamespace(), Name: name})}
		})
	}
	byNamespace := fair.handler(func(ctx context.Context, o client.Object) []reconcile.Request {
		var out []reconcile.Request
		for _, k := range r.View.Keys(ctx, o.GetName()) {
			out = append(out, request(k))
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).Named("serviceimport").
		Watches(&fabricv1.ExportRecord{}, byRecord).
		Watches(&mcsv1.ServiceImport{}, own("")).
		Watches(&corev1.Service{}, own(mcs.LabelDerivedFrom)).
		Watches(&discoveryv1.EndpointSlice{}, own(mcsv1.LabelServiceName)).
		Watches(&corev1.Namespace{}, byNamespace, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(event.UpdateEvent) bool { return false }, DeleteFunc: func(event.DeleteEvent) bool { return false }})).
		WatchesRawSource(keys.source()).
		WithOptions(controller.Options{MaxConcurrentReconciles: Workers}).
		Complete(phases.QuietConflicts(fair.reconciler(r)))
}
