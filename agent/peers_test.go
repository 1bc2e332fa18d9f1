package agent_test

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent"
	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestPeerRoutes(t *testing.T) {
	cn := &fabricv1.ClusterNetwork{Status: fabricv1.ClusterNetworkStatus{Gateways: []fabricv1.GatewayStatus{
		{Node: "gw-2", Endpoint: "172.30.1.12:51820", Healthy: true},
		{Node: "gw-1", Endpoint: "172.30.1.11:51820", Healthy: true},
		{Node: "gw-3", Endpoint: "172.30.1.13:51820", Healthy: false},
	}}}
	ready := []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}
	peers := []fabricv1.ClusterPeer{
		{Status: fabricv1.ClusterPeerStatus{Conditions: ready, PodCIDRs: []string{"10.245.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}}},
		{Status: fabricv1.ClusterPeerStatus{PodCIDRs: []string{"10.246.0.0/16"}}}, // not Ready
	}
	r := agent.PeerRoutes("node-1", cn, peers)
	if r.LocalGateway {
		t.Error("node-1 is not a gateway")
	}
	if len(r.Gateways) != 2 || r.Gateways[0] != netip.MustParseAddr("172.30.1.11") || r.Gateways[1] != netip.MustParseAddr("172.30.1.12") {
		t.Errorf("gateways %v, want the two healthy ones, sorted", r.Gateways)
	}
	if len(r.Prefixes) != 2 || r.Prefixes[0].String() != "10.245.0.0/16" || r.Prefixes[1].String() != "10.97.0.0/16" {
		t.Errorf("prefixes %v, want the Ready peer's ranges", r.Prefixes)
	}
	if !agent.PeerRoutes("gw-1", cn, peers).LocalGateway {
		t.Error("gw-1 is a healthy gateway")
	}
	if agent.PeerRoutes("gw-3", cn, peers).LocalGateway {
		t.Error("gw-3 is not healthy")
	}
}

func TestActivePeerRoutes(t *testing.T) {
	g1, g2 := netip.MustParseAddr("172.30.1.11"), netip.MustParseAddr("172.30.1.12")
	in := datapath.PeerRoutes{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}, Gateways: []netip.Addr{g1, g2}, LocalGateway: true}
	all := func(netip.Addr) bool { return true }
	other := netip.MustParseAddr("172.30.1.13")
	if got := agent.ActivePeerRoutes(in, other, all); len(got.Gateways) != 1 || got.Gateways[0] != g1 || got.LocalGateway {
		t.Errorf("all answer, seen from another node: %+v, want g1 only and not local", got)
	}
	if got := agent.ActivePeerRoutes(in, g1, all); !got.LocalGateway {
		t.Errorf("seen from the active gateway g1: %+v, want local", got)
	}
	if got := agent.ActivePeerRoutes(in, g2, all); got.LocalGateway || got.Gateways[0] != g1 {
		t.Errorf("seen from the standby gateway g2: %+v, want traffic sent to g1", got)
	}
	if got := agent.ActivePeerRoutes(in, g2, func(a netip.Addr) bool { return a != g1 }); !got.LocalGateway || got.Gateways[0] != g2 {
		t.Errorf("g1 silent, seen from g2: %+v, want g2 active and local", got)
	}
	if got := agent.ActivePeerRoutes(in, other, func(netip.Addr) bool { return false }); got.Gateways != nil || got.LocalGateway {
		t.Errorf("none answers: %+v", got)
	}
}
