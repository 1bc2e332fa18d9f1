package nodeipam_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/nodeipam"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func node(name string, annotations map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

func blocksOf(t *testing.T, name string) string {
	t.Helper()
	fn := &fabricv1.FabricNode{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, fn); err != nil {
		return ""
	}
	s := make([]string, len(fn.Spec.PodCIDRs))
	for i, c := range fn.Spec.PodCIDRs {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

func waitBlocks(t *testing.T, name, want string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		if got := blocksOf(t, name); got != want {
			return fmt.Errorf("node %s has blocks %q, want %q", name, got, want)
		}
		return nil
	})
}

func TestNodeBlocks(t *testing.T) {
	ctx := context.Background()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: operator.NewScheme(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&nodeipam.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)

	for _, n := range []string{"n1", "n2"} {
		if err := env.Client.Create(ctx, node(n, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// A block someone wrote by hand that is outside the range gets replaced.
	if err := env.Client.Create(ctx, node("n3", nil)); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: "n3"},
		Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{"192.168.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := blocksOf(t, "n1"); got != "" {
		t.Fatalf("blocks allocated before any ClusterNetwork exists: %q", got)
	}
	cn := &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1", PodCIDRs: []fabricv1.CIDR{"10.244.0.0/22", "fd00:1::/64"},
			ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}}}
	if err := env.Client.Create(ctx, cn); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range []string{"n1", "n2", "n3"} {
		testenv.Eventually(t, 20*time.Second, func() error {
			b := blocksOf(t, n)
			if b == "" || b == "192.168.0.0/24" {
				return fmt.Errorf("node %s: blocks %q", n, b)
			}
			return nil
		})
		b := blocksOf(t, n)
		if seen[b] {
			t.Fatalf("block %s given twice", b)
		}
		seen[b] = true
	}
	if !seen["10.244.0.0/24,fd00:1::/80"] || !seen["10.244.1.0/24,fd00:1:0:0:1::/80"] || !seen["10.244.2.0/24,fd00:1:0:0:2::/80"] {
		t.Errorf("blocks: %v", seen)
	}

	// The pool holds four /24s: the fourth node gets the last one, the fifth none.
	if err := env.Client.Create(ctx, node("n4", nil)); err != nil {
		t.Fatal(err)
	}
	waitBlocks(t, "n4", "10.244.3.0/24,fd00:1:0:0:3::/80")
	if err := env.Client.Create(ctx, node("n5", nil)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		evs := &corev1.EventList{}
		if err := env.Client.List(ctx, evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "n5" && e.Reason == fabricv1.ReasonPodCIDRExhausted {
				return nil
			}
		}
		return fmt.Errorf("no %s event for n5", fabricv1.ReasonPodCIDRExhausted)
	})
	if got := blocksOf(t, "n5"); got != "" {
		t.Errorf("n5 got %q from an exhausted pool", got)
	}

	// A deleted node's block goes to the node that was waiting.
	freed := blocksOf(t, "n2")
	if err := env.Client.Delete(ctx, node("n2", nil)); err != nil {
		t.Fatal(err)
	}
	// What the garbage collector does with the node's FabricNode (envtest runs none).
	if err := env.Client.Delete(ctx, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}); err != nil {
		t.Fatal(err)
	}
	// The FabricNode going away is what retries the waiting node (n5 itself does not change).
	testenv.Eventually(t, 20*time.Second, func() error {
		if got := blocksOf(t, "n5"); got != freed {
			return fmt.Errorf("n5 has %q, want the freed %q", got, freed)
		}
		return nil
	})
}
