package clusternetwork_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusternetwork"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func startController(t *testing.T) {
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  operator.NewScheme(),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &clusternetwork.Reconciler{Client: mgr.GetClient(),
		Options: clusternetwork.Options{Backends: []fabricv1.DatapathBackend{fabricv1.DatapathOVS}}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)
}

// waitFor waits until the ClusterNetwork's status describes its current generation and
// check passes.
func waitFor(t *testing.T, check func(cn *fabricv1.ClusterNetwork) error) *fabricv1.ClusterNetwork {
	t.Helper()
	cn := &fabricv1.ClusterNetwork{}
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, cn); err != nil {
			return err
		}
		if cn.Status.ObservedGeneration != cn.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", cn.Status.ObservedGeneration, cn.Generation)
		}
		return check(cn)
	})
	return cn
}

func TestClusterNetworkLifecycle(t *testing.T) {
	ctx := context.Background()
	startController(t)

	cn := &fabricv1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "east",
			PodCIDRs: []fabricv1.CIDR{"10.0.0.0/8"}, ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}},
	}
	if err := env.Client.Create(ctx, cn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, cn) })

	t.Log("pod range containing the service range: Stalled with reason OverlappingCIDR")
	waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return errors.Join(
			testenv.CheckCondition(cn.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonOverlappingCIDR),
			testenv.CheckCondition(cn.Status.Conditions, "Ready", metav1.ConditionFalse, fabricv1.ReasonOverlappingCIDR),
			testenv.CheckAbsent(cn.Status.Conditions, "Reconciling"),
		)
	})

	t.Log("fixed ranges but the ebpf backend: Stalled with reason UnsupportedBackend")
	update(t, func(cn *fabricv1.ClusterNetwork) {
		cn.Spec.PodCIDRs = []fabricv1.CIDR{"10.244.0.0/16"}
		cn.Spec.Datapath.Backend = fabricv1.DatapathEBPF
	})
	got := waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return testenv.CheckCondition(cn.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonUnsupportedBackend)
	})
	if msg := got.Status.Conditions[0].Message; !strings.Contains(msg, `"ebpf" is not available`) {
		t.Errorf("message %q does not say ebpf is unavailable", msg)
	}

	t.Log("valid spec: Ready, Stalled removed")
	update(t, func(cn *fabricv1.ClusterNetwork) { cn.Spec.Datapath.Backend = fabricv1.DatapathOVS })
	waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return errors.Join(
			testenv.CheckCondition(cn.Status.Conditions, "Ready", metav1.ConditionTrue, fabricv1.ReasonReconciled),
			testenv.CheckAbsent(cn.Status.Conditions, "Stalled"),
		)
	})
}

func update(t *testing.T, mutate func(*fabricv1.ClusterNetwork)) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		cn := &fabricv1.ClusterNetwork{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, cn); err != nil {
			return err
		}
		mutate(cn)
		return env.Client.Update(context.Background(), cn)
	})
}
