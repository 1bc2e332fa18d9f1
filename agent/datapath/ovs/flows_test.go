package ovs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/agent/datapath/veth"
)

func state() flowState {
	pol, _ := policyFlows(nil, nil, netip.MustParseAddr("10.244.1.1"), nil, nil, nil)
	return flowState{
		policy:      pol.Flows,
		gatewayPort: "weft-gw0", gatewayIP: netip.MustParseAddr("10.244.1.1"), gatewayMAC: "0a:58:0a:f4:01:01",
		tunnelPort: "weft-tun0",
		pods:       []podFlow{{port: "w01", ip: netip.MustParseAddr("10.244.1.5"), mac: "0a:58:0a:f4:01:05"}},
		remotes:    []remoteFlow{{block: netip.MustParsePrefix("10.244.2.0/24"), nodeIP: netip.MustParseAddr("172.30.1.12")}},
	}
}

func TestFlowsAreDeterministicAndComplete(t *testing.T) {
	a, b := state().flows(), state().flows()
	if !slices.Equal(a, b) {
		t.Fatal("the same state gave different flows")
	}
	all := strings.Join(a, "\n")
	for _, want := range []string{
		// The tunnel takes packets from the other nodes only.
		"table=0,priority=200,in_port=weft-tun0,tun_src=172.30.1.12,ip,actions=ct(table=3,zone=4065)",
		"table=0,priority=190,in_port=weft-tun0,tun_src=172.30.1.12,actions=goto_table:20",
		"table=0,priority=180,in_port=weft-tun0,actions=drop",
		"table=0,priority=100,in_port=w01,dl_src=0a:58:0a:f4:01:05,ip,nw_src=10.244.1.5,actions=ct(table=2,zone=4065)",
		"table=1,priority=100,ip,actions=set_field:0x2->reg4,goto_table:40",
		"table=250,priority=100,ip,ct_state=+trk+new,reg4=0x2/0x2,actions=ct(commit,zone=4065,exec(set_field:1->ct_mark)),goto_table:251",
		"table=251,priority=100,reg4=0x1/0x1,actions=resubmit(,20)",
		// Without policy only connections entering from the gateway are committed.
		"table=250,priority=90,ip,ct_state=+trk+new,reg4=0x4/0x4,actions=ct(commit,zone=4065),goto_table:251",
		"table=41,priority=0,actions=goto_table:250",
		"table=2,priority=100,ip,ct_state=+trk+est+rpl,ct_mark=1,actions=set_field:0a:58:0a:f4:01:01->eth_dst,output:weft-gw0",
		"table=3,priority=100,ip,ct_state=+trk+est+rpl,ct_mark=1,actions=set_field:0a:58:0a:f4:01:01->eth_dst,output:weft-gw0",
		"table=10,priority=200,arp,arp_tpa=10.244.1.5,actions=output:w01",
		"table=10,priority=100,ip,nw_dst=10.244.1.5,actions=set_field:0a:58:0a:f4:01:01->eth_src,set_field:0a:58:0a:f4:01:05->eth_dst,output:w01",
		"table=10,priority=50,ip,nw_dst=10.244.2.0/24,actions=set_field:172.30.1.12->tun_dst,set_field:1->tun_id,set_field:0a:58:00:00:00:01->eth_dst,output:weft-tun0",
		"table=10,priority=10,ip,actions=set_field:0a:58:0a:f4:01:01->eth_dst,output:weft-gw0",
		"table=20,priority=100,ip,nw_dst=10.244.1.5,",
		"table=0,priority=0,actions=drop",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing flow %q in:\n%s", want, all)
		}
	}
}

// On a gateway node, what comes from another node with a peer cluster's source goes to the
// kernel first (which undoes kube-proxy's rewrite of replies to Services); on other nodes it
// is delivered as any traffic from the overlay.
func TestPeerClusterTrafficFromOtherNodesEntersAGatewayNodesKernel(t *testing.T) {
	want := "table=0,priority=210,in_port=weft-tun0,tun_src=172.30.1.12,ip,nw_src=10.245.0.0/16,actions=set_field:0a:58:0a:f4:01:01->eth_dst,output:weft-gw0"
	s := state()
	s.peers = peerFlows{prefixes: []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16")}, localGateway: true}
	if flows := s.flows(); !slices.Contains(flows, want) {
		t.Errorf("gateway node: missing %q in:\n%s", want, strings.Join(flows, "\n"))
	}
	s.peers.localGateway, s.peers.gateways = false, []netip.Addr{netip.MustParseAddr("172.30.1.11")}
	for _, f := range s.flows() {
		if strings.Contains(f, "nw_src=10.245.0.0/16") {
			t.Errorf("a node without a gateway has %q", f)
		}
	}
}

func TestFlowsWithoutTunnelHaveNoTunnelTable(t *testing.T) {
	s := state()
	s.tunnelPort = ""
	for _, f := range s.flows() {
		if strings.Contains(f, "table=20") || strings.Contains(f, "table=3,") || strings.Contains(f, "tun_dst") {
			t.Errorf("flow %q without encapsulation", f)
		}
	}
}

func TestPodMAC(t *testing.T) {
	if got := veth.PodMAC(netip.MustParseAddr("10.244.1.5")); got != "0a:58:0a:f4:01:05" {
		t.Errorf("podMAC = %s", got)
	}
}
