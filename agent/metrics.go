package agent

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/datapath"
)

// agentMetrics are the agent's own metrics beside BGP's: how long CNI calls take, and, read
// when scraped, the node's pods, the policy rules it enforces and what each decided, and the
// addresses its pods' FQDN rules learnt. Labels are bounded (command, result; a rule's
// names: as many series as the node enforces rules).
type agentMetrics struct {
	cni *prometheus.HistogramVec
	// sources are what the gauges read, once run has them (nil before).
	sources atomic.Pointer[metricSources]

	podsDesc, rulesDesc, fqdnDesc, verdictsDesc *prometheus.Desc
}

type metricSources struct {
	dp     datapath.Datapath
	policy *policyEngine
}

func newAgentMetrics() *agentMetrics {
	return &agentMetrics{
		cni: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_agent_cni_duration_seconds",
			Help:    "Time the agent took to answer a CNI call (ADD includes the pod's policy being in place), by command and result.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}}, []string{"command", "result"}),
		podsDesc:  prometheus.NewDesc("weft_agent_pods", "Pods wired on this node.", nil, nil),
		rulesDesc: prometheus.NewDesc("weft_agent_policy_rules", "Policy rules the node's datapath enforces (compiled, for the node's pods).", nil, nil),
		fqdnDesc:  prometheus.NewDesc("weft_agent_fqdn_addresses", "Addresses the node's pods' FQDN rules allow, learnt from trusted DNS answers.", nil, nil),
		verdictsDesc: prometheus.NewDesc("weft_agent_policy_verdicts_total",
			"Packets each enforced policy rule decided on this node: a connection's first packet when it allows, every packet it drops or rejects (read from the datapath's counters).",
			[]string{"direction", "tier", "policy", "rule", "action"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *agentMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.cni.Describe(ch)
	ch <- m.podsDesc
	ch <- m.rulesDesc
	ch <- m.fqdnDesc
	ch <- m.verdictsDesc
}

// Collect implements prometheus.Collector.
func (m *agentMetrics) Collect(ch chan<- prometheus.Metric) {
	m.cni.Collect(ch)
	src := m.sources.Load()
	if src == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if pods, err := src.dp.Pods(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(m.podsDesc, prometheus.GaugeValue, float64(len(pods)))
	}
	if counts, err := src.dp.RuleCounts(ctx); err == nil {
		for _, c := range counts {
			r := c.Rule
			ch <- prometheus.MustNewConstMetric(m.verdictsDesc, prometheus.CounterValue, float64(c.Packets),
				r.Direction, r.Tier, r.Policy, r.Rule, string(r.Action))
		}
	}
	if s := src.policy.syncer.Load(); s != nil {
		rules, learnt := s.Enforced()
		ch <- prometheus.MustNewConstMetric(m.rulesDesc, prometheus.GaugeValue, float64(rules))
		ch <- prometheus.MustNewConstMetric(m.fqdnDesc, prometheus.GaugeValue, float64(learnt))
	}
}

// timed is h with its calls timed.
func (m *agentMetrics) timed(h cniserver.Handler) cniserver.Handler { return &timedHandler{h: h, m: m} }

type timedHandler struct {
	h cniserver.Handler
	m *agentMetrics
}

func (t *timedHandler) observe(command string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	t.m.cni.WithLabelValues(command, result).Observe(time.Since(start).Seconds())
}

func (t *timedHandler) Add(ctx context.Context, c cniserver.Call) (*current.Result, error) {
	start := time.Now()
	res, err := t.h.Add(ctx, c)
	t.observe("ADD", start, err)
	return res, err
}

func (t *timedHandler) Del(ctx context.Context, c cniserver.Call) error {
	start := time.Now()
	err := t.h.Del(ctx, c)
	t.observe("DEL", start, err)
	return err
}

func (t *timedHandler) Check(ctx context.Context, c cniserver.Call) error {
	start := time.Now()
	err := t.h.Check(ctx, c)
	t.observe("CHECK", start, err)
	return err
}

func (t *timedHandler) Status(ctx context.Context) error { return t.h.Status(ctx) }

func (t *timedHandler) GC(ctx context.Context, valid []types.GCAttachment) error {
	return t.h.GC(ctx, valid)
}
