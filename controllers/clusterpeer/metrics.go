package clusterpeer

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Metrics exports each ClusterPeer's state as the operator sees it: how many of this
// cluster's tunnels to the peer carry traffic (the figure Ready follows), its conditions, how
// stale its served state is, and how many gateways it advertises. Everything is read from the
// manager's cache when scraped: no API call, no work between scrapes. The label set is one
// per peer.
type Metrics struct {
	reader client.Reader

	tunnelsUp, tunnels, condition, stale, lastSync, gateways *prometheus.Desc
}

// metricConditions are the ClusterPeer conditions exported, each 1 while True.
var metricConditions = []string{fabricv1.ConditionConnected, fabricv1.ConditionAccepted, fabricv1.ConditionReady, fabricv1.ConditionDegraded, fabricv1.ConditionStalled}

// NewMetrics returns the collector over the ClusterPeers and ClusterNetwork reader reads
// (the manager's cached client); register it with the manager's metrics registry.
func NewMetrics(reader client.Reader) *Metrics {
	peer := []string{"peer"}
	return &Metrics{
		reader: reader,
		tunnelsUp: prometheus.NewDesc("weft_clusterpeer_tunnels_up",
			"Tunnels from this cluster's live gateways to the peer's gateways that carry traffic (answer health probes; handshaken, for WireGuard). Ready is True while it is above 0.", peer, nil),
		tunnels: prometheus.NewDesc("weft_clusterpeer_tunnels",
			"Tunnels from this cluster's live gateways to the peer's gateways, up or not.", peer, nil),
		condition: prometheus.NewDesc("weft_clusterpeer_condition",
			"1 while the ClusterPeer's condition of this type is True, 0 otherwise (Connected: its API server is read; Accepted: its advertisement is in force; Ready: traffic can flow; Degraded: its last known state is served; Stalled: a user must act).",
			[]string{"peer", "type"}, nil),
		stale: prometheus.NewDesc("weft_clusterpeer_stale_seconds",
			"How long the peer's last known state has been served because its API server cannot be read (0 while it is read).", peer, nil),
		lastSync: prometheus.NewDesc("weft_clusterpeer_last_sync_timestamp_seconds",
			"When the operator last recorded a successful read of the peer (status.lastSyncTime, refreshed every few minutes at rest).", peer, nil),
		gateways: prometheus.NewDesc("weft_clusterpeer_gateways",
			"Gateways the peer advertises.", peer, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.tunnelsUp, m.tunnels, m.condition, m.stale, m.lastSync, m.gateways} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Before the cache has synced there is nothing to
// report, and nothing is.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var peers fabricv1.ClusterPeerList
	if err := m.reader.List(ctx, &peers); err != nil {
		return
	}
	own := &fabricv1.ClusterNetwork{}
	if err := m.reader.Get(ctx, types.NamespacedName{Name: fabricv1.ClusterNetworkName}, own); err != nil {
		own = &fabricv1.ClusterNetwork{}
	}
	now := time.Now()
	for i := range peers.Items {
		p := &peers.Items[i]
		d := dataPlane(own, p)
		ch <- prometheus.MustNewConstMetric(m.tunnelsUp, prometheus.GaugeValue, float64(d.tunnelsUp), p.Name)
		ch <- prometheus.MustNewConstMetric(m.tunnels, prometheus.GaugeValue, float64(d.tunnels), p.Name)
		for _, typ := range metricConditions {
			v := 0.0
			if meta.IsStatusConditionTrue(p.Status.Conditions, typ) {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.condition, prometheus.GaugeValue, v, p.Name, typ)
		}
		stale := 0.0
		if s := p.Status.StaleSince; s != nil {
			stale = max(0, now.Sub(s.Time).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(m.stale, prometheus.GaugeValue, stale, p.Name)
		if t := p.Status.LastSyncTime; t != nil {
			ch <- prometheus.MustNewConstMetric(m.lastSync, prometheus.GaugeValue, float64(t.Unix()), p.Name)
		}
		ch <- prometheus.MustNewConstMetric(m.gateways, prometheus.GaugeValue, float64(len(p.Status.Gateways)), p.Name)
	}
}
