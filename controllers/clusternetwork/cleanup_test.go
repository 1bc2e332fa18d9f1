package clusternetwork_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusternetwork"
	"github.com/weft-net/weft/internal/render"
	"github.com/weft-net/weft/internal/testenv"
)

// TestDeletionWaitsForTheNodeAgents: a deleted ClusterNetwork stays, Reconciling with
// reason CleaningNodes naming the nodes it waits for, until every node with an agent pod
// says its agent removed weft (its FabricNode's status.cleanup with the ClusterNetwork's
// UID); then it goes and the FabricNodes with it. Without the agents' word it goes after the
// limit.
func TestDeletionWaitsForTheNodeAgents(t *testing.T) {
	ctx := context.Background()
	const limit = 12 * time.Second
	startController(t, func(o *clusternetwork.Options) { o.NodeCleanupTimeout = limit })
	goneCN(t)
	for _, name := range []string{"clean-1", "clean-2", "clean-3"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, n) })
		fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := env.Client.Create(ctx, fn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, fn) })
		if name == "clean-3" {
			continue // a node without an agent: nothing to wait for
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "weft-agent-" + name,
			Labels: map[string]string{"app.kubernetes.io/name": render.AgentName}},
			Spec: corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "agent", Image: images.Agent}}}}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)) })
	}

	cn := createCN(t)
	if err := env.Client.Delete(ctx, cn); err != nil {
		t.Fatal(err)
	}
	waiting := func(want ...string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			got := &fabricv1.ClusterNetwork{}
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "default"}, got); err != nil {
				return err
			}
			c := meta.FindStatusCondition(got.Status.Conditions, "Reconciling")
			if c == nil || c.Reason != fabricv1.ReasonCleaningNodes {
				return fmt.Errorf("Reconciling is %+v, want reason %s", c, fabricv1.ReasonCleaningNodes)
			}
			if !strings.HasSuffix(c.Message, ": "+strings.Join(want, ", ")) {
				return fmt.Errorf("message %q, want it to end with the nodes %v", c.Message, want)
			}
			return nil
		})
	}
	waiting("clean-1", "clean-2")
	cleaned(t, "clean-1", "some-other-uid") // an earlier ClusterNetwork's
	cleaned(t, "clean-2", string(cn.UID))
	waiting("clean-1")
	cleaned(t, "clean-1", string(cn.UID))
	waitGone(t, 10*time.Second)
	for _, name := range []string{"clean-1", "clean-2", "clean-3"} {
		testenv.Eventually(t, 5*time.Second, func() error {
			err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &fabricv1.FabricNode{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("node %s keeps its FabricNode (%w)", name, err)
			}
			return nil
		})
	}

	t.Log("agents that never answer: the ClusterNetwork goes after the limit")
	cn = createCN(t)
	if err := env.Client.Delete(ctx, cn); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waiting("clean-1", "clean-2")
	waitGone(t, limit+10*time.Second)
	if took := time.Since(start); took < limit-2*time.Second {
		t.Errorf("gone after %s: the limit is %s", took.Round(time.Millisecond), limit)
	}
}

// createCN creates a valid ClusterNetwork and waits for the cleanup finalizer on it.
func createCN(t *testing.T) *fabricv1.ClusterNetwork {
	t.Helper()
	cn := &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "east",
			PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}}}
	if err := env.Client.Create(context.Background(), cn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { goneCN(t) })
	return waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		if !slices.Contains(cn.Finalizers, fabricv1.FinalizerNodeCleanup) {
			return fmt.Errorf("finalizers %v, want %s", cn.Finalizers, fabricv1.FinalizerNodeCleanup)
		}
		return nil
	})
}

// goneCN makes sure no ClusterNetwork is left for the next test (finalizers and all).
func goneCN(t *testing.T) {
	ctx := context.Background()
	cn := &fabricv1.ClusterNetwork{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "default"}, cn); err != nil {
		return
	}
	_ = env.Client.Delete(ctx, cn)
	_ = env.Client.Patch(ctx, cn, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
	waitGone(t, 10*time.Second)
}

func waitGone(t *testing.T, limit time.Duration) {
	t.Helper()
	testenv.Eventually(t, limit, func() error {
		err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, &fabricv1.ClusterNetwork{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("the ClusterNetwork is still there (%w)", err)
		}
		return nil
	})
}

// cleaned says, as the node's agent would, that it cleaned up for the ClusterNetwork uid.
func cleaned(t *testing.T, node, uid string) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"status":{"cleanup":{"clusterNetworkUID":%q,"time":%q}}}`, uid, time.Now().UTC().Format(time.RFC3339))
	if err := env.Client.Status().Patch(context.Background(), &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node}},
		client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}
