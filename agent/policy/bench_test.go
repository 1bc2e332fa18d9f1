package policy_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/agent/policy"
	"github.com/weft-net/weft/agent/policy/policytest"
)

// BenchmarkCompile10kRules compiles 10,000 rules (100 policies × 50 ingress + 50 egress
// rules, pod-selector, ipBlock and port peers) for the 110 pods of a node out of 1,000, and
// regroups them as the datapaths take them (Pipeline). Target (issue 8): under 1 s.
func BenchmarkCompile10kRules(b *testing.B) {
	w := policytest.TenThousandRules(policytest.Addrs(netip.MustParseAddr("10.1.0.1"), 1000))
	node := w.Pods[:110]
	b.ResetTimer()
	var rules int
	var pipeline time.Duration
	for range b.N {
		prog := policy.Compile(w, node)
		start := time.Now()
		rules = prog.Pipeline().Rules()
		pipeline += time.Since(start)
	}
	b.ReportMetric(float64(rules), "pipeline-rules")
	b.ReportMetric(float64(pipeline.Milliseconds())/float64(b.N), "pipeline-ms/op")
}
