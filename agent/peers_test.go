package agent_test

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent"
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

func TestActiveGateway(t *testing.T) {
	gws := []netip.Addr{netip.MustParseAddr("172.30.1.11"), netip.MustParseAddr("172.30.1.12")}
	all := func(netip.Addr) bool { return true }
	if got := agent.ActiveGateway(gws, all); len(got) != 1 || got[0] != gws[0] {
		t.Errorf("all answer: %v, want the first", got)
	}
	if got := agent.ActiveGateway(gws, func(a netip.Addr) bool { return a != gws[0] }); len(got) != 1 || got[0] != gws[1] {
		t.Errorf("the first is silent: %v, want the second", got)
	}
	if got := agent.ActiveGateway(gws, func(netip.Addr) bool { return false }); got != nil {
		t.Errorf("none answers: %v", got)
	}
}
