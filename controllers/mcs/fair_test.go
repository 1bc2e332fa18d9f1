package mcs

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// A Service of a namespace with nothing waiting is reconciled before a namespace's backlog;
// within a namespace, first come, first served.
func TestFairnessServesAQuietNamespaceFirst(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	f := newFairness()
	req := func(ns, name string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		f.add(q, req("bulk", name))
	}
	f.add(q, req("other", "single"))
	f.add(q, req("bulk", "a")) // again: still one
	var order []string
	for range 5 {
		r, _, _ := q.GetWithPriority()
		f.started(r)
		order = append(order, r.Namespace+"/"+r.Name)
		q.Done(r)
	}
	want := []string{"bulk/a", "other/single", "bulk/b", "bulk/c", "bulk/d"}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("reconcile order %v, want %v", order, want)
		}
	}
	if q.Len() != 0 {
		t.Errorf("%d left in the queue, want none (a repeated key is queued once)", q.Len())
	}
	rec := f.reconciler(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }))
	f.add(q, req("bulk", "e"))
	if _, err := rec.Reconcile(context.Background(), req("bulk", "e")); err != nil || f.waiting["bulk"] != 0 {
		t.Errorf("after its reconcile, %d of bulk still counted as waiting", f.waiting["bulk"])
	}
}
