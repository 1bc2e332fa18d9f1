package ovs_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/agent/policy"
	"github.com/weft-net/weft/agent/policy/oracle"
	"github.com/weft-net/weft/agent/policy/policytest"
	"github.com/weft-net/weft/internal/netnstest"
)

// BenchmarkPolicyThroughput measures pod→pod TCP across two nodes with no policy and with
// the 10,000-rule world enforced on both nodes (each node holds 110 of its 1,000 pods, the
// two real pods among them; the benchmark's connection is allowed after passing the rules
// that apply to it), in the same run. It also reports how long compiling and applying the
// policy took (apply-ms: the first time, 10,000 rules into an empty table; update-ms: one
// policy's peers change afterwards, compile included). Target (issue 8): throughput with the rules ≥ 80% of without.
func BenchmarkPolicyThroughput(b *testing.B) {
	netnstest.RequireRoot(b)
	ctx := context.Background()
	sw := netnstest.NewSwitch(b)
	n1 := newNode(b, sw, "bp1", "172.29.7.11", "10.99.1.0/24", "geneve")
	n2 := newNode(b, sw, "bp2", "172.29.7.12", "10.99.2.0/24", "geneve")
	for _, n := range []*node{n1, n2} {
		n.do(b, func() error { return n.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n1.remote(), n2.remote()}) })
	}
	client, _ := n1.addPod(b, "bclient", "10.99.1.5/24")
	server, _ := n2.addPod(b, "bserver", "10.99.2.5/24")
	if err := client.PingUntil("10.99.2.5", 10*time.Second); err != nil {
		b.Fatal(err)
	}
	// 1,000 pods: 110 per real node (the real pod first), the rest elsewhere.
	addrs := append([]netip.Addr{netip.MustParseAddr("10.99.1.5")}, policytest.Addrs(netip.MustParseAddr("10.99.1.10"), 109)...)
	addrs = append(addrs, netip.MustParseAddr("10.99.2.5"))
	addrs = append(addrs, policytest.Addrs(netip.MustParseAddr("10.99.2.10"), 109)...)
	addrs = append(addrs, policytest.Addrs(netip.MustParseAddr("10.100.0.1"), 780)...)
	w := policytest.TenThousandRules(addrs)

	b.Run("no-policy", func(b *testing.B) { netnstest.BenchTCP(b, server, client, "10.99.2.5:5301") })

	var compile, apply time.Duration
	var rules int
	for i, n := range []*node{n1, n2} {
		local := w.Pods[i*110 : (i+1)*110]
		start := time.Now()
		pl := policy.Compile(w, local).Pipeline()
		compile = max(compile, time.Since(start))
		rules = max(rules, pl.Rules())
		start = time.Now()
		n.do(b, func() error { return n.dp.SetPolicy(ctx, datapath.Policy{Pipeline: pl}) })
		apply = max(apply, time.Since(start))
	}
	// The benchmark's own connection is allowed by the policy.
	if v := w.Evaluate(oracle.Conn{Src: addrs[0], Dst: addrs[110], Protocol: "TCP", Port: 5301}); !v.Allowed() {
		b.Fatalf("the world denies the benchmark's connection: %+v", v)
	}
	flows := len(n2.snapshot(b).flows)
	// An update: one policy changes its peers (a label selector) on the client's node.
	w.Policies[0].Spec.Ingress[0].From[0].PodSelector.MatchLabels["app"] = "app49"
	start := time.Now()
	pl := policy.Compile(w, w.Pods[:110]).Pipeline()
	n1.do(b, func() error { return n1.dp.SetPolicy(ctx, datapath.Policy{Pipeline: pl}) })
	update := time.Since(start)
	// Let the switch's revalidators finish with the new table before measuring.
	time.Sleep(5 * time.Second)
	b.Run("10k-rules", func(b *testing.B) {
		netnstest.BenchTCP(b, server, client, "10.99.2.5:5301")
		b.ReportMetric(float64(rules), "rules")
		b.ReportMetric(float64(flows), "flows")
		b.ReportMetric(float64(compile.Milliseconds()), "compile-ms")
		b.ReportMetric(float64(apply.Milliseconds()), "apply-ms")
		b.ReportMetric(float64(update.Milliseconds()), "update-ms")
	})
	// And without again: the difference between the first two runs is only the policy's if
	// this one matches the first.
	for _, n := range []*node{n1, n2} {
		n.do(b, func() error { return n.dp.SetPolicy(ctx, datapath.Policy{}) })
	}
	time.Sleep(5 * time.Second)
	b.Run("no-policy-again", func(b *testing.B) { netnstest.BenchTCP(b, server, client, "10.99.2.5:5301") })
}

// BenchmarkGatewayFailoverFlows measures what a node's agent spends in the datapath when a
// peer-cluster gateway fails or comes back (SetPeerRoutes from two gateways to one and
// back, 200 changes each way): through the driver's own OpenFlow connection, and — the
// baseline, in the same run — through ovs-ofctl, which the driver used before. It prints
// p50 and p99 of each. Under load a spawned ovs-ofctl costs far more than idle (30–470 ms
// measured in the lab); the benchmark runs on an idle node.
func BenchmarkGatewayFailoverFlows(b *testing.B) {
	netnstest.RequireRoot(b)
	ctx := context.Background()
	sw := netnstest.NewSwitch(b)
	n1 := newNode(b, sw, "bf1", "172.29.8.11", "10.99.1.0/24", "geneve")
	g1 := newNode(b, sw, "bf2", "172.29.8.12", "10.99.2.0/24", "geneve")
	g2 := newNode(b, sw, "bf3", "172.29.8.13", "10.99.3.0/24", "geneve")
	n1.do(b, func() error { return n1.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{g1.remote(), g2.remote()}) })
	n1.addPod(b, "bfpod", "10.99.1.5/24")
	peers := []netip.Prefix{netip.MustParsePrefix("10.250.0.0/16"), netip.MustParsePrefix("10.97.0.0/16")}
	both := datapath.PeerRoutes{Prefixes: peers, Gateways: []netip.Addr{g1.ip, g2.ip}}
	one := datapath.PeerRoutes{Prefixes: peers, Gateways: []netip.Addr{g2.ip}}
	n1.do(b, func() error { return n1.dp.SetPeerRoutes(ctx, both) })
	const changes = 200
	for _, path := range []struct {
		name  string
		ofctl bool
	}{{"openflow-connection", false}, {"ovs-ofctl", true}} {
		b.Run(path.name, func(b *testing.B) {
			ovs.OFCtlOnly(n1.dp, path.ofctl)
			var took []time.Duration
			n1.do(b, func() error {
				for i := range changes {
					r := one
					if i%2 == 1 {
						r = both
					}
					start := time.Now()
					if err := n1.dp.SetPeerRoutes(ctx, r); err != nil {
						return err
					}
					took = append(took, time.Since(start))
				}
				return nil
			})
			slices.Sort(took)
			pct := func(p float64) float64 {
				return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
