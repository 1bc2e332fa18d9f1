package gateway_test

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway"
)

func peer(id string, ready bool, gws ...fabricv1.GatewayStatus) fabricv1.ClusterPeer {
	status := metav1.ConditionFalse
	if ready {
		status = metav1.ConditionTrue
	}
	return fabricv1.ClusterPeer{Spec: fabricv1.ClusterPeerSpec{ClusterID: id},
		Status: fabricv1.ClusterPeerStatus{PodCIDRs: []string{"10.245.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}, Gateways: gws,
			Conditions: []metav1.Condition{{Type: "Ready", Status: status}}}}
}

func gw(node, endpoint string, healthy bool) fabricv1.GatewayStatus {
	return fabricv1.GatewayStatus{Node: node, Endpoint: endpoint, PublicKey: "key-" + node, Tunnel: fabricv1.TunnelWireGuard, Healthy: healthy}
}

func TestDesiredPeers(t *testing.T) {
	peers := []fabricv1.ClusterPeer{
		peer("west", true, gw("w2", "172.30.2.12:51820", true), gw("w1", "172.30.2.11:51820", true), gw("w3", "172.30.2.13:51820", false)),
		peer("north", false, gw("n1", "172.30.3.11:51820", true)), // not Ready: skipped
		peer("south", true, gw("s1", "172.30.4.11:51820", false)), // no healthy gateway: skipped
		peer("east", true, fabricv1.GatewayStatus{Node: "e1", Endpoint: "172.30.5.11:4800", Tunnel: fabricv1.TunnelVXLAN, Healthy: true}),
	}
	got := gateway.DesiredPeers("gw-a", fabricv1.TunnelWireGuard, peers)
	if len(got) != 1 {
		t.Fatalf("got %+v, want one peer (west)", got)
	}
	p := got[0]
	if p.Name != "west/w1" && p.Name != "west/w2" {
		t.Errorf("chose %s, want a healthy gateway of west", p.Name)
	}
	if len(p.Prefixes) != 2 || p.Prefixes[0] != netip.MustParsePrefix("10.245.0.0/16") || p.Prefixes[1] != netip.MustParsePrefix("10.97.0.0/16") {
		t.Errorf("prefixes %v, want west's pod and service ranges", p.Prefixes)
	}
	// Gateways of this cluster spread over the peer's: over many names both are chosen.
	chosen := map[string]int{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		chosen[gateway.DesiredPeers(n, fabricv1.TunnelWireGuard, peers)[0].Name]++
	}
	if chosen["west/w1"] == 0 || chosen["west/w2"] == 0 || chosen["west/w3"] != 0 {
		t.Errorf("choices over ten local gateways: %v", chosen)
	}
	// The choice is stable.
	if a, b := gateway.DesiredPeers("gw-a", fabricv1.TunnelWireGuard, peers), gateway.DesiredPeers("gw-a", fabricv1.TunnelWireGuard, peers); a[0].Name != b[0].Name {
		t.Error("the choice changed between calls")
	}
}
