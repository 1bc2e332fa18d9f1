package dns

import (
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Query types and response codes the metrics count by (others count as "other"): a bounded
// label set, whatever clients send.
var (
	metricTypes  = [...]uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT, dns.TypeSOA, dns.TypeNS, dns.TypeANY}
	metricRcodes = [...]int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeFormatError, dns.RcodeNotImplemented}
)

// Stats counts what the server answers; the hot path only adds to atomic counters and a
// histogram. It is also the Prometheus collector of weft-dns's metrics, read when scraped.
type Stats struct {
	a       *Answerer
	queries [len(metricTypes) + 1][len(metricRcodes) + 1]atomic.Uint64
	latency prometheus.Histogram

	queriesDesc, servicesDesc, ageDesc *prometheus.Desc
}

// NewStats makes a's answers counted (call before Serve).
func NewStats(a *Answerer) *Stats {
	s := &Stats{a: a,
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_dns_request_duration_seconds",
			Help:    "Time from reading a query to having its answer, by weft-dns.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 50e-3}}),
		queriesDesc:  prometheus.NewDesc("weft_dns_queries_total", "Queries answered, by query type and response code.", []string{"type", "rcode"}, nil),
		servicesDesc: prometheus.NewDesc("weft_dns_services", "Multi-cluster Services in the zone answered from.", nil, nil),
		ageDesc: prometheus.NewDesc("weft_dns_zone_age_seconds",
			"Time since the zone answered from was built (it is rebuilt when imports or their endpoints change).", nil, nil),
	}
	a.stats.Store(s)
	return s
}

func typeIndex(t uint16) int {
	for i, m := range metricTypes {
		if m == t {
			return i
		}
	}
	return len(metricTypes)
}

func rcodeIndex(r int) int {
	for i, m := range metricRcodes {
		if m == r {
			return i
		}
	}
	return len(metricRcodes)
}

// count counts one answer, when the answers are counted (NewStats).
func (a *Answerer) count(qtype uint16, rcode int, since time.Time) {
	s := a.stats.Load()
	if s == nil {
		return
	}
	s.queries[typeIndex(qtype)][rcodeIndex(rcode)].Add(1)
	s.latency.Observe(time.Since(since).Seconds())
}

// Describe implements prometheus.Collector.
func (s *Stats) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.queriesDesc
	ch <- s.servicesDesc
	ch <- s.ageDesc
	s.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Stats) Collect(ch chan<- prometheus.Metric) {
	for i := range s.queries {
		typ := "other"
		if i < len(metricTypes) {
			typ = dns.TypeToString[metricTypes[i]]
		}
		for j := range s.queries[i] {
			n := s.queries[i][j].Load()
			if n == 0 {
				continue
			}
			rcode := "other"
			if j < len(metricRcodes) {
				rcode = dns.RcodeToString[metricRcodes[j]]
			}
			ch <- prometheus.MustNewConstMetric(s.queriesDesc, prometheus.CounterValue, float64(n), typ, rcode)
		}
	}
	snap := s.a.snap()
	services := 0
	if snap.zone != nil {
		services = snap.zone.Len()
	}
	ch <- prometheus.MustNewConstMetric(s.servicesDesc, prometheus.GaugeValue, float64(services))
	if !snap.built.IsZero() {
		ch <- prometheus.MustNewConstMetric(s.ageDesc, prometheus.GaugeValue, time.Since(snap.built).Seconds())
	}
	s.latency.Collect(ch)
}

// questionType is the type of a query's first question (0 when it cannot be read).
func questionType(msg []byte) uint16 {
	i := 12
	for i < len(msg) {
		l := int(msg[i])
		if l == 0 {
			i++
			break
		}
		if l&0xc0 != 0 { // a pointer: not in a query's first name, but be safe
			i += 2
			break
		}
		i += 1 + l
	}
	if i+2 > len(msg) {
		return 0
	}
	return uint16(msg[i])<<8 | uint16(msg[i+1])
}
