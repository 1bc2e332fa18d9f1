package agent_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent"
	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestPeerRoutes(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	renewed := func(ago time.Duration) *metav1.MicroTime { return &metav1.MicroTime{Time: now.Add(-ago)} }
	cn := &fabricv1.ClusterNetwork{Status: fabricv1.ClusterNetworkStatus{Gateways: []fabricv1.GatewayStatus{
		{Node: "gw-2", Endpoint: "172.30.1.12:51820", Healthy: true},
		{Node: "gw-1", Endpoint: "172.30.1.11:51820", Healthy: true},
		{Node: "gw-3", Endpoint: "172.30.1.13:51820", Healthy: false, LastRenewTime: renewed(fabricv1.GatewayProbeGrace)},
		{Node: "gw-4", Endpoint: "172.30.1.14:51820", Healthy: false},
	}}}
	ready := []metav1.Condition{{Type: fabricv1.ConditionAccepted, Status: metav1.ConditionTrue}}
	peers := []fabricv1.ClusterPeer{
		{Status: fabricv1.ClusterPeerStatus{Conditions: ready, PodCIDRs: []string{"10.245.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}}},
		{Status: fabricv1.ClusterPeerStatus{PodCIDRs: []string{"10.246.0.0/16"}}}, // not Ready
	}
	r := agent.PeerRoutes("node-1", cn, peers, now)
	if r.LocalGateway {
		t.Error("node-1 is not a gateway")
	}
	if len(r.Gateways) != 2 || r.Gateways[0] != netip.MustParseAddr("172.30.1.11") || r.Gateways[1] != netip.MustParseAddr("172.30.1.12") {
		t.Errorf("gateways %v, want the two healthy ones, sorted (gw-3's Lease lapsed too long ago, gw-4's never renewed)", r.Gateways)
	}
	// A Lease renewed late (this cluster's API server slow or stopped) is not a failure:
	// the gateway stays a candidate, and the prober decides.
	cn.Status.Gateways[2].LastRenewTime = renewed(fabricv1.GatewayProbeGrace - time.Second)
	if late := agent.PeerRoutes("node-1", cn, peers, now); len(late.Gateways) != 3 || late.Gateways[2] != netip.MustParseAddr("172.30.1.13") {
		t.Errorf("gateways %v, want gw-3 too: its Lease lapsed within the probe grace", late.Gateways)
	}
	if !agent.PeerRoutes("gw-3", cn, peers, now).LocalGateway {
		t.Error("gw-3, renewed late, is still a candidate gateway")
	}
	cn.Status.Gateways[2].LastRenewTime = renewed(fabricv1.GatewayProbeGrace)
	if len(r.Prefixes) != 2 || r.Prefixes[0].String() != "10.245.0.0/16" || r.Prefixes[1].String() != "10.97.0.0/16" {
		t.Errorf("prefixes %v, want the Ready peer's ranges", r.Prefixes)
	}
	if !agent.PeerRoutes("gw-1", cn, peers, now).LocalGateway {
		t.Error("gw-1 is a healthy gateway")
	}
	if agent.PeerRoutes("gw-3", cn, peers, now).LocalGateway {
		t.Error("gw-3 is not healthy")
	}
}

func TestActivePeerRoutes(t *testing.T) {
	g1, g2, g3 := netip.MustParseAddr("172.30.1.11"), netip.MustParseAddr("172.30.1.12"), netip.MustParseAddr("172.30.1.13")
	in := datapath.PeerRoutes{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}, Gateways: []netip.Addr{g1, g2, g3}, LocalGateway: true}
	all := func(netip.Addr) bool { return true }
	other := netip.MustParseAddr("172.30.1.20")
	for _, c := range []struct {
		name      string
		node      netip.Addr
		maxActive int
		answers   func(netip.Addr) bool
		want      string
		local     bool
	}{
		{"all answer, another node, maxActive 2", other, 2, all, "[172.30.1.11 172.30.1.12]", false},
		{"all answer, no cap", other, 0, all, "[172.30.1.11 172.30.1.12 172.30.1.13]", false},
		{"seen from an active gateway", g2, 2, all, "[172.30.1.11 172.30.1.12]", true},
		{"seen from the standby gateway", g3, 2, all, "[172.30.1.11 172.30.1.12]", false},
		{"g1 silent: g3 steps in", g3, 2, func(a netip.Addr) bool { return a != g1 }, "[172.30.1.12 172.30.1.13]", true},
		{"maxActive 1", g2, 1, all, "[172.30.1.11]", false},
		{"none answers", other, 2, func(netip.Addr) bool { return false }, "[]", false},
	} {
		got := agent.ActivePeerRoutes(in, c.node, c.maxActive, c.answers)
		if fmt.Sprint(got.Gateways) != c.want || got.LocalGateway != c.local {
			t.Errorf("%s: gateways %v local %v, want %s local %v", c.name, got.Gateways, got.LocalGateway, c.want, c.local)
		}
	}
}
