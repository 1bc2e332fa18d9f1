package bgp

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports the speaker's sessions to Prometheus: per peer, whether the session is
// Established and how many prefixes it sent and received.
type Metrics struct {
	mu    sync.Mutex
	peers []PeerStatus

	up, sent, received *prometheus.Desc
}

// NewMetrics returns the collector; register it with a registry.
func NewMetrics() *Metrics {
	labels := []string{"peer", "address"}
	return &Metrics{
		up:       prometheus.NewDesc("weft_bgp_session_established", "1 while the BGP session with the peer is Established.", labels, nil),
		sent:     prometheus.NewDesc("weft_bgp_prefixes_sent", "Prefixes the speaker announces to the peer.", labels, nil),
		received: prometheus.NewDesc("weft_bgp_prefixes_received", "Prefixes the peer announced and the speaker accepted.", labels, nil),
	}
}

// Set replaces the sessions reported.
func (m *Metrics) Set(peers []PeerStatus) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.peers = append([]PeerStatus(nil), peers...)
	m.mu.Unlock()
}

func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.up
	ch <- m.sent
	ch <- m.received
}

func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.peers {
		up := 0.0
		if p.State == "Established" {
			up = 1
		}
		l := []string{p.Name, p.Address.String()}
		ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, up, l...)
		ch <- prometheus.MustNewConstMetric(m.sent, prometheus.GaugeValue, float64(p.PrefixesSent), l...)
		ch <- prometheus.MustNewConstMetric(m.received, prometheus.GaugeValue, float64(p.PrefixesReceived), l...)
	}
}
