package gateway

import (
	"context"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/internal/health"
	"github.com/weft-net/weft/internal/nft"
)

// Metrics exports, per peer gateway (a bounded set: a peer advertises at most 64), whether
// it answers health probes through its tunnel, the probes' round-trip time, its tunnel's
// bytes each way and last handshake, and how often it went down and came back; and what the
// gateway dropped coming out of its tunnels. Everything is read when scraped: nothing is
// kept up to date between scrapes.
type Metrics struct {
	// source gives the gateway's view at scrape time (nil: nothing to report yet).
	source func(ctx context.Context) metricsView

	mu          sync.Mutex
	transitions map[transitionKey]float64

	up, rtt, sent, answered, rx, tx, handshake, changes, dropped *prometheus.Desc
}

type transitionKey struct{ peer, gateway, direction string }

// metricsView is what one scrape reports.
type metricsView struct {
	// gateways names each peer gateway by its endpoint address.
	gateways map[netip.Addr]peerGateway
	probes   []health.Status
	tunnels  []tunnel.PeerStatus
	// dropped counts packets the tunnel filter dropped, by chain (nil: unknown).
	dropped map[string]float64
}

type peerGateway struct{ peer, gateway string }

// NewMetrics returns the collector; register it with a registry.
func NewMetrics() *Metrics {
	pg := []string{"peer", "gateway"}
	return &Metrics{
		transitions: map[transitionKey]float64{},
		up:          prometheus.NewDesc("weft_gateway_peer_up", "1 while the peer gateway answers health probes through its tunnel.", pg, nil),
		rtt:         prometheus.NewDesc("weft_gateway_probe_rtt_seconds", "Smoothed round-trip time of health probes through the tunnel to the peer gateway.", pg, nil),
		sent:        prometheus.NewDesc("weft_gateway_probes_sent_total", "Health probes sent to the peer gateway.", pg, nil),
		answered:    prometheus.NewDesc("weft_gateway_probe_answers_total", "Answers to health probes the peer gateway sent back (each naming a recent probe).", pg, nil),
		rx:          prometheus.NewDesc("weft_gateway_tunnel_receive_bytes_total", "Bytes received from the peer gateway through the tunnel.", pg, nil),
		tx:          prometheus.NewDesc("weft_gateway_tunnel_transmit_bytes_total", "Bytes sent to the peer gateway through the tunnel.", pg, nil),
		handshake:   prometheus.NewDesc("weft_gateway_tunnel_last_handshake_timestamp_seconds", "When the tunnel to the peer gateway last handshook (WireGuard; absent before the first).", pg, nil),
		changes: prometheus.NewDesc("weft_gateway_peer_transitions_total",
			"Times the peer gateway stopped (direction=down) or resumed (direction=up) answering: failovers seen from here.", append(pg, "direction"), nil),
		dropped: prometheus.NewDesc("weft_gateway_tunnel_dropped_packets_total",
			"Packets out of a tunnel the gateway dropped: to what the fabric does not carry (chain=from_tunnel) or to the node itself (chain=to_node).", []string{"chain"}, nil),
	}
}

// transition counts a peer gateway going down or coming back.
func (m *Metrics) transition(peer, gateway string, up bool) {
	if m == nil {
		return
	}
	d := "down"
	if up {
		d = "up"
	}
	m.mu.Lock()
	m.transitions[transitionKey{peer, gateway, d}]++
	m.mu.Unlock()
}

func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.up, m.rtt, m.sent, m.answered, m.rx, m.tx, m.handshake, m.changes, m.dropped} {
		ch <- d
	}
}

func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if m.source == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v := m.source(ctx)
	for _, p := range v.probes {
		pg, ok := v.gateways[p.Target.Addr.Addr()]
		if !ok {
			continue
		}
		up := 0.0
		if p.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, up, pg.peer, pg.gateway)
		if p.RTT > 0 {
			ch <- prometheus.MustNewConstMetric(m.rtt, prometheus.GaugeValue, p.RTT.Seconds(), pg.peer, pg.gateway)
		}
		ch <- prometheus.MustNewConstMetric(m.sent, prometheus.CounterValue, float64(p.Sent), pg.peer, pg.gateway)
		ch <- prometheus.MustNewConstMetric(m.answered, prometheus.CounterValue, float64(p.Received), pg.peer, pg.gateway)
	}
	for _, t := range v.tunnels {
		pg, ok := v.gateways[t.Endpoint.Addr()]
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.rx, prometheus.CounterValue, float64(t.RxBytes), pg.peer, pg.gateway)
		ch <- prometheus.MustNewConstMetric(m.tx, prometheus.CounterValue, float64(t.TxBytes), pg.peer, pg.gateway)
		if !t.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.handshake, prometheus.GaugeValue, float64(t.LastHandshake.Unix()), pg.peer, pg.gateway)
		}
	}
	m.mu.Lock()
	for k, n := range m.transitions {
		ch <- prometheus.MustNewConstMetric(m.changes, prometheus.CounterValue, n, k.peer, k.gateway, k.direction)
	}
	m.mu.Unlock()
	for chain, n := range v.dropped {
		ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, n, chain)
	}
}

// metricsView is what the gateway reports when scraped: the peers (under its lock), the
// prober's and the tunnel's views, the filter's counters.
func (g *gw) metricsView(ctx context.Context) metricsView {
	g.mu.Lock()
	peers := slices.Clone(g.peers)
	tun := g.tun
	g.mu.Unlock()
	v := metricsView{gateways: gatewaysByAddr(peers), probes: g.prober.Status(), dropped: droppedByTunnelFilter(ctx)}
	if tun != nil {
		v.tunnels, _ = tun.Status(ctx)
	}
	return v
}

// gatewaysByAddr names the peers' gateways by their endpoints' addresses.
func gatewaysByAddr(peers []fabricv1.ClusterPeer) map[netip.Addr]peerGateway {
	out := map[netip.Addr]peerGateway{}
	for _, p := range peers {
		for _, gw := range p.Status.Gateways {
			if ep, err := netip.ParseAddrPort(gw.Endpoint); err == nil {
				out[ep.Addr()] = peerGateway{p.Name, gw.Node}
			}
		}
	}
	return out
}

var (
	nftChain   = regexp.MustCompile(`^\s*chain (\S+) \{`)
	nftCounter = regexp.MustCompile(`counter packets (\d+)`)
)

// droppedByTunnelFilter reads the tunnel filter's drop counters (nft list table).
func droppedByTunnelFilter(ctx context.Context) map[string]float64 {
	out, err := exec.CommandContext(ctx, nft.Path(), "list", "table", "inet", "weft-gateway").Output()
	if err != nil {
		return nil
	}
	return parseDropCounters(string(out))
}

// parseDropCounters takes, from nft's listing of the gateway's table, the sum of the packet
// counters of each chain that has some (every counted rule of the filter drops).
func parseDropCounters(listing string) map[string]float64 {
	got := map[string]float64{}
	chain := ""
	for _, line := range strings.Split(listing, "\n") {
		if m := nftChain.FindStringSubmatch(line); m != nil {
			chain = m[1]
			continue
		}
		if m := nftCounter.FindStringSubmatch(line); m != nil && chain != "" {
			if n, err := strconv.ParseFloat(m[1], 64); err == nil {
				got[chain] += n
			}
		}
	}
	return got
}
