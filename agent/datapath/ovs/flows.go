package ovs

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"sort"
	"strings"
)

// Flow tables of the integration bridge.
const (
	tableClassify      = 0  // where did the packet come from; anti-spoofing for pods
	tableGatewayCommit = 1  // from the gateway: remember the connection
	tablePodConntrack  = 2  // from pods: replies to gateway connections go back to the gateway
	tableTunConntrack  = 3  // from other nodes: likewise
	tableForward       = 10 // packets from this node (pods, gateway): local delivery, tunnel, or gateway
	tableFromTunnel    = 20 // packets from other nodes: local delivery only
	tablePeerGateway   = 30 // peer-cluster traffic: the gateway node multipath chose
)

// ctZone is the conntrack zone of the integration bridge; markGateway marks connections
// that entered from the gateway port. kube-proxy rewrites Service traffic in the node's
// kernel, so the replies of such connections must return through the gateway for the kernel
// to undo the rewrite, even when they arrive from a pod on this node or through the tunnel.
const (
	ctZone      = 0xfe1
	markGateway = 0x1
)

// tunnelMAC is the destination MAC of frames sent through the tunnel; the receiving node
// rewrites it. The kernel reaches remote pod blocks through a static neighbour with it.
const tunnelMAC = "0a:58:00:00:00:01"

// vni is the tunnel key of in-cluster traffic.
const vni = 1

// flowState is everything the integration bridge's flows are computed from.
type flowState struct {
	gatewayPort string
	gatewayIP   netip.Addr
	gatewayMAC  string
	tunnelPort  string // empty without encapsulation
	pods        []podFlow
	remotes     []remoteFlow
	peers       peerFlows
	// policy are the policy tables' flows (policyFlows).
	policy []string
}

// peerFlows route other clusters' ranges: into the node's kernel on a gateway node, else
// through the overlay to a gateway node chosen per connection.
type peerFlows struct {
	prefixes     []netip.Prefix
	gateways     []netip.Addr
	localGateway bool
}

type podFlow struct {
	port string
	ip   netip.Addr
	mac  string
}

type remoteFlow struct {
	block  netip.Prefix
	nodeIP netip.Addr
}

// tunSrc is the match field of a tunnel packet's outer source address.
func tunSrc(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "tun_ipv6_src"
	}
	return "tun_src"
}

// remoteNodeIPs are the other nodes' addresses, each once, in order.
func (s flowState) remoteNodeIPs() []netip.Addr {
	var out []netip.Addr
	for _, r := range s.remotes {
		out = append(out, r.nodeIP)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// flows returns the complete flow table, sorted so equal states give equal text.
func (s flowState) flows() []string {
	var f []string
	add := func(format string, args ...any) { f = append(f, fmt.Sprintf(format, args...)) }

	// Classify; IP packets pass through conntrack on the way. The tunnel takes packets from
	// the cluster's other nodes only (the flow-based tunnel port would take them from
	// anyone who can reach it): by their outer source address.
	if s.tunnelPort != "" {
		for _, node := range s.remoteNodeIPs() {
			add("table=%d,priority=200,in_port=%s,%s=%s,ip,actions=ct(table=%d,zone=%d)", tableClassify, s.tunnelPort, tunSrc(node), node, tableTunConntrack, ctZone)
			add("table=%d,priority=190,in_port=%s,%s=%s,actions=goto_table:%d", tableClassify, s.tunnelPort, tunSrc(node), node, tableFromTunnel)
		}
		add("table=%d,priority=180,in_port=%s,actions=drop", tableClassify, s.tunnelPort)
	}
	add("table=%d,priority=160,in_port=%s,ip,actions=ct(table=%d,zone=%d)", tableClassify, s.gatewayPort, tableGatewayCommit, ctZone)
	add("table=%d,priority=150,in_port=%s,actions=goto_table:%d", tableClassify, s.gatewayPort, tableForward)
	for _, p := range s.pods {
		// A pod may only send from its own MAC and IP.
		add("table=%d,priority=100,in_port=%s,dl_src=%s,ip,nw_src=%s,actions=ct(table=%d,zone=%d)", tableClassify, p.port, p.mac, p.ip, tablePodConntrack, ctZone)
		add("table=%d,priority=100,in_port=%s,dl_src=%s,arp,arp_spa=%s,actions=goto_table:%d", tableClassify, p.port, p.mac, p.ip, tableForward)
	}
	add("table=%d,priority=0,actions=drop", tableClassify)
	// A gateway node hands what another node's gateway brought in from a peer cluster to its
	// kernel, as if its own gateway had: the reply of a connection a local pod made to a
	// Service (an imported one's VIP) may come back through any gateway of the cluster, and
	// only this node's kernel can undo kube-proxy's rewrite of it — delivered to the pod
	// directly, the reply would come from the wrong address. The kernel passes everything
	// back through the gateway port, where the connection is tracked and policed.
	if s.tunnelPort != "" && s.peers.localGateway {
		for _, node := range s.remoteNodeIPs() {
			for _, p := range s.peers.prefixes {
				add("table=%d,priority=210,in_port=%s,%s=%s,ip,nw_src=%s,actions=set_field:%s->eth_dst,output:%s",
					tableClassify, s.tunnelPort, tunSrc(node), node, p, s.gatewayMAC, s.gatewayPort)
			}
		}
	}

	// Packets the agent injects (rejections, held DNS answers) are forwarded as they are.
	add("table=%d,priority=300,reg5=%#x/%#x,actions=goto_table:%d", tableClassify, reg5Injected, reg5Injected, tableForward)

	// IP packets go through the policy tables (which commit new connections; those from the
	// gateway with a mark) and come back to forwarding. Replies of marked connections go back
	// to the gateway, wherever they come from.
	add("table=%d,priority=100,ip,actions=set_field:%#x->reg4,goto_table:%d", tableGatewayCommit, reg4FromGateway, tablePolicyEntry)
	add("table=%d,priority=0,actions=goto_table:%d", tableGatewayCommit, tableForward)
	for _, t := range []struct{ table, reg4 int }{{tablePodConntrack, 0}, {tableTunConntrack, reg4FromTunnel}} {
		if t.table == tableTunConntrack && s.tunnelPort == "" {
			continue
		}
		add("table=%d,priority=100,ip,ct_state=+trk+est+rpl,ct_mark=%d,actions=set_field:%s->eth_dst,output:%s",
			t.table, markGateway, s.gatewayMAC, s.gatewayPort)
		if t.reg4 != 0 {
			add("table=%d,priority=0,actions=set_field:%#x->reg4,goto_table:%d", t.table, t.reg4, tablePolicyEntry)
		} else {
			add("table=%d,priority=0,actions=goto_table:%d", t.table, tablePolicyEntry)
		}
	}
	f = append(f, s.policy...)

	// Forward from local sources. ARP goes to whoever holds the target address.
	add("table=%d,priority=200,arp,arp_tpa=%s,actions=output:%s", tableForward, s.gatewayIP, s.gatewayPort)
	for _, p := range s.pods {
		add("table=%d,priority=200,arp,arp_tpa=%s,actions=output:%s", tableForward, p.ip, p.port)
		add("table=%d,priority=100,ip,nw_dst=%s,actions=set_field:%s->eth_src,set_field:%s->eth_dst,output:%s",
			tableForward, p.ip, s.gatewayMAC, p.mac, p.port)
	}
	if s.tunnelPort != "" {
		for _, r := range s.remotes {
			add("table=%d,priority=50,ip,nw_dst=%s,actions=set_field:%s->tun_dst,set_field:%d->tun_id,set_field:%s->eth_dst,output:%s",
				tableForward, r.block, r.nodeIP, vni, tunnelMAC, s.tunnelPort)
		}
	}
	// Other clusters: a gateway node sends them to its kernel (and so into the tunnel to the
	// peers); other nodes pick a gateway node per connection by a symmetric hash of addresses,
	// protocol and TCP, UDP or SCTP ports (symmetric_l4 would leave UDP ports out).
	for _, p := range s.peers.prefixes {
		switch {
		case s.peers.localGateway:
			add("table=%d,priority=60,ip,nw_dst=%s,actions=set_field:%s->eth_dst,output:%s", tableForward, p, s.gatewayMAC, s.gatewayPort)
		case len(s.peers.gateways) > 0 && s.tunnelPort != "":
			add("table=%d,priority=60,ip,nw_dst=%s,actions=multipath(symmetric_l3l4+udp,0,hrw,%d,0,NXM_NX_REG1[0..15]),goto_table:%d",
				tableForward, p, len(s.peers.gateways), tablePeerGateway)
		default:
			add("table=%d,priority=60,ip,nw_dst=%s,actions=drop", tableForward, p)
		}
	}
	if !s.peers.localGateway && s.tunnelPort != "" && len(s.peers.prefixes) > 0 {
		for i, g := range s.peers.gateways {
			add("table=%d,priority=100,reg1=%d,ip,actions=set_field:%s->tun_dst,set_field:%d->tun_id,set_field:%s->eth_dst,output:%s",
				tablePeerGateway, i, g, vni, tunnelMAC, s.tunnelPort)
		}
	}
	// Everything else (the node, Services, other networks) is the node's to route.
	add("table=%d,priority=10,ip,actions=set_field:%s->eth_dst,output:%s", tableForward, s.gatewayMAC, s.gatewayPort)
	add("table=%d,priority=0,actions=drop", tableForward)

	// From other nodes: only to local pods and the gateway.
	if s.tunnelPort != "" {
		for _, p := range s.pods {
			add("table=%d,priority=100,ip,nw_dst=%s,actions=set_field:%s->eth_src,set_field:%s->eth_dst,output:%s",
				tableFromTunnel, p.ip, s.gatewayMAC, p.mac, p.port)
		}
		add("table=%d,priority=100,ip,nw_dst=%s,actions=set_field:%s->eth_dst,output:%s", tableFromTunnel, s.gatewayIP, s.gatewayMAC, s.gatewayPort)
		// A gateway node takes other nodes' peer-cluster traffic into its kernel.
		if s.peers.localGateway {
			for _, p := range s.peers.prefixes {
				add("table=%d,priority=60,ip,nw_dst=%s,actions=set_field:%s->eth_dst,output:%s", tableFromTunnel, p, s.gatewayMAC, s.gatewayPort)
			}
		}
		add("table=%d,priority=0,actions=drop", tableFromTunnel)
	}
	sort.Strings(f)
	return f
}

// applyFlows replaces the bridge's whole flow table in one OpenFlow bundle: the switch moves
// from the old table to the new one atomically, and flows that did not change keep their
// counters (so re-applying the same state changes nothing).
func applyFlows(ctx context.Context, ofctl, target string, flows []string) error {
	cmd := exec.CommandContext(ctx, ofctl, "-O", "OpenFlow13", "--bundle", "replace-flows", target, "-")
	cmd.Stdin = strings.NewReader(strings.Join(flows, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s replace-flows %s: %w: %s", ofctl, target, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// flowKey is what identifies a flow in its table: everything but its cookie and actions.
func flowKey(flow string) string {
	if strings.HasPrefix(flow, "cookie=") {
		if i := strings.IndexByte(flow, ','); i >= 0 {
			flow = flow[i+1:]
		}
	}
	if i := strings.Index(flow, ",actions="); i >= 0 {
		return flow[:i]
	}
	return flow
}

// flowDiff is the flow mods that turn the applied table into want: an add for each new or
// changed flow (an add replaces the flow with the same match), a strict delete for each
// flow that is gone. Both sets are keyed by flowKey.
func flowDiff(applied, want map[string]string) []string {
	var mods []string
	for k, f := range want {
		if applied[k] != f {
			mods = append(mods, "add "+f)
		}
	}
	for k := range applied {
		if _, ok := want[k]; !ok {
			mods = append(mods, "delete_strict "+k)
		}
	}
	sort.Strings(mods)
	return mods
}

// indexFlows keys flows by flowKey.
func indexFlows(flows []string) map[string]string {
	m := make(map[string]string, len(flows))
	for _, f := range flows {
		m[flowKey(f)] = f
	}
	return m
}

// applyFlowMods applies flow mods in one OpenFlow bundle (all or none).
func applyFlowMods(ctx context.Context, ofctl, target string, mods []string) error {
	cmd := exec.CommandContext(ctx, ofctl, "-O", "OpenFlow13", "--bundle", "add-flows", target, "-")
	cmd.Stdin = strings.NewReader(strings.Join(mods, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s add-flows %s: %w: %s", ofctl, target, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
