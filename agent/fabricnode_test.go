package agent

import (
	"net/netip"
	"testing"
	"time"

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
