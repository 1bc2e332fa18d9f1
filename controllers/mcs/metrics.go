package mcs

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/internal/mcs"
)

// Metrics exports Multi-Cluster Services as this cluster's operator sees them: the
// ServiceExports here, the ServiceImports it made, the Services each cluster exports (its
// records), read from caches when scraped; and how long an export took to be imported here.
// Labels are per cluster of the clusterset, never per Service.
type Metrics struct {
	reader client.Reader
	view   *View

	exports, imports, clusterExports *prometheus.Desc
	lag                              *prometheus.HistogramVec
}

// NewMetrics returns the collector over reader (the manager's cached client) and view;
// register it with the manager's metrics registry and give it to the ImportReconciler.
func NewMetrics(reader client.Reader, view *View) *Metrics {
	return &Metrics{
		reader: reader, view: view,
		exports: prometheus.NewDesc("weft_mcs_exports", "ServiceExports in this cluster.", nil, nil),
		imports: prometheus.NewDesc("weft_mcs_imports", "ServiceImports weft made in this cluster.", nil, nil),
		clusterExports: prometheus.NewDesc("weft_mcs_cluster_exports",
			"Services each cluster of the clusterset exports, as its records read here say (this cluster's too).", []string{"source_cluster"}, nil),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_mcs_export_to_import_seconds",
			Help:    "From a ServiceExport's creation in the exporting cluster (its creationTimestamp: one-second resolution, that cluster's clock) to its ServiceImport being made here, for exports made while this operator read that cluster.",
			Buckets: []float64{0.5, 1, 2, 3, 5, 10, 30, 60, 300}}, []string{"source_cluster"}),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.exports
	ch <- m.imports
	ch <- m.clusterExports
	m.lag.Describe(ch)
}

// Collect implements prometheus.Collector. Only the leader, whose view runs, reports (a
// standby's cache would otherwise start watches to answer).
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.view.mu.Lock()
	running := !m.view.started.IsZero()
	m.view.mu.Unlock()
	if !running {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	exports := &mcsv1.ServiceExportList{}
	if err := m.reader.List(ctx, exports); err == nil {
		ch <- prometheus.MustNewConstMetric(m.exports, prometheus.GaugeValue, float64(len(exports.Items)))
	}
	imports := &mcsv1.ServiceImportList{}
	if err := m.reader.List(ctx, imports, client.MatchingLabels{"app.kubernetes.io/managed-by": mcs.ManagedBy}); err == nil {
		ch <- prometheus.MustNewConstMetric(m.imports, prometheus.GaugeValue, float64(len(imports.Items)))
	}
	for cluster, n := range m.view.RecordCounts(ctx) {
		ch <- prometheus.MustNewConstMetric(m.clusterExports, prometheus.GaugeValue, float64(n), cluster)
	}
	m.lag.Collect(ch)
}

// imported observes, when the ServiceImport of recs was just made at now, how long after its
// newest export that was — if that export was made while the view read its cluster (older
// ones were waiting for this operator or for the peer to join, not travelling).
func (m *Metrics) imported(ctx context.Context, recs []ClusterRecord, now time.Time) {
	if m == nil || len(recs) == 0 {
		return
	}
	newest := recs[0].Export
	for _, r := range recs[1:] {
		if r.Export.Created.After(newest.Created) {
			newest = r.Export
		}
	}
	// A second of slack: creationTimestamp is truncated to the second.
	if since := m.view.ReadSince(ctx, newest.Cluster); since.IsZero() || newest.Created.Add(time.Second).Before(since) {
		return
	}
	m.lag.WithLabelValues(newest.Cluster).Observe(max(now.Sub(newest.Created), 0).Seconds())
}
