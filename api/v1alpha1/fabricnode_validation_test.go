package v1alpha1_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// A FabricNode's blocks are CIDRs, at most one per family, and once given they stay: only a
// missing family may be added (a cluster gaining IPv6); anything else means a new FabricNode.
func TestFabricNodeBlocksAreValidatedAndKept(t *testing.T) {
	ctx := context.Background()
	fn := func(name string, blocks ...string) *fabricv1.FabricNode {
		return &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricNodeSpec{PodCIDRs: cidrs(blocks...)}}
	}
	expectRejected(t, k8s.Create(ctx, fn("bad-cidr", "10.244.1.0")), "must be a CIDR")
	expectRejected(t, k8s.Create(ctx, fn("two-v4", "10.244.1.0/24", "10.244.2.0/24")), "at most one CIDR per IP family")
	expectRejected(t, k8s.Create(ctx, fn("three", "10.244.1.0/24", "fd00::/80", "fd01::/80")), "must have at most 2 items")

	n := fn("keeps", "10.244.1.0/24")
	if err := k8s.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, n) })
	n.Spec.PodCIDRs = cidrs("10.244.9.0/24")
	expectRejected(t, k8s.Update(ctx, n), "podCIDRs cannot change once given")
	n.Spec.PodCIDRs = nil
	expectRejected(t, k8s.Update(ctx, n), "podCIDRs cannot change once given")
	n.Spec.PodCIDRs = cidrs("10.244.1.0/24", "fd00:10:244::/80")
	if err := k8s.Update(ctx, n); err != nil {
		t.Errorf("adding the IPv6 block: %v", err)
	}

	empty := fn("empty")
	if err := k8s.Create(ctx, empty); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, empty) })
	empty.Spec.PodCIDRs = cidrs("10.244.3.0/24")
	if err := k8s.Update(ctx, empty); err != nil {
		t.Errorf("giving blocks to a FabricNode without any: %v", err)
	}
}
