// Package metricstest reads what a Prometheus collector exports, for tests.
package metricstest

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Sample is one series' value: a counter's or gauge's value, a histogram's sample count
// (Name ends in _count).
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Key is the series as the text format prints it: name{a="x",b="y"}, labels in order.
func (s Sample) Key() string {
	if len(s.Labels) == 0 {
		return s.Name
	}
	var l []string
	for k, v := range s.Labels {
		l = append(l, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(l)
	return s.Name + "{" + strings.Join(l, ",") + "}"
}

// Gather registers c alone in a pedantic registry (which checks its descriptions) and
// returns every sample.
func Gather(t testing.TB, c prometheus.Collector) []Sample {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []Sample
	for _, f := range families {
		for _, m := range f.GetMetric() {
			s := Sample{Name: f.GetName(), Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				s.Value = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s.Value = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				s.Name += "_count"
				s.Value = float64(m.GetHistogram().GetSampleCount())
			default:
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

// Values is Gather by Key.
func Values(t testing.TB, c prometheus.Collector) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range Gather(t, c) {
		out[s.Key()] = s.Value
	}
	return out
}
