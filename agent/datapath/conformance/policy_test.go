package conformance_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy"
	"github.com/weft-net/weft/agent/policy/oracle"
	"github.com/weft-net/weft/agent/policy/policytest"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
)

var serviceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}

// setPolicy compiles the world for the node's pods and enforces it.
func setPolicy(t testing.TB, n *node, w *oracle.World, pods []*policytest.Pod, on map[*policytest.Pod]*node) {
	t.Helper()
	var mine []oracle.Pod
	for _, p := range pods {
		if on[p] == n {
			mine = append(mine, p.Pod)
		}
	}
	pl := policy.Compile(w, mine).Pipeline()
	n.do(t, func() error {
		return n.dp.SetPolicy(context.Background(), datapath.Policy{Pipeline: pl, ServiceCIDRs: serviceCIDRs})
	})
}

// TestPolicyProbeMatrix: every driver enforces compiled policy exactly as the reference
// evaluator decides it — a probe matrix over two nodes (every action, Pass, NetworkPolicy
// isolation, baseline, egress and ingress, same node and across nodes, a Service translated
// by the node's kernel); logged rules are reported; policy changes keep established
// connections; a restarted driver enforces the policy it had.
func TestPolicyProbeMatrix(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) { policyMatrix(t, d) })
	}
}

func policyMatrix(t *testing.T, d driver) {
	var events []datapath.PolicyEvent
	var evMu sync.Mutex
	n1, n2 := twoNodes(t, d)
	for _, n := range []*node{n1, n2} {
		n.opts.OnPolicyEvent = func(e datapath.PolicyEvent) { evMu.Lock(); events = append(events, e); evMu.Unlock() }
		n.restart(t) // keeps the remote nodes it had
	}
	var pods []*policytest.Pod
	on := map[*policytest.Pod]*node{}
	for _, spec := range []struct {
		n                 *node
		name, ip, ns, app string
	}{
		{n1, "a", "10.99.1.5", "prod", "web"}, {n1, "b", "10.99.1.6", "prod", "db"},
		{n2, "c", "10.99.2.5", "dev", "web"}, {n2, "d", "10.99.2.6", "prod", "cache"},
	} {
		pns, _ := spec.n.addPod(t, spec.name, spec.ip+"/24")
		p := &policytest.Pod{Pod: oracle.Pod{Namespace: spec.ns, Name: spec.name, Labels: map[string]string{"app": spec.app},
			IP: netip.MustParseAddr(spec.ip)}, NS: pns}
		policytest.Serve(t, p)
		pods = append(pods, p)
		on[p] = spec.n
	}
	var podList []oracle.Pod
	for _, p := range pods {
		podList = append(podList, p.Pod)
	}
	// A Service on n1 the kernel translates to d (on n2, port 8080) and one to b (n1, 80).
	nat := `table ip svc {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.50 tcp dport 80 dnat to 10.99.2.6:8080
    ip daddr 10.96.0.51 tcp dport 80 dnat to 10.99.1.6:80
  }
}
`
	if out, err := n1.ns.RunStdin(nat, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	// The userspace datapath drops a tunnel's first packet while it resolves the other node.
	for _, p := range pods {
		for _, q := range pods {
			if p != q {
				if err := p.NS.PingUntil(q.IP.String(), 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	open := &oracle.World{Pods: podList}
	if checked, denied := policytest.ProbeMatrix(t, open, pods); denied != 0 || t.Failed() {
		t.Fatalf("without policy all %d probes should pass", checked)
	}

	echo := func(c net.Conn) error { return netnstest.Echo(c, 2*time.Second) }
	w := policytest.Matrix(podList)
	for _, n := range []*node{n1, n2} {
		setPolicy(t, n, w, pods, on)
	}
	// A connection the policy allows (web → cache on 8080), kept across changes.
	long, err := pods[0].NS.Dial("10.99.2.6:8080", 2*time.Second) // a → d
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	checked, denied := policytest.ProbeMatrix(t, w, pods)
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

	t.Run("Services are decided after the kernel's translation", func(t *testing.T) {
		// a (web) → Service → d:8080 (the cache's NetworkPolicy admits web); b (db) →
		// Service → d:8080 is dropped (isolated); c is on n2, where the Service is not.
		a, b := pods[0], pods[1]
		for _, c := range []struct {
			from *policytest.Pod
			want fabricv1.PolicyAction
		}{{a, fabricv1.ActionAllow}, {b, fabricv1.ActionDrop}} {
			want := w.Evaluate(oracle.Conn{Src: c.from.IP, Dst: pods[3].IP, Protocol: corev1.ProtocolTCP, Port: 8080}).Action
			if want != c.want {
				t.Fatalf("the test's world says %s → d:8080 %s, the test expects %s", c.from.Name, want, c.want)
			}
			if got := policytest.Probe(c.from, netip.MustParseAddr("10.96.0.50"), corev1.ProtocolTCP, 80); got != want {
				t.Errorf("%s → Service → d:8080: %s, want %s", c.from.Name, got, want)
			}
		}
		// a → Service → b:80 on the same node: db takes web on 80.
		if got := policytest.Probe(a, netip.MustParseAddr("10.96.0.51"), corev1.ProtocolTCP, 80); got != fabricv1.ActionAllow {
			t.Errorf("a → Service → b:80: %s, want Allow", got)
		}
	})

	t.Run("the node reaches isolated pods", func(t *testing.T) {
		if err := n2.ns.Ping("10.99.2.6", 2); err != nil {
			t.Error(err)
		}
	})

	t.Run("logged rules are reported", func(t *testing.T) {
		deadline := time.Now().Add(2 * time.Second)
		for {
			evMu.Lock()
			var lines []string
			for _, e := range events {
				lines = append(lines, e.String())
			}
			evMu.Unlock()
			all := strings.Join(lines, "\n")
			var missing []string
			for _, want := range []string{
				"Reject Ingress securityops/dev-to-prod reject-8080 10.99.2.5:",
				"Drop Ingress application/db rest 10.99.1.5:",
			} {
				if !strings.Contains(all, want) {
					missing = append(missing, want)
				}
			}
			if len(missing) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no events %q in:\n%s", missing, all)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("rules count what they decide", func(t *testing.T) {
		ruleCounts(t, w, pods, n1, n2)
	})

	t.Run("established allowed connections survive a policy that denies them", func(t *testing.T) {
		if err := echo(long); err != nil {
			t.Fatalf("a → d before the change: %v", err)
		}
		strict := policytest.Matrix(podList)
		strict.NetworkPolicies[0].Spec.Ingress = nil // cache takes nothing now
		for _, n := range []*node{n1, n2} {
			setPolicy(t, n, strict, pods, on)
		}
		if err := echo(long); err != nil {
			t.Errorf("the established connection a → d broke: %v", err)
		}
		if got := policytest.Probe(pods[0], pods[3].IP, corev1.ProtocolTCP, 8080); got != fabricv1.ActionDrop {
			t.Errorf("a new connection a → d:8080: %s, want Drop", got)
		}
		policytest.ProbeMatrix(t, strict, pods)
		for _, n := range []*node{n1, n2} {
			setPolicy(t, n, w, pods, on)
		}
	})

	t.Run("a restarted driver enforces the policy it had", func(t *testing.T) {
		before := readRuleCounts(t, n1, n2)
		n1.restart(t)
		n2.restart(t)
		policytest.ProbeMatrix(t, w, pods)
		// And its rules' counts went on from where they were.
		after := readRuleCounts(t, n1, n2)
		for r, n := range before {
			if after[r] < n {
				t.Errorf("%s %s/%s %s counted %d before the restart, %d after", r.Direction, r.Tier, r.Policy, r.Rule, n, after[r])
			}
		}
	})
}

// readRuleCounts is what the nodes' rules decided, added up by rule.
func readRuleCounts(t *testing.T, nodes ...*node) map[datapath.RuleInfo]uint64 {
	t.Helper()
	out := map[datapath.RuleInfo]uint64{}
	for _, n := range nodes {
		var got []datapath.RuleCount
		n.do(t, func() (err error) { got, err = n.dp.RuleCounts(context.Background()); return err })
		for _, c := range got {
			if c.Rule.Action == fabricv1.ActionPass {
				t.Errorf("%s counts a Pass rule, which decides nothing: %+v", n.name, c.Rule)
			}
			out[c.Rule] += c.Packets
		}
	}
	return out
}

// ruleCounts: one connection at a time, each refused, dropped or allowed as the oracle
// says, and the rule the oracle names counts exactly its one deciding packet (the SYN; a
// refused or dropped client does not retransmit within the probe's 800 ms).
func ruleCounts(t *testing.T, w *oracle.World, pods []*policytest.Pod, nodes ...*node) {
	named := func(r datapath.RuleInfo, v oracle.Verdict) bool {
		if r.Action != v.Action || r.Direction != string(v.Direction) {
			return false
		}
		if v.Layer == oracle.LayerFabricPolicy {
			return r.Tier == v.Tier && r.Policy == v.Policy && r.Rule == v.Rule
		}
		return r.Tier == "" // NetworkPolicy: an allowing rule, or isolation
	}
	var before map[datapath.RuleInfo]uint64
	for _, c := range []struct{ from, to int }{{2, 0}, {1, 3}, {0, 3}, {2, 1}} {
		src, dst := pods[c.from], pods[c.to]
		v := w.Evaluate(oracle.Conn{Src: src.IP, Dst: dst.IP, Protocol: corev1.ProtocolTCP, Port: 8080})
		if v.Layer == oracle.LayerDefault {
			t.Fatalf("the test's world decides %s → %s:8080 by no rule", src.Name, dst.Name)
		}
		before = readRuleCounts(t, nodes...)
		if got := policytest.Probe(src, dst.IP, corev1.ProtocolTCP, 8080); got != v.Action {
			t.Fatalf("%s → %s:8080: %s, want %s", src.Name, dst.Name, got, v.Action)
		}
		// Userspace Open vSwitch credits cached flows' packets to the tables within a second.
		var rose []string
		deadline := time.Now().Add(3 * time.Second)
		for {
			after := readRuleCounts(t, nodes...)
			rose = rose[:0]
			counted := false
			for r, n := range after {
				if n < before[r] {
					t.Fatalf("%s %s/%s %s went from %d to %d", r.Direction, r.Tier, r.Policy, r.Rule, before[r], n)
				}
				if n == before[r] {
					continue
				}
				rose = append(rose, fmt.Sprintf("%s %s %s/%s %s +%d", r.Action, r.Direction, r.Tier, r.Policy, r.Rule, n-before[r]))
				if named(r, v) && n-before[r] == 1 {
					counted = true
				}
			}
			if counted {
				t.Logf("%s → %s:8080 %s: %s", src.Name, dst.Name, v.Action, strings.Join(rose, "; "))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s → %s:8080 was %s by %s %s/%s %s (%s); the counts that rose: %v", src.Name, dst.Name, v.Action,
					v.Direction, v.Tier, v.Policy, v.Rule, v.Layer, rose)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestPolicyLearnsFQDNAddressesFromDNSAnswers: an FQDN rule allows the addresses DNS answers
// give its names, from the moment the pod reads the answer — every driver holds answers to
// pods with FQDN rules until the agent has applied the policy with the new addresses. Only
// answers from a trusted resolver to a query the pod sent it are held: a packet from port 53
// is otherwise policed like any other, and teaches nothing.
func TestPolicyLearnsFQDNAddressesFromDNSAnswers(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) { learnsFQDN(t, d) })
	}
}

// serveDNS answers every A question in ns at addr:53 with to, and returns its socket (which
// can send from port 53 too).
func serveDNS(t *testing.T, ns *netnstest.Netns, addr string, to netip.Addr) net.PacketConn {
	t.Helper()
	pc, err := ns.ListenUDP(addr + ":53")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		_ = w.WriteMsg(answerTo(q, q.Question[0].Name, to))
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc
}

// answerTo is a DNS answer giving name the address a (q nil: an answer to no query).
func answerTo(q *dns.Msg, name string, a netip.Addr) *dns.Msg {
	if q == nil {
		q = new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a.AsSlice()})
	return m
}

// resolve asks server for name from ns.
func resolve(ns *netnstest.Netns, server, name string) (*dns.Msg, error) {
	var answer *dns.Msg
	err := ns.Do(func() (err error) {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		answer, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(q, server+":53")
		return err
	})
	return answer, err
}

func learnsFQDN(t *testing.T, d driver) {
	ctx := context.Background()
	n1, n2 := twoNodes(t, d)
	clientNS, _ := n1.addPod(t, "a", "10.99.1.5/24")
	dnsNS, _ := n2.addPod(t, "dnsd", "10.99.2.5/24")
	targetNS, _ := n2.addPod(t, "target", "10.99.2.7/24")
	evilNS, _ := n2.addPod(t, "evil", "10.99.2.8/24")
	target, evil := netip.MustParseAddr("10.99.2.7"), netip.MustParseAddr("10.99.2.8")
	targetNS.ServeEcho(t, target, []int{80, 443}, nil)
	evilNS.ServeEcho(t, evil, []int{443}, nil)

	// The trusted resolver says *.example.test is the target; a resolver in the target pod,
	// which the pod may ask but which is not trusted, says it is the evil pod.
	trusted := serveDNS(t, dnsNS, "10.99.2.5", target)
	untrusted := serveDNS(t, targetNS, "10.99.2.7", evil)
	for _, ip := range []string{"10.99.2.5", "10.99.2.7", "10.99.2.8"} {
		if err := clientNS.PingUntil(ip, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	w := &oracle.World{Tiers: []fabricv1.Tier{{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}}},
		Pods: []oracle.Pod{{Namespace: "prod", Name: "a", IP: netip.MustParseAddr("10.99.1.5"), Labels: map[string]string{"app": "client"}}},
		Policies: []fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "apis"}, Spec: fabricv1.FabricPolicySpec{Tier: "application", Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{{PodSelector: policytest.LabelSel("app", "client")}},
			Egress: []fabricv1.PolicyRule{
				{Name: "dns", Action: fabricv1.ActionAllow, Ports: []fabricv1.PolicyPort{policytest.UDPPort(53)}},
				{Name: "example", Action: fabricv1.ActionAllow, To: []fabricv1.PolicyPeer{{FQDN: "*.example.test"}}, Ports: []fabricv1.PolicyPort{policytest.TCPPort(443)}},
				{Name: "rest", Action: fabricv1.ActionDrop},
			},
			// Nothing comes in but replies.
			Ingress: []fabricv1.PolicyRule{{Name: "none", Action: fabricv1.ActionDrop}},
		}}},
		Resolved: map[netip.Addr]map[string][]netip.Addr{}}
	var mu sync.Mutex
	var learnt []datapath.DNSAnswer
	apply := func() error {
		return n1.dp.SetPolicy(ctx, datapath.Policy{Pipeline: policy.Compile(w, w.Pods).Pipeline(),
			DNSPods: []netip.Addr{w.Pods[0].IP}, DNSServers: []netip.Addr{netip.MustParseAddr("10.99.2.5")}})
	}
	// What the agent's policy sync does with an answer, reduced: learn, recompile, apply.
	n1.opts.OnDNSAnswer = func(ans datapath.DNSAnswer) {
		mu.Lock()
		defer mu.Unlock()
		if w.Resolved[ans.Pod] == nil {
			w.Resolved[ans.Pod] = map[string][]netip.Addr{}
		}
		for _, r := range ans.Records {
			w.Resolved[ans.Pod][r.Name] = append(w.Resolved[ans.Pod][r.Name], r.Addr)
		}
		learnt = append(learnt, ans)
		if err := n1.ns.Do(apply); err != nil {
			t.Error(err)
		}
	}
	learntNow := func() []datapath.DNSAnswer {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(learnt)
	}
	n1.restart(t)
	n1.do(t, apply)

	a := &policytest.Pod{Pod: w.Pods[0], NS: clientNS}
	if got := policytest.Probe(a, target, corev1.ProtocolTCP, 443); got != fabricv1.ActionDrop {
		t.Fatalf("before resolving: a → target:443 %s, want Drop", got)
	}

	// Answers that must teach nothing, and packets from port 53 the ingress policy drops.
	listener, err := clientNS.ListenUDP("10.99.1.5:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	client := &net.UDPAddr{IP: net.IPv4(10, 99, 1, 5), Port: 5353}
	forge := func(from net.PacketConn, name string, to netip.Addr) {
		b, err := answerTo(nil, name, to).Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := from.WriteTo(b, client); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("an answer from a pod that is no trusted resolver is dropped, and teaches nothing", func(t *testing.T) {
		forge(untrusted, "forged.example.test.", evil)
		if got := netnstest.ReceiveUDP(listener, 1, time.Second); len(got) != 0 {
			t.Errorf("a packet from port 53 reached the pod past its ingress policy (from %v)", got)
		}
	})
	t.Run("an answer from the trusted resolver to no query is dropped, and teaches nothing", func(t *testing.T) {
		forge(trusted, "unasked.example.test.", evil)
		if got := netnstest.ReceiveUDP(listener, 1, time.Second); len(got) != 0 {
			t.Errorf("an unsolicited answer reached the pod past its ingress policy (from %v)", got)
		}
	})
	t.Run("an untrusted resolver the pod asks answers it, and teaches nothing", func(t *testing.T) {
		answer, err := resolve(clientNS, "10.99.2.7", "api.example.test.")
		if err != nil || len(answer.Answer) != 1 {
			t.Fatalf("asking the untrusted resolver: %v %v", err, answer)
		}
	})
	t.Run("a burst of 10,000 forged answers teaches nothing", func(t *testing.T) {
		for i := range 10000 {
			forge(untrusted, fmt.Sprintf("n%d.example.test.", i), evil)
		}
	})
	if got := learntNow(); len(got) != 0 {
		t.Errorf("learnt from %d answers no trusted resolver gave to a query, the first %v", len(got), got[0])
	}
	if got := policytest.Probe(a, evil, corev1.ProtocolTCP, 443); got != fabricv1.ActionDrop {
		t.Errorf("after the forged answers: a → evil:443 %s, want Drop", got)
	}

	// Resolve from the pod through the trusted resolver, then connect at once.
	start := time.Now()
	answer, err := resolve(clientNS, "10.99.2.5", "api.example.test.")
	if err != nil || len(answer.Answer) != 1 {
		t.Fatalf("resolving api.example.test: %v %v", err, answer)
	}
	t.Logf("the trusted answer arrived %v after the question (held while the policy was applied)", time.Since(start).Round(time.Millisecond))
	if got := policytest.Probe(a, target, corev1.ProtocolTCP, 443); got != fabricv1.ActionAllow {
		t.Errorf("right after the answer: a → target:443 %s, want Allow", got)
	}
	if got := policytest.Probe(a, target, corev1.ProtocolTCP, 80); got != fabricv1.ActionDrop {
		t.Errorf("a → target:80 %s, want Drop (the FQDN rule allows 443)", got)
	}
	if got := policytest.Probe(a, evil, corev1.ProtocolTCP, 443); got != fabricv1.ActionDrop {
		t.Errorf("a → evil:443 %s, want Drop (no trusted answer named it)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(learnt) != 1 || len(w.Resolved[w.Pods[0].IP]["api.example.test"]) != 1 {
		t.Errorf("answers learnt %v, resolved %v", learnt, w.Resolved)
	}
}
