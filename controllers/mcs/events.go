package mcs

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/weft-net/weft/internal/mcs"
)

// serviceQueue feeds a controller Services to reconcile from outside the API server's
// watches (peers' changes, resyncs).
type serviceQueue chan event.TypedGenericEvent[reconcile.Request]

func newServiceQueue() serviceQueue { return make(serviceQueue, 1024) }

// offer queues k without waiting; false when the queue is full.
func (q serviceQueue) offer(k mcs.Key) bool {
	select {
	case q <- q.event(k):
		return true
	default:
		return false
	}
}

func (q serviceQueue) event(k mcs.Key) event.TypedGenericEvent[reconcile.Request] {
	return event.TypedGenericEvent[reconcile.Request]{Object: reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name}}}
}

// source is the controller's end of the queue.
func (q serviceQueue) source() source.TypedSource[reconcile.Request] {
	return source.Channel(q, handler.TypedFuncs[reconcile.Request, reconcile.Request]{
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[reconcile.Request], wq workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			wq.Add(e.Object)
		}})
}
