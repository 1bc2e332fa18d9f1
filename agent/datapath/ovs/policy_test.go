package ovs_test

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/agent/policy"
	"github.com/weft-net/weft/agent/policy/oracle"
	"github.com/weft-net/weft/agent/policy/policytest"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/ovsrun"
)

// The driver-neutral policy tests (probe matrix against the oracle, logging, established
// connections, FQDN learning) are in agent/datapath/conformance; these are the OVS driver's
// own.

// A restarted driver takes over the policy flows as they are: not one flow replaced (a
// replaced flow is a window without enforcement), and the policy still holds.
func TestRestartedDriverKeepsThePolicyFlows(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	var pods []*policytest.Pod
	for _, spec := range []struct{ name, ip, ns, app string }{
		{"a", "10.99.1.5", "prod", "web"}, {"b", "10.99.1.6", "prod", "db"}, {"c", "10.99.1.7", "dev", "web"},
	} {
		pns, _ := n.addPod(t, spec.name, spec.ip+"/24")
		p := &policytest.Pod{Pod: oracle.Pod{Namespace: spec.ns, Name: spec.name, Labels: map[string]string{"app": spec.app},
			IP: netip.MustParseAddr(spec.ip)}, NS: pns}
		policytest.Serve(t, p)
		pods = append(pods, p)
	}
	var podList []oracle.Pod
	for _, p := range pods {
		podList = append(podList, p.Pod)
	}
	w := policytest.Matrix(podList)
	n.do(t, func() error {
		return n.dp.SetPolicy(ctx, datapath.Policy{Pipeline: policy.Compile(w, podList).Pipeline(), ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}})
	})
	policytest.ProbeMatrix(t, w, pods)
	before := n.snapshot(t)
	n.restartDriver(t)
	after := n.snapshot(t)
	if len(before.flows) != len(after.flows) {
		t.Errorf("flow count changed: %d -> %d", len(before.flows), len(after.flows))
	}
	for f := range before.flows {
		if _, ok := after.flows[f]; !ok {
			t.Errorf("flow replaced: %s", f)
		}
	}
	policytest.ProbeMatrix(t, w, pods)
	if got := policytest.Probe(pods[2], pods[0].IP, corev1.ProtocolTCP, 8080); got != fabricv1.ActionReject {
		t.Errorf("c → a:8080 after the restart: %s, want Reject", got)
	}
}

// Open vSwitch restarting under a running agent comes back with an empty flow table; the
// driver notices its OpenFlow connection break and restores the whole table, policy
// included, without a new Init.
func TestFlowsComeBackAfterTheSwitchRestarts(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	a, _ := n.addPod(t, "a", "10.99.1.5/24")
	bNS, _ := n.addPod(t, "b", "10.99.1.6/24")
	b := &policytest.Pod{Pod: oracle.Pod{Namespace: "prod", Name: "b", IP: netip.MustParseAddr("10.99.1.6"), Labels: map[string]string{"app": "db"}}, NS: bNS}
	policytest.Serve(t, b)
	aPod := &policytest.Pod{Pod: oracle.Pod{Namespace: "prod", Name: "a", IP: netip.MustParseAddr("10.99.1.5"), Labels: map[string]string{"app": "web"}}, NS: a}
	w := &oracle.World{Tiers: []fabricv1.Tier{{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}}},
		Pods: []oracle.Pod{aPod.Pod, b.Pod},
		Policies: []fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: fabricv1.FabricPolicySpec{Tier: "application", Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{{PodSelector: policytest.LabelSel("app", "db")}},
			Ingress:   []fabricv1.PolicyRule{{Name: "no-8080", Action: fabricv1.ActionDrop, Ports: []fabricv1.PolicyPort{policytest.TCPPort(8080)}}}}}}}
	n.do(t, func() error {
		return n.dp.SetPolicy(ctx, datapath.Policy{Pipeline: policy.Compile(w, w.Pods).Pipeline()})
	})
	before := len(n.snapshot(t).flows)

	n.ovs.Stop()
	inst, err := ovsrun.Start(ctx, n.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Stop)
	count := func() int { // -1 while the switch is not answering
		out, err := exec.Command("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "unix:"+n.run+"/"+ovs.IntegrationBridge+".mgmt").Output()
		if err != nil {
			return -1
		}
		return strings.Count(string(out), "actions=")
	}
	deadline := time.Now().Add(20 * time.Second)
	for count() != before {
		if time.Now().After(deadline) {
			n.diagnose(t)
			t.Fatalf("after 20 s the table has %d flows, before the restart %d", count(), before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := a.PingUntil("10.99.1.6", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := policytest.Probe(aPod, b.IP, corev1.ProtocolTCP, 80); got != fabricv1.ActionAllow {
		t.Errorf("a → b:80 %s after the restart, want Allow", got)
	}
	if got := policytest.Probe(aPod, b.IP, corev1.ProtocolTCP, 8080); got != fabricv1.ActionDrop {
		t.Errorf("a → b:8080 %s after the restart, want Drop", got)
	}
}
