// Package phases runs a reconciler's steps in order and merges their results, so that a
// Reconcile function reads like a table of contents.
//
// A phase that finds bad input records it in the object's conditions and returns ErrHalt: the
// remaining phases are skipped and no error is returned (a retry would not help). A conflict
// (the object changed between its read and a write: another writer, or the cache a moment
// behind) stops the run and asks for another soon, quietly: it is how optimistic
// concurrency works, not a failure. Any other error also stops the run and is returned, so
// controller-runtime retries with backoff.
package phases

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/weft-net/weft/internal/apiretry"
)

// ConflictRetry is how soon a run that met a conflict is run again.
const ConflictRetry = 100 * time.Millisecond

// Func is one step of a reconcile.
type Func[T any] func(ctx context.Context, obj T) (ctrl.Result, error)

// ErrHalt stops a run without an error: the phase has already recorded why in the status.
var ErrHalt = errors.New("halted: reason recorded in status")

// Run calls each phase in order until one fails or halts. The result asks for the earliest
// requeue any phase asked for.
func Run[T any](ctx context.Context, obj T, fns ...Func[T]) (ctrl.Result, error) {
	var res ctrl.Result
	for _, fn := range fns {
		r, err := fn(ctx, obj)
		res = Merge(res, r)
		if errors.Is(err, ErrHalt) {
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

// QuietConflicts wraps a reconciler: a conflict it returns (see Run) asks for another run in
// ConflictRetry, logged at V(1), instead of an error with a stack trace. So does, for up to
// TransientGrace per object, a connection to the API server that broke (reset, closed, timed
// out: an Open vSwitch node moving its uplink into its bridge resets every connection the
// node had): it is retried with the usual backoff and logged as information; one that lasts
// is an error.
func QuietConflicts(r reconcile.Reconciler) reconcile.Reconciler {
	var first sync.Map // reconcile.Request → time.Time of the first transient failure in a row
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		// client-go reports a response it could not read on the reconcile's logger, at error
		// level, before the error reaches us: a connection the API server reset is retried
		// like the rest, and logged as information like the rest.
		ctx = ctrl.LoggerInto(ctx, QuietTransport(ctrl.LoggerFrom(ctx)))
		res, err := r.Reconcile(ctx, req)
		switch {
		case err == nil:
			first.Delete(req)
		case apierrors.IsConflict(err):
			ctrl.LoggerFrom(ctx).V(1).Info("the object changed meanwhile; reconciling again", "reason", err.Error())
			return Merge(res, ctrl.Result{RequeueAfter: ConflictRetry}), nil
		case apiretry.Transient(err):
			since, _ := first.LoadOrStore(req, time.Now())
			if time.Since(since.(time.Time)) < TransientGrace {
				ctrl.LoggerFrom(ctx).Info("the API server connection broke; retrying", "reason", err.Error())
				return Merge(res, ctrl.Result{RequeueAfter: TransientRetry}), nil
			}
		default:
			first.Delete(req)
		}
		return res, err
	})
}

// TransientGrace is how long broken connections are retried quietly; TransientRetry how
// soon (internal/apiretry).
const (
	TransientGrace = apiretry.Grace
	TransientRetry = apiretry.Retry
)

// QuietTransport is log with errors that are transient (apiretry.Transient: a connection
// reset, closed or timed out) logged as information: what is retried is no error to look at.
func QuietTransport(log logr.Logger) logr.Logger {
	if log.GetSink() == nil {
		return log
	}
	return logr.New(quietSink{log.GetSink()})
}

type quietSink struct{ logr.LogSink }

func (q quietSink) Error(err error, msg string, kv ...any) {
	if err != nil && apiretry.Transient(err) {
		if q.Enabled(0) {
			q.LogSink.Info(0, msg, append(kv, "reason", err.Error())...)
		}
		return
	}
	q.LogSink.Error(err, msg, kv...)
}

func (q quietSink) WithValues(kv ...any) logr.LogSink { return quietSink{q.LogSink.WithValues(kv...)} }
func (q quietSink) WithName(name string) logr.LogSink { return quietSink{q.LogSink.WithName(name)} }
