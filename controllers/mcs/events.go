package mcs

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/weft-net/weft/internal/mcs"
)

// keySource feeds a controller the Services that changes outside its own watches concern
// (peers' records, peers coming and going), straight into its work queue: nothing is
// dropped however many arrive at once, and the queue merges repeats. Keys offered before the
// controller starts wait for it.
type keySource struct {
	fair    *fairness
	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending map[mcs.Key]bool
}

func newKeySource(fair *fairness) *keySource {
	return &keySource{fair: fair, pending: map[mcs.Key]bool{}}
}

func request(k mcs.Key) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.Name}}
}

// add queues the Service k.
func (s *keySource) add(k mcs.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queue == nil {
		s.pending[k] = true
		return
	}
	s.fair.add(s.queue, request(k))
}

// source is the controller's end.
func (s *keySource) source() source.TypedSource[reconcile.Request] {
	return source.TypedFunc[reconcile.Request](func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.queue = q
		for k := range s.pending {
			s.fair.add(q, request(k))
		}
		s.pending = nil
		return nil
	})
}
