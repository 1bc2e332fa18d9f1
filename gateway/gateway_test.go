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
	got := gateway.DesiredPeers("gw-a", fabricv1.TunnelWireGuard, peers, nil)
	if len(got) != 1 {
		t.Fatalf("got %+v, want one peer (west)", got)
	}
	p := got[0]
	if p.Name != "west/w1" {
		t.Errorf("chose %s, want west/w1", p.Name)
	}
	if len(p.Prefixes) != 2 || p.Prefixes[0] != netip.MustParsePrefix("10.245.0.0/16") || p.Prefixes[1] != netip.MustParsePrefix("10.97.0.0/16") {
		t.Errorf("prefixes %v, want west's pod and service ranges", p.Prefixes)
	}
	// Every gateway of this cluster picks the same one: the lowest address (w1).
	for _, n := range []string{"a", "b", "c", "d"} {
		if got := gateway.DesiredPeers(n, fabricv1.TunnelWireGuard, peers, nil); got[0].Name != "west/w1" {
			t.Errorf("%s chose %s, want west/w1 (the lowest address)", n, got[0].Name)
		}
	}
	// A gateway the prober does not hear from is never chosen.
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		got := gateway.DesiredPeers(n, fabricv1.TunnelWireGuard, peers, func(gw fabricv1.GatewayStatus) bool { return gw.Node != "w1" })
		if len(got) != 1 || got[0].Name != "west/w2" {
			t.Errorf("with w1 silent, %s chose %+v", n, got)
		}
	}
	if got := gateway.DesiredPeers("a", fabricv1.TunnelWireGuard, peers, func(fabricv1.GatewayStatus) bool { return false }); len(got) != 0 {
		t.Errorf("with every gateway silent: %+v", got)
	}
	// The choice is stable.
	if a, b := gateway.DesiredPeers("gw-a", fabricv1.TunnelWireGuard, peers, nil), gateway.DesiredPeers("gw-a", fabricv1.TunnelWireGuard, peers, nil); a[0].Name != b[0].Name {
		t.Error("the choice changed between calls")
	}
}
