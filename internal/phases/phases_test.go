package phases

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func TestRunStopsAtHaltWithoutError(t *testing.T) {
	var ran []string
	step := func(name string, res ctrl.Result, err error) Func[*[]string] {
		return func(_ context.Context, log *[]string) (ctrl.Result, error) {
			*log = append(*log, name)
			return res, err
		}
	}
	res, err := Run(context.Background(), &ran,
		step("a", ctrl.Result{RequeueAfter: time.Minute}, nil),
		step("b", ctrl.Result{RequeueAfter: time.Second}, ErrHalt),
		step("c", ctrl.Result{}, nil),
	)
	if err != nil {
		t.Fatalf("Run returned %v, want nil after ErrHalt", err)
	}
	if got := len(ran); got != 2 {
		t.Fatalf("ran %v, want [a b]", ran)
	}
	if res.RequeueAfter != time.Second {
		t.Errorf("RequeueAfter = %v, want the soonest (1s)", res.RequeueAfter)
	}
}

func TestRunReturnsFirstError(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	_, err := Run(context.Background(), &calls,
		func(_ context.Context, n *int) (ctrl.Result, error) { *n++; return ctrl.Result{}, boom },
		func(_ context.Context, n *int) (ctrl.Result, error) { *n++; return ctrl.Result{}, nil },
	)
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("err=%v calls=%d, want boom after 1 call", err, calls)
	}
}

func TestMergeKeepsSoonestPositive(t *testing.T) {
	cases := []struct{ a, b, want time.Duration }{
		{0, 0, 0}, {0, time.Second, time.Second}, {time.Minute, 0, time.Minute},
		{time.Minute, time.Second, time.Second}, {time.Second, time.Minute, time.Second},
	}
	for _, c := range cases {
		got := Merge(ctrl.Result{RequeueAfter: c.a}, ctrl.Result{RequeueAfter: c.b}).RequeueAfter
		if got != c.want {
			t.Errorf("Merge(%v,%v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// A conflict is not an error: the run stops and asks to be run again soon.
func TestConflictRequeuesQuietly(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "things"}, "a", errors.New("the object has been modified"))
	ran := 0
	res, err := Run(context.Background(), "x",
		func(context.Context, string) (ctrl.Result, error) {
			ran++
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		},
		func(context.Context, string) (ctrl.Result, error) {
			ran++
			return ctrl.Result{}, fmt.Errorf("patching: %w", conflict)
		},
		func(context.Context, string) (ctrl.Result, error) { ran++; return ctrl.Result{}, nil })
	if err != nil || res.RequeueAfter != ConflictRetry || ran != 2 {
		t.Errorf("Run = %+v, %v after %d phases; want a requeue after %v, no error, 2 phases", res, err, ran, ConflictRetry)
	}
}

// A connection reset is retried quietly for a while, then is an error; another error at once.
func TestQuietConflictsRetriesBrokenConnectionsForAWhile(t *testing.T) {
	var err error
	r := QuietConflicts(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, err }))
	req := reconcile.Request{}
	err = fmt.Errorf("patching: %w", &net.OpError{Op: "read", Err: syscall.ECONNRESET})
	if res, got := r.Reconcile(context.Background(), req); got != nil || res.RequeueAfter != TransientRetry {
		t.Errorf("a reset: %+v, %v; want a quiet retry", res, got)
	}
	err = errors.New("boom")
	if _, got := r.Reconcile(context.Background(), req); got == nil {
		t.Error("another error was swallowed")
	}
}

// A connection the API server reset is retried: the reconcile's logger reports it as
// information, other errors stay errors.
func TestQuietTransport(t *testing.T) {
	var lines []string
	log := QuietTransport(funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) },
		funcr.Options{}))
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	log.Error(reset, "Unexpected error when reading response body")
	log.WithValues("controller", "clusternetwork").Error(errors.New("the spec is wrong"), "reconciling")
	if len(lines) != 2 || !strings.Contains(lines[0], `"level"=0`) || strings.Contains(lines[0], `"error"`) ||
		!strings.Contains(lines[0], "connection reset by peer") || !strings.Contains(lines[1], `"error"="the spec is wrong"`) {
		t.Errorf("logged:\n%s\nwant the reset as information, the other as an error", strings.Join(lines, "\n"))
	}
}
