// Package phases runs a reconciler's steps in order and merges their results, so that a
// Reconcile function reads like a table of contents.
//
// A phase that finds bad input records it in the object's conditions and returns Halt: the
// remaining phases are skipped and no error is returned (a retry would not help). A conflict
// (the object changed between its read and a write: another writer, or the cache a moment
// behind) stops the run and asks for another soon, quietly: it is how optimistic
// concurrency works, not a failure. Any other error also stops the run and is returned, so
// controller-runtime retries with backoff.
package phases

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
)

// ConflictRetry is how soon a run that met a conflict is run again.
const ConflictRetry = 100 * time.Millisecond

// Func is one step of a reconcile.
type Func[T any] func(ctx context.Context, obj T) (ctrl.Result, error)

// Halt stops a run without an error: the phase has already recorded why in the status.
var Halt = errors.New("halted: reason recorded in status")

// Run calls each phase in order until one fails or halts. The result asks for the earliest
// requeue any phase asked for.
func Run[T any](ctx context.Context, obj T, fns ...Func[T]) (ctrl.Result, error) {
	var res ctrl.Result
	for _, fn := range fns {
		r, err := fn(ctx, obj)
		res = Merge(res, r)
		if errors.Is(err, Halt) {
			return res, nil
		}
		if apierrors.IsConflict(err) {
			ctrl.LoggerFrom(ctx).V(1).Info("the object changed meanwhile; reconciling again", "reason", err.Error())
			return Merge(res, ctrl.Result{RequeueAfter: ConflictRetry}), nil
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// Merge returns the result that requeues soonest.
func Merge(a, b ctrl.Result) ctrl.Result {
	return ctrl.Result{RequeueAfter: minPositive(a.RequeueAfter, b.RequeueAfter)}
}

func minPositive(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	case a < b:
		return a
	default:
		return b
	}
}
