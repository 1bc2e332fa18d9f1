package agent

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/podblocks"
)

// A FabricNode claiming another node's block, everything or the metadata address gives the
// datapath no route; a node without an address yet is left for later.
func TestRemoteNodesRouteOnlyValidBlocks(t *testing.T) {
	cn := &fabricv1.ClusterNetwork{}
	cn.Spec.PodCIDRs = []fabricv1.CIDR{"10.244.0.0/16"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fn := func(name string, age time.Duration, cidrs ...fabricv1.CIDR) fabricv1.FabricNode {
		return fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(-age))},
			Spec: fabricv1.FabricNodeSpec{PodCIDRs: cidrs}}
	}
	node := func(name, ip string) corev1.Node {
		n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if ip != "" {
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		}
		return n
	}
	fns := []fabricv1.FabricNode{
		fn("self", time.Hour, "10.244.1.0/24"),
		fn("b", time.Hour, "10.244.2.0/24"),
		fn("thief", time.Minute, "10.244.2.0/24"),
		fn("all", time.Minute, "0.0.0.0/0"),
		fn("metadata", time.Minute, "169.254.169.254/32"),
		fn("later", time.Minute, "10.244.3.0/24"),
	}
	nodes := []corev1.Node{node("self", "172.30.0.1"), node("b", "172.30.0.2"), node("thief", "172.30.0.3"),
		node("all", "172.30.0.4"), node("metadata", "172.30.0.5"), node("later", "")}
	remotes, refused := remoteNodes("self", []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, podblocks.Of(cn), fns, nodes)
	if len(remotes) != 1 || remotes[0].Name != "b" || remotes[0].IP.String() != "172.30.0.2" || remotes[0].PodCIDRs[0].String() != "10.244.2.0/24" {
		t.Errorf("remotes %+v, want only b", remotes)
	}
	got := map[string]string{}
	for _, r := range refused {
		got[r.Node] = r.Reason
	}
	want := map[string]string{"thief": fabricv1.BlockOverlaps, "all": fabricv1.BlockOutsidePodCIDRs, "metadata": fabricv1.BlockOutsidePodCIDRs}
	if len(got) != len(want) {
		t.Errorf("refused %v, want %v", got, want)
	}
	for n, r := range want {
		if got[n] != r {
			t.Errorf("%s refused for %q, want %q", n, got[n], r)
		}
	}
}

// A report that fails (the API server connection broke) is kept, signalled and sent by the
// next flush; one that was sent is not sent again.
func TestNodeReportKeepsWhatFailedUntilFlushed(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := fabricv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	broken, patches := true, 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&fabricv1.FabricNode{}).
		WithObjects(&fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}).
		WithInterceptorFuncs(interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			patches++
			if broken {
				return syscall.ECONNRESET
			}
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		}}).Build()
	r := newNodeReport(c, "n1")
	ctx := context.Background()
	if err := r.set(ctx, "datapath", fabricv1.DatapathEBPF); err == nil {
		t.Fatal("the broken connection was not reported")
	}
	select {
	case <-r.failed:
	default:
		t.Fatal("a failed report was not signalled")
	}
	broken = false
	if err := r.flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := &fabricv1.FabricNode{}
	if err := c.Get(ctx, client.ObjectKey{Name: "n1"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Datapath != fabricv1.DatapathEBPF {
		t.Errorf("status.datapath %q after the flush, want ebpf", got.Status.Datapath)
	}
	before := patches
	if err := errors.Join(r.flush(ctx), r.set(ctx, "datapath", fabricv1.DatapathEBPF)); err != nil || patches != before {
		t.Errorf("%d more patches (%v): nothing was left to send", patches-before, err)
	}
}
