package ovs_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/agent/policy"
	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/ovsrun"
)

// policyPod is a pod of the policy tests: its namespace, its labels and servers on TCP 80
// and 8080 and UDP 53 (an echo).
type policyPod struct {
	oracle.Pod
	ns   *netnstest.Netns
	node *node
}

func serve(t *testing.T, p *policyPod) {
	t.Helper()
	p.ns.ServeEcho(t, p.IP, []int{80, 8080}, []int{53})
}

// probe tries one connection and says what the datapath did: allowed (connected or
// echoed), rejected (refused or unreachable at once), or dropped (no answer).
func probe(from *policyPod, to netip.Addr, proto corev1.Protocol, port int32) fabricv1.PolicyAction {
	switch from.ns.Probe(strings.ToLower(string(proto)), netip.AddrPortFrom(to, uint16(port)), 800*time.Millisecond) {
	case netnstest.Connected:
		return fabricv1.ActionAllow
	case netnstest.Refused:
		return fabricv1.ActionReject
	}
	return fabricv1.ActionDrop
}

func labelSel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func tcpPort(p int32) fabricv1.PolicyPort {
	return fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromInt32(p))}
}

func udpPort(p int32) fabricv1.PolicyPort {
	return fabricv1.PolicyPort{Protocol: corev1.ProtocolUDP, Port: ptr.To(intstr.FromInt32(p))}
}

// policyWorld: every action, Pass, a NetworkPolicy that isolates, a baseline rule the
// isolation hides, egress and ingress, logging.
func policyWorld(pods []oracle.Pod) *oracle.World {
	tiers := []fabricv1.Tier{
		{ObjectMeta: metav1.ObjectMeta{Name: "securityops"}, Spec: fabricv1.TierSpec{Priority: 100}},
		{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}},
		{ObjectMeta: metav1.ObjectMeta{Name: "baseline"}, Spec: fabricv1.TierSpec{Priority: 253}},
	}
	pol := func(name, tier string, applied fabricv1.PolicyTarget, in, eg []fabricv1.PolicyRule) fabricv1.FabricPolicy {
		return fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricPolicySpec{Tier: tier, Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{applied}, Ingress: in, Egress: eg}}
	}
	fromDev := []fabricv1.PolicyPeer{{NamespaceSelector: labelSel("env", "dev")}}
	return &oracle.World{Tiers: tiers, Pods: pods,
		Namespaces: map[string]map[string]string{"prod": {"env": "prod"}, "dev": {"env": "dev"}},
		Policies: []fabricv1.FabricPolicy{
			// Dev may not reach prod's 8080 (rejected); anything else from dev is passed on.
			pol("dev-to-prod", "securityops", fabricv1.PolicyTarget{NamespaceSelector: labelSel("env", "prod")}, []fabricv1.PolicyRule{
				{Name: "reject-8080", Action: fabricv1.ActionReject, From: fromDev, Ports: []fabricv1.PolicyPort{tcpPort(8080)}, EnableLogging: true},
				{Name: "pass-rest", Action: fabricv1.ActionPass, From: fromDev},
			}, nil),
			// The database takes web on 80 and nothing else.
			pol("db", "application", fabricv1.PolicyTarget{PodSelector: labelSel("app", "db")}, []fabricv1.PolicyRule{
				{Name: "web", Action: fabricv1.ActionAllow, From: []fabricv1.PolicyPeer{{PodSelector: labelSel("app", "web")}}, Ports: []fabricv1.PolicyPort{tcpPort(80)}},
				{Name: "rest", Action: fabricv1.ActionDrop, EnableLogging: true},
			}, nil),
			// Web in dev may not send UDP to the database (rejected at the source).
			pol("dev-web-egress", "securityops", fabricv1.PolicyTarget{PodSelector: labelSel("app", "web"), NamespaceSelector: labelSel("env", "dev")}, nil,
				[]fabricv1.PolicyRule{{Name: "no-udp-to-db", Action: fabricv1.ActionReject, To: []fabricv1.PolicyPeer{{PodSelector: labelSel("app", "db")}},
					Ports: []fabricv1.PolicyPort{udpPort(53)}}}),
			// Baseline: nothing reaches 8080 unless a tier before allowed it (hidden for
			// pods a NetworkPolicy isolates).
			pol("baseline", "baseline", fabricv1.PolicyTarget{PodSelector: &metav1.LabelSelector{}}, []fabricv1.PolicyRule{
				{Name: "no-8080", Action: fabricv1.ActionDrop, Ports: []fabricv1.PolicyPort{tcpPort(8080)}},
			}, nil),
		},
		NetworkPolicies: []networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "cache"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *labelSel("app", "cache"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: labelSel("app", "web"), NamespaceSelector: &metav1.LabelSelector{}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(8080))}, {Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(intstr.FromInt32(53))}}}}},
		}},
	}
}

func setPolicy(t *testing.T, n *node, w *oracle.World, pods []*policyPod) {
	t.Helper()
	var mine []oracle.Pod
	for _, p := range pods {
		if p.node == n {
			mine = append(mine, p.Pod)
		}
	}
	pl := policy.Compile(w, mine).Pipeline()
	n.do(t, func() error {
		return n.dp.SetPolicy(context.Background(), datapath.Policy{Pipeline: pl, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}})
	})
}

// probeMatrix probes every pair of pods on TCP 80, TCP 8080 and UDP 53, in parallel, and
// compares with the oracle.
func probeMatrix(t *testing.T, w *oracle.World, pods []*policyPod) (checked, denied int) {
	t.Helper()
	type result struct {
		what      string
		got, want fabricv1.PolicyAction
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for _, src := range pods {
		for _, dst := range pods {
			if src == dst {
				continue
			}
			for _, pp := range []struct {
				proto corev1.Protocol
				port  int32
			}{{corev1.ProtocolTCP, 80}, {corev1.ProtocolTCP, 8080}, {corev1.ProtocolUDP, 53}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					want := w.Evaluate(oracle.Conn{Src: src.IP, Dst: dst.IP, Protocol: pp.proto, Port: pp.port})
					got := probe(src, dst.IP, pp.proto, pp.port)
					mu.Lock()
					results = append(results, result{fmt.Sprintf("%s → %s %s/%d (%s)", src.Name, dst.Name, pp.proto, pp.port, want.Rule), got, want.Action})
					mu.Unlock()
				}()
			}
		}
	}
	wg.Wait()
	var wrong []string
	byAction := map[fabricv1.PolicyAction]int{}
	defer func() { t.Logf("probe matrix: %v", byAction) }()
	for _, r := range results {
		byAction[r.got]++
		if r.got != r.want {
			wrong = append(wrong, fmt.Sprintf("%s: datapath %s, oracle %s", r.what, r.got, r.want))
		}
		if r.want != fabricv1.ActionAllow {
			denied++
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d probes disagree with the oracle:\n%s", len(wrong), len(results), strings.Join(wrong, "\n"))
	}
	return len(results), denied
}

// The OVS driver enforces compiled policy exactly as the reference evaluator decides it:
// a probe matrix over two nodes (every action, Pass, NetworkPolicy isolation, baseline,
// egress and ingress, same node and across the tunnel); logged rules are reported; policy
// changes keep established connections; a restarted driver enforces the saved policy with
// no flow replaced.
func TestPolicyProbeMatrix(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	var events []datapath.PolicyEvent
	var evMu sync.Mutex
	n1 := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	n2 := newNode(t, sw, "n2", "172.29.0.12", "10.99.2.0/24", "geneve")
	for _, n := range []*node{n1, n2} {
		n.withPolicyEvents(t, func(e datapath.PolicyEvent) { evMu.Lock(); events = append(events, e); evMu.Unlock() })
	}
	for _, n := range []*node{n1, n2} {
		n.do(t, func() error { return n.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n1.remote(), n2.remote()}) })
	}
	var pods []*policyPod
	for _, spec := range []struct {
		n                 *node
		name, ip, ns, app string
	}{
		{n1, "a", "10.99.1.5", "prod", "web"}, {n1, "b", "10.99.1.6", "prod", "db"},
		{n2, "c", "10.99.2.5", "dev", "web"}, {n2, "d", "10.99.2.6", "prod", "cache"},
	} {
		pns, _ := spec.n.addPod(t, spec.name, spec.ip+"/24")
		p := &policyPod{Pod: oracle.Pod{Namespace: spec.ns, Name: spec.name, Labels: map[string]string{"app": spec.app},
			IP: netip.MustParseAddr(spec.ip)}, ns: pns, node: spec.n}
		serve(t, p)
		pods = append(pods, p)
	}
	var podList []oracle.Pod
	for _, p := range pods {
		podList = append(podList, p.Pod)
	}
	// The userspace datapath drops a tunnel's first packet while it resolves the other node.
	for _, p := range pods {
		for _, q := range pods {
			if p != q {
				if err := p.ns.PingUntil(q.IP.String(), 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	open := &oracle.World{Pods: podList}
	if checked, denied := probeMatrix(t, open, pods); denied != 0 || t.Failed() {
		t.Fatalf("without policy all %d probes should pass", checked)
	}

	echo := func(c net.Conn) error { return netnstest.Echo(c, 2*time.Second) }
	w := policyWorld(podList)
	for _, n := range []*node{n1, n2} {
		setPolicy(t, n, w, pods)
	}
	// A connection the policy allows (web → cache on 8080), kept across changes.
	long, err := pods[0].ns.Dial("10.99.2.6:8080", 2*time.Second) // a → d
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	checked, denied := probeMatrix(t, w, pods)
	t.Logf("%d probes agree with the oracle (%d denied)", checked, denied)
	if denied == 0 || denied == checked {
		t.Fatalf("the policy should both allow and deny (%d of %d denied)", denied, checked)
	}
	for _, c := range []struct {
		from, to int
		proto    corev1.Protocol
		port     int32
	}{{2, 0, corev1.ProtocolTCP, 8080}, {2, 1, corev1.ProtocolUDP, 53}} {
		if w.Evaluate(oracle.Conn{Src: pods[c.from].IP, Dst: pods[c.to].IP, Protocol: c.proto, Port: c.port}).Action != fabricv1.ActionReject {
			t.Errorf("the test's world should reject %s → %s %s/%d", pods[c.from].Name, pods[c.to].Name, c.proto, c.port)
		}
	}

	t.Run("node reaches isolated pods", func(t *testing.T) {
		if err := n2.ns.Ping("10.99.2.6", 2); err != nil {
			t.Error(err)
		}
	})

	t.Run("logged rules are reported", func(t *testing.T) {
		evMu.Lock()
		defer evMu.Unlock()
		var lines []string
		for _, e := range events {
			lines = append(lines, e.String())
		}
		all := strings.Join(lines, "\n")
		for _, want := range []string{
			"Reject Ingress securityops/dev-to-prod reject-8080 10.99.2.5:",
			"Drop Ingress application/db rest 10.99.1.5:",
		} {
			if !strings.Contains(all, want) {
				t.Errorf("no event %q in:\n%s", want, all)
			}
		}
	})

	t.Run("established allowed connections survive a policy that denies them", func(t *testing.T) {
		if err := echo(long); err != nil {
			t.Fatalf("a → d before the change: %v", err)
		}
		strict := policyWorld(podList)
		strict.NetworkPolicies[0].Spec.Ingress = nil // cache takes nothing now
		for _, n := range []*node{n1, n2} {
			setPolicy(t, n, strict, pods)
		}
		if err := echo(long); err != nil {
			t.Errorf("the established connection a → d broke: %v", err)
		}
		if got := probe(pods[0], pods[3].IP, corev1.ProtocolTCP, 8080); got != fabricv1.ActionDrop {
			t.Errorf("a new connection a → d:8080: %s, want Drop", got)
		}
		probeMatrix(t, strict, pods)
		for _, n := range []*node{n1, n2} {
			setPolicy(t, n, w, pods)
		}
	})

	t.Run("a restarted driver enforces the saved policy without replacing a flow", func(t *testing.T) {
		before := n1.snapshot(t)
		n1.restartDriver(t)
		after := n1.snapshot(t)
		if len(before.flows) != len(after.flows) {
			t.Errorf("flow count changed: %d -> %d", len(before.flows), len(after.flows))
		}
		for f := range before.flows {
			if _, ok := after.flows[f]; !ok {
				t.Errorf("flow replaced: %s", f)
			}
		}
		probeMatrix(t, w, pods)
	})
	_ = ovs.IntegrationBridge
}

// An FQDN rule allows the addresses DNS answers give its names, from the moment the pod
// reads the answer: the datapath holds answers to pods with FQDN rules until the agent has
// applied the policy with the new addresses.
func TestPolicyLearnsFQDNAddressesFromDNSAnswers(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n1 := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	n2 := newNode(t, sw, "n2", "172.29.0.12", "10.99.2.0/24", "geneve")
	for _, n := range []*node{n1, n2} {
		n.do(t, func() error { return n.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n1.remote(), n2.remote()}) })
	}
	clientNS, _ := n1.addPod(t, "a", "10.99.1.5/24")
	dnsNS, _ := n2.addPod(t, "dnsd", "10.99.2.5/24")
	targetNS, _ := n2.addPod(t, "target", "10.99.2.7/24")
	target := netip.MustParseAddr("10.99.2.7")
	targetNS.ServeEcho(t, target, []int{80, 443}, nil)

	// The DNS server: api.example.test is the target.
	pc, err := dnsNS.ListenUDP("10.99.2.5:53")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Name == "api.example.test." {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "api.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: target.AsSlice()})
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	for _, ns := range []*netnstest.Netns{clientNS} {
		for _, ip := range []string{"10.99.2.5", "10.99.2.7"} {
			if err := ns.PingUntil(ip, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}

	w := &oracle.World{Tiers: []fabricv1.Tier{{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}}},
		Pods: []oracle.Pod{{Namespace: "prod", Name: "a", IP: netip.MustParseAddr("10.99.1.5"), Labels: map[string]string{"app": "client"}}},
		Policies: []fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "apis"}, Spec: fabricv1.FabricPolicySpec{Tier: "application", Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{{PodSelector: labelSel("app", "client")}},
			Egress: []fabricv1.PolicyRule{
				{Name: "dns", Action: fabricv1.ActionAllow, Ports: []fabricv1.PolicyPort{udpPort(53)}},
				{Name: "example", Action: fabricv1.ActionAllow, To: []fabricv1.PolicyPeer{{FQDN: "*.example.test"}}, Ports: []fabricv1.PolicyPort{tcpPort(443)}},
				{Name: "rest", Action: fabricv1.ActionDrop},
			}}}},
		Resolved: map[string][]netip.Addr{}}
	var mu sync.Mutex
	learnt := 0
	apply := func() error {
		return n1.dp.SetPolicy(ctx, datapath.Policy{Pipeline: policy.Compile(w, w.Pods).Pipeline(), DNSPods: []netip.Addr{w.Pods[0].IP}})
	}
	// What the agent's policy sync does with an answer, reduced: learn, recompile, apply.
	n1.dpOpts.OnDNSAnswer = func(ans datapath.DNSAnswer) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range ans.Records {
			w.Resolved[r.Name] = append(w.Resolved[r.Name], r.Addr)
		}
		learnt++
		if err := n1.ns.Do(apply); err != nil {
			t.Error(err)
		}
	}
	n1.restartDriver(t)
	n1.do(t, apply)

	a := &policyPod{Pod: w.Pods[0], ns: clientNS}
	if got := probe(a, target, corev1.ProtocolTCP, 443); got != fabricv1.ActionDrop {
		t.Fatalf("before resolving: a → target:443 %s, want Drop", got)
	}
	// Resolve from the pod, then connect at once.
	var answer *dns.Msg
	err = clientNS.Do(func() (err error) {
		q := new(dns.Msg)
		q.SetQuestion("api.example.test.", dns.TypeA)
		answer, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(q, "10.99.2.5:53")
		return err
	})
	if err != nil || len(answer.Answer) != 1 {
		t.Fatalf("resolving api.example.test: %v %v", err, answer)
	}
	if got := probe(a, target, corev1.ProtocolTCP, 443); got != fabricv1.ActionAllow {
		t.Errorf("right after the answer: a → target:443 %s, want Allow", got)
	}
	if got := probe(a, target, corev1.ProtocolTCP, 80); got != fabricv1.ActionDrop {
		t.Errorf("a → target:80 %s, want Drop (the FQDN rule allows 443)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if learnt != 1 || len(w.Resolved["api.example.test"]) != 1 {
		t.Errorf("answers learnt %d, resolved %v", learnt, w.Resolved)
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
	b := &policyPod{Pod: oracle.Pod{Namespace: "prod", Name: "b", IP: netip.MustParseAddr("10.99.1.6"), Labels: map[string]string{"app": "db"}}, ns: bNS}
	serve(t, b)
	aPod := &policyPod{Pod: oracle.Pod{Namespace: "prod", Name: "a", IP: netip.MustParseAddr("10.99.1.5"), Labels: map[string]string{"app": "web"}}, ns: a}
	w := &oracle.World{Tiers: []fabricv1.Tier{{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}}},
		Pods: []oracle.Pod{aPod.Pod, b.Pod},
		Policies: []fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: fabricv1.FabricPolicySpec{Tier: "application", Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{{PodSelector: labelSel("app", "db")}},
			Ingress:   []fabricv1.PolicyRule{{Name: "no-8080", Action: fabricv1.ActionDrop, Ports: []fabricv1.PolicyPort{tcpPort(8080)}}}}}}}
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
	if got := probe(aPod, b.IP, corev1.ProtocolTCP, 80); got != fabricv1.ActionAllow {
		t.Errorf("a → b:80 %s after the restart, want Allow", got)
	}
	if got := probe(aPod, b.IP, corev1.ProtocolTCP, 8080); got != fabricv1.ActionDrop {
		t.Errorf("a → b:8080 %s after the restart, want Drop", got)
	}
}
