package clusterpeer

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestDataPlane(t *testing.T) {
	shook := &metav1.Time{}
	tunnel := func(peer, endpoint string, answering bool, handshake *metav1.Time) fabricv1.GatewayTunnel {
		return fabricv1.GatewayTunnel{Peer: peer, Endpoint: endpoint, State: fabricv1.TunnelActive, Answering: answering, LastHandshakeTime: handshake}
	}
	own := func(tun fabricv1.TunnelType, gws ...fabricv1.GatewayStatus) *fabricv1.ClusterNetwork {
		cn := &fabricv1.ClusterNetwork{Status: fabricv1.ClusterNetworkStatus{Gateways: gws}}
		cn.Spec.Gateways.Tunnel = tun
		return cn
	}
	gw := func(node string, healthy bool, ts ...fabricv1.GatewayTunnel) fabricv1.GatewayStatus {
		return fabricv1.GatewayStatus{Node: node, Healthy: healthy, Tunnel: fabricv1.TunnelWireGuard, Tunnels: ts}
	}
	peer := func(tun fabricv1.TunnelType, nodes ...string) *fabricv1.ClusterPeer {
		p := &fabricv1.ClusterPeer{Spec: fabricv1.ClusterPeerSpec{ClusterID: "west"}}
		for _, n := range nodes {
			p.Status.Gateways = append(p.Status.Gateways, fabricv1.GatewayStatus{Node: n, Healthy: true, Tunnel: tun})
		}
		return p
	}
	west := peer(fabricv1.TunnelWireGuard, "w1", "w2")
	for _, c := range []struct {
		name    string
		own     *fabricv1.ClusterNetwork
		peer    *fabricv1.ClusterPeer
		up      bool
		stalled bool
		reason  string
		says    string
	}{
		{"a handshaken tunnel that answers", own("", gw("g1", true,
			tunnel("west/w1", "172.30.2.11:51820", true, shook), tunnel("west/w2", "172.30.2.12:0", false, nil))),
			west, true, false, ReasonTunnelsUp, "1 of 2 wireguard tunnels to peer west's gateways answer"},
		{"tunnels to another peer do not count", own("", gw("g1", true, tunnel("east/e1", "172.30.3.11:51820", true, shook))),
			west, false, false, ReasonAwaitingTunnels, "report no tunnel to peer west yet"},
		{"right after a join: ports not learnt", own("", gw("g1", true, tunnel("west/w1", "172.30.2.11:0", false, nil))),
			west, false, false, ReasonAwaitingTunnels, "1 wait for the port"},
		{"answering over WireGuard is not enough without a handshake", own("", gw("g1", true, tunnel("west/w1", "172.30.2.11:51821", true, nil))),
			west, false, false, ReasonAwaitingTunnels, "1 have not handshaken"},
		{"handshaken but silent", own("", gw("g1", true, tunnel("west/w1", "172.30.2.11:51821", false, shook))),
			west, false, false, ReasonAwaitingTunnels, "1 get no answer to health probes"},
		{"a driver without handshakes answers", own(fabricv1.TunnelVXLAN, gw("g1", true, tunnel("west/w1", "172.30.2.11:4800", true, nil))),
			peer(fabricv1.TunnelVXLAN, "w1"), true, false, ReasonTunnelsUp, "vxlan tunnels"},
		{"a dead gateway's last report says nothing", own("", gw("g1", false, tunnel("west/w1", "172.30.2.11:51821", true, shook))),
			west, false, false, ReasonAwaitingGateways, "none of this cluster's 1 gateways"},
		{"drivers differ", own(fabricv1.TunnelGeneve, gw("g1", true)),
			west, false, true, ReasonTunnelMismatch, "this cluster's gateways use the geneve tunnel, peer west's use wireguard"},
		{"no gateway here", own(""), west, false, true, ReasonNoGateways, "this cluster has no gateway"},
		{"no gateway there", own("", gw("g1", true)), peer(fabricv1.TunnelWireGuard), false, true, ReasonNoGateways, "peer west advertises no gateway"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := dataPlane(c.own, c.peer)
			if d.up != c.up || d.stalled != c.stalled || d.reason != c.reason || !strings.Contains(d.message, c.says) {
				t.Errorf("got up=%t stalled=%t %s %q; want up=%t stalled=%t %s saying %q", d.up, d.stalled, d.reason, d.message, c.up, c.stalled, c.reason, c.says)
			}
		})
	}
}

func TestDataPlaneDigestSeesWhatDataPlaneReads(t *testing.T) {
	cn := &fabricv1.ClusterNetwork{Status: fabricv1.ClusterNetworkStatus{Gateways: []fabricv1.GatewayStatus{
		{Node: "g1", Healthy: true, Tunnels: []fabricv1.GatewayTunnel{{Peer: "west/w1", Endpoint: "172.30.2.11:51821"}}}}}}
	before := dataPlaneDigest(cn)
	for _, change := range []func(*fabricv1.ClusterNetwork){
		func(cn *fabricv1.ClusterNetwork) { cn.Status.Gateways[0].Healthy = false },
		func(cn *fabricv1.ClusterNetwork) { cn.Status.Gateways[0].Tunnels[0].Answering = true },
		func(cn *fabricv1.ClusterNetwork) { cn.Status.Gateways[0].Tunnels[0].LastHandshakeTime = &metav1.Time{} },
		func(cn *fabricv1.ClusterNetwork) { cn.Status.Gateways[0].Tunnels[0].Endpoint = "172.30.2.11:0" },
		func(cn *fabricv1.ClusterNetwork) { cn.Spec.Gateways.Tunnel = fabricv1.TunnelGeneve },
	} {
		c := cn.DeepCopy()
		change(c)
		if dataPlaneDigest(c) == before {
			t.Errorf("a change dataPlane reads leaves the digest as it was: %s", before)
		}
	}
	c := cn.DeepCopy()
	c.Status.Gateways[0].LastRenewTime = &metav1.MicroTime{}
	if dataPlaneDigest(c) != before {
		t.Error("a renewal time changes the digest: the peers would be looked at for nothing")
	}
}
