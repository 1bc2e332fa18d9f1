package gateway

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/internal/health"
)

func TestMetricsPerPeerGateway(t *testing.T) {
	peers := []fabricv1.ClusterPeer{{ObjectMeta: metav1.ObjectMeta{Name: "weft-2"}, Status: fabricv1.ClusterPeerStatus{
		Gateways: []fabricv1.GatewayStatus{{Node: "weft-2-node-1", Endpoint: "172.30.2.11:51820"}, {Node: "weft-2-node-3", Endpoint: "172.30.2.13:51820"}}}}}
	a1, a3 := netip.MustParseAddrPort("172.30.2.11:10390"), netip.MustParseAddrPort("172.30.2.13:10390")
	hs := time.Unix(1_800_000_000, 0)
	m := NewMetrics()
	m.source = func(context.Context) metricsView {
		return metricsView{gateways: gatewaysByAddr(peers),
			probes: []health.Status{
				{Target: health.Target{Addr: a1}, Up: true, RTT: 2 * time.Millisecond, Sent: 100, Received: 98},
				{Target: health.Target{Addr: a3}, Up: false, Sent: 100},
				{Target: health.Target{Addr: netip.MustParseAddrPort("10.0.0.9:10390")}, Up: true}, // no longer a peer's: not reported
			},
			tunnels: []tunnel.PeerStatus{{Endpoint: netip.MustParseAddrPort("172.30.2.11:51820"), RxBytes: 5000, TxBytes: 7000, LastHandshake: hs}},
			dropped: parseDropCounters(nftListing)}
	}
	m.transition("weft-2", "weft-2-node-3", false)
	want := `
# HELP weft_gateway_peer_up 1 while the peer gateway answers health probes through its tunnel.
# TYPE weft_gateway_peer_up gauge
weft_gateway_peer_up{gateway="weft-2-node-1",peer="weft-2"} 1
weft_gateway_peer_up{gateway="weft-2-node-3",peer="weft-2"} 0
# HELP weft_gateway_probe_rtt_seconds Smoothed round-trip time of health probes through the tunnel to the peer gateway.
# TYPE weft_gateway_probe_rtt_seconds gauge
weft_gateway_probe_rtt_seconds{gateway="weft-2-node-1",peer="weft-2"} 0.002
# HELP weft_gateway_tunnel_transmit_bytes_total Bytes sent to the peer gateway through the tunnel.
# TYPE weft_gateway_tunnel_transmit_bytes_total counter
weft_gateway_tunnel_transmit_bytes_total{gateway="weft-2-node-1",peer="weft-2"} 7000
# HELP weft_gateway_tunnel_last_handshake_timestamp_seconds When the tunnel to the peer gateway last handshook (WireGuard; absent before the first).
# TYPE weft_gateway_tunnel_last_handshake_timestamp_seconds gauge
weft_gateway_tunnel_last_handshake_timestamp_seconds{gateway="weft-2-node-1",peer="weft-2"} 1.8e+09
# HELP weft_gateway_peer_transitions_total Times the peer gateway stopped (direction=down) or resumed (direction=up) answering: failovers seen from here.
# TYPE weft_gateway_peer_transitions_total counter
weft_gateway_peer_transitions_total{direction="down",gateway="weft-2-node-3",peer="weft-2"} 1
# HELP weft_gateway_tunnel_dropped_packets_total Packets out of a tunnel the gateway dropped: to what the fabric does not carry (chain=from_tunnel) or to the node itself (chain=to_node).
# TYPE weft_gateway_tunnel_dropped_packets_total counter
weft_gateway_tunnel_dropped_packets_total{chain="from_tunnel"} 12
weft_gateway_tunnel_dropped_packets_total{chain="to_node"} 3
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "weft_gateway_peer_up", "weft_gateway_probe_rtt_seconds",
		"weft_gateway_tunnel_transmit_bytes_total", "weft_gateway_tunnel_last_handshake_timestamp_seconds",
		"weft_gateway_peer_transitions_total", "weft_gateway_tunnel_dropped_packets_total"); err != nil {
		t.Error(err)
	}
}

// nftListing is what `nft list table inet weft-gateway` prints (trimmed).
const nftListing = `table inet weft-gateway {
	set own4 {
		type ipv4_addr
		flags interval
		elements = { 10.244.0.0/16, 10.96.0.0/16 }
	}
	chain forward {
		type filter hook forward priority mangle; policy accept;
		oifname "weft-wg*" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
	}
	chain from_tunnel {
		type filter hook forward priority filter; policy accept;
		iifname "weft-wg*" meta nfproto ipv4 ip daddr @own4 accept
		iifname "weft-wg*" ct state established,related accept comment "replies to host-network clients"
		iifname "weft-wg*" counter packets 12 bytes 720 drop comment "out of a tunnel to what the fabric does not carry"
	}
	chain to_node {
		type filter hook input priority filter; policy accept;
		iifname != "weft-wg*" accept
		udp dport 10390 accept comment "peer gateways' health probes"
		counter packets 3 bytes 180 drop comment "out of a tunnel to this node"
	}
}
`
