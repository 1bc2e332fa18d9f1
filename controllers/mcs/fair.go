package mcs

import (
	"context"
	"sync"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// fairness gives each namespace's Services a fair turn in a controller's work queue: a
// Service is queued with a priority that falls with the number of its namespace's Services
// already waiting, so a thousand exports made at once in one namespace do not hold up one
// made in another (it goes first), and within a namespace the order stays first come, first
// served. It needs the controller's priority queue (controller-runtime's default); on
// another queue it queues as usual.
type fairness struct {
	mu      sync.Mutex
	waiting map[string]int // by namespace: queued, not yet being reconciled
	queued  map[reconcile.Request]bool
}

func newFairness() *fairness {
	return &fairness{waiting: map[string]int{}, queued: map[reconcile.Request]bool{}}
}

// add queues reqs.
func (f *fairness) add(q workqueue.TypedRateLimitingInterface[reconcile.Request], reqs ...reconcile.Request) {
	pq, isPriority := q.(priorityqueue.PriorityQueue[reconcile.Request])
	for _, req := range reqs {
		f.mu.Lock()
		prio := -f.waiting[req.Namespace]
		if !f.queued[req] {
			f.queued[req] = true
			f.waiting[req.Namespace]++
		}
		f.mu.Unlock()
		if isPriority {
			pq.AddWithOpts(priorityqueue.AddOpts{Priority: &prio}, req)
		} else {
			q.Add(req)
		}
	}
}

// started notes that req left the queue for its reconcile.
func (f *fairness) started(req reconcile.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.queued[req] {
		delete(f.queued, req)
		if f.waiting[req.Namespace]--; f.waiting[req.Namespace] <= 0 {
			delete(f.waiting, req.Namespace)
		}
	}
}

// handler queues what mapFn gives for every event, fairly.
func (f *fairness) handler(mapFn func(context.Context, client.Object) []reconcile.Request) handler.EventHandler {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) { f.add(q, mapFn(ctx, e.Object)...) },
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			f.add(q, mapFn(ctx, e.ObjectNew)...)
		},
		DeleteFunc:  func(ctx context.Context, e event.DeleteEvent, q queue) { f.add(q, mapFn(ctx, e.Object)...) },
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q queue) { f.add(q, mapFn(ctx, e.Object)...) },
	}
}

// reconciler wraps r: each reconcile first tells the fairness its request left the queue.
func (f *fairness) reconciler(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		f.started(req)
		return r.Reconcile(ctx, req)
	})
}
