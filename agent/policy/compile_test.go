package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// gen builds random worlds from a small vocabulary, so that selectors, ports and addresses
// collide often.
type gen struct{ r *rand.Rand }

var (
	apps    = []string{"web", "db", "cache"}
	envs    = []string{"prod", "dev"}
	actions = []fabricv1.PolicyAction{fabricv1.ActionAllow, fabricv1.ActionDrop, fabricv1.ActionReject, fabricv1.ActionPass}
	tiers   = []fabricv1.Tier{
		{ObjectMeta: metav1.ObjectMeta{Name: "securityops"}, Spec: fabricv1.TierSpec{Priority: 100}},
		{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}},
		{ObjectMeta: metav1.ObjectMeta{Name: "baseline"}, Spec: fabricv1.TierSpec{Priority: 253}},
	}
	ports = []int32{53, 80, 443, 8080}
)

func (g gen) pick(n int) int { return g.r.IntN(n) }

func (g gen) sel(key string, vals []string) *metav1.LabelSelector {
	switch g.pick(4) {
	case 0:
		return nil
	case 1:
		return &metav1.LabelSelector{}
	case 2:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: metav1.LabelSelectorOpNotIn, Values: []string{vals[g.pick(len(vals))]}}}}
	}
	return &metav1.LabelSelector{MatchLabels: map[string]string{key: vals[g.pick(len(vals))]}}
}

func (g gen) port() *intstr.IntOrString {
	switch g.pick(3) {
	case 0:
		return nil
	case 1:
		return ptr.To(intstr.FromString([]string{"http", "dns"}[g.pick(2)]))
	}
	return ptr.To(intstr.FromInt32(ports[g.pick(len(ports))]))
}

func (g gen) fabricPeer() fabricv1.PolicyPeer {
	switch g.pick(5) {
	case 0:
		return fabricv1.PolicyPeer{IPBlock: &fabricv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{[]string{"10.0.1.0/24", "10.0.0.2/32"}[g.pick(2)]}}}
	case 1:
		return fabricv1.PolicyPeer{FQDN: []string{"*.example.com", "api.example.com", "example.com"}[g.pick(3)]}
	case 2:
		return fabricv1.PolicyPeer{Cluster: "west"}
	}
	s := fabricv1.PolicyPeer{PodSelector: g.sel("app", apps), NamespaceSelector: g.sel("env", envs)}
	if s.PodSelector == nil && s.NamespaceSelector == nil {
		s.PodSelector = &metav1.LabelSelector{}
	}
	return s
}

func (g gen) rules(ingress bool) []fabricv1.PolicyRule {
	var out []fabricv1.PolicyRule
	for range g.pick(3) {
		r := fabricv1.PolicyRule{Action: actions[g.pick(len(actions))]}
		for range g.pick(3) {
			p := g.fabricPeer()
			if ingress && p.FQDN != "" {
				continue
			}
			if ingress {
				r.From = append(r.From, p)
			} else {
				r.To = append(r.To, p)
			}
		}
		for range g.pick(3) {
			pp := fabricv1.PolicyPort{Protocol: []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}[g.pick(2)], Port: g.port()}
			if pp.Port != nil && pp.Port.Type == intstr.Int && g.pick(3) == 0 {
				pp.EndPort = ptr.To(pp.Port.IntVal + 400)
			}
			r.Ports = append(r.Ports, pp)
		}
		out = append(out, r)
	}
	return out
}

func (g gen) world(seed int) *oracle.World {
	w := &oracle.World{Tiers: tiers, Namespaces: map[string]map[string]string{"prod": {"env": "prod"}, "dev": {"env": "dev"}},
		Resolved: map[netip.Addr]map[string][]netip.Addr{},
		Clusters: map[string][]netip.Prefix{"west": {netip.MustParsePrefix("10.245.0.0/16")}}}
	for i := range 6 {
		ns := envs[i%2]
		p := oracle.Pod{Namespace: ns, Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": apps[g.pick(len(apps))]},
			IP: netip.AddrFrom4([4]byte{10, 0, byte(i % 3), byte(1 + i)})}
		if g.pick(2) == 0 {
			p.Ports = append(p.Ports, oracle.NamedPort{Name: "http", Protocol: corev1.ProtocolTCP, Port: ports[1+g.pick(3)]})
		}
		if g.pick(2) == 0 {
			p.Ports = append(p.Ports, oracle.NamedPort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53})
		}
		w.Pods = append(w.Pods, p)
		// Each pod was told its own answers: some the same, some not.
		switch g.pick(3) {
		case 0:
			w.Resolved[p.IP] = map[string][]netip.Addr{"api.example.com": {netip.MustParseAddr("192.0.2.20")}, "example.com": {netip.MustParseAddr("192.0.2.30")}}
		case 1:
			w.Resolved[p.IP] = map[string][]netip.Addr{"www.example.com": {netip.MustParseAddr("10.0.0.2")}, "api.example.com": {netip.MustParseAddr("192.0.2.21")}}
		}
	}
	for i := range g.pick(6) {
		w.Policies = append(w.Policies, fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("fp%d", i)},
			Spec: fabricv1.FabricPolicySpec{Tier: tiers[g.pick(len(tiers))].Name, Priority: int32(g.pick(3)),
				AppliedTo: []fabricv1.PolicyTarget{{PodSelector: g.sel("app", apps), NamespaceSelector: g.sel("env", envs)}},
				Ingress:   g.rules(true), Egress: g.rules(false)}})
	}
	for i := range g.pick(3) {
		np := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: envs[g.pick(2)], Name: fmt.Sprintf("np%d", i)}}
		if s := g.sel("app", apps); s != nil {
			np.Spec.PodSelector = *s
		}
		if g.pick(2) == 0 {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}[:1+g.pick(2)]
		}
		for range g.pick(3) {
			var peers []networkingv1.NetworkPolicyPeer
			for range g.pick(3) {
				if g.pick(3) == 0 {
					peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24", Except: []string{"10.0.0.4/30"}}})
				} else {
					peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: g.sel("app", apps), NamespaceSelector: g.sel("env", envs)})
				}
			}
			var nps []networkingv1.NetworkPolicyPort
			for range g.pick(2) {
				nps = append(nps, networkingv1.NetworkPolicyPort{Protocol: ptr.To([]corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}[g.pick(2)]), Port: g.port()})
			}
			if g.pick(2) == 0 {
				np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: nps})
			} else {
				np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: nps})
			}
		}
		w.NetworkPolicies = append(w.NetworkPolicies, np)
	}
	_ = seed
	return w
}

// The compiled program decides every connection exactly as the reference evaluator, over
// random worlds (selectors, named ports, ranges, ipBlock exceptions, FQDNs, clusters, Pass,
// NetworkPolicy isolation) and every pair of endpoints, port and protocol.
func TestCompiledProgramAgreesWithTheOracle(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("192.0.2.30"), netip.MustParseAddr("192.0.2.21"), netip.MustParseAddr("10.245.1.1"), netip.MustParseAddr("10.0.1.200")}
	checked, denied := 0, 0
	for seed := range 300 {
		g := gen{rand.New(rand.NewPCG(uint64(seed), 7))}
		w := g.world(seed)
		prog := Compile(w, nil)
		pipe := prog.Pipeline()
		ends := append([]netip.Addr{}, addrs...)
		for _, p := range w.Pods {
			ends = append(ends, p.IP)
		}
		for _, src := range ends {
			for _, dst := range ends {
				if src == dst {
					continue
				}
				for _, port := range []int32{53, 80, 443, 500, 8080} {
					for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
						c := oracle.Conn{Src: src, Dst: dst, Protocol: proto, Port: port}
						want := w.Evaluate(c)
						got := prog.Decide(c)
						checked++
						if !want.Allowed() {
							denied++
						}
						if got != want.Action {
							t.Fatalf("seed %d: %v → %v %s/%d: compiled %s, oracle %+v", seed, src, dst, proto, port, got, want)
						}
						if got := pipe.Decide(c); got != want.Action {
							t.Fatalf("seed %d: %v → %v %s/%d: pipeline %s, oracle %+v", seed, src, dst, proto, port, got, want)
						}
					}
				}
			}
		}
	}
	t.Logf("%d connections over 300 worlds agree, compiled and as a pipeline (%d denied)", checked, denied)
	if denied == 0 || denied == checked {
		t.Errorf("the random worlds should both allow and deny (%d of %d denied)", denied, checked)
	}
}

func TestBlockMinus(t *testing.T) {
	got := blockMinus("10.0.0.0/16", []string{"10.0.1.0/24", "10.0.0.2/32"})
	for _, c := range []struct {
		addr string
		in   bool
	}{{"10.0.0.1", true}, {"10.0.0.2", false}, {"10.0.0.3", true}, {"10.0.1.7", false}, {"10.0.255.255", true}, {"10.1.0.0", false}} {
		if containsAddr(got, netip.MustParseAddr(c.addr)) != c.in {
			t.Errorf("%s in %v: want %v", c.addr, got, c.in)
		}
	}
}

// Split over two nodes, each enforcing its own pods' pipeline (egress where the source
// lives, ingress where the destination lives), the decision is still the oracle's; and rules
// shared by several pods appear once in a node's pipeline.
func TestNodePipelinesAgreeWithTheOracle(t *testing.T) {
	shared := 0
	for seed := range 300 {
		g := gen{rand.New(rand.NewPCG(uint64(seed), 11))}
		w := g.world(seed)
		var nodes [2][]oracle.Pod
		where := map[netip.Addr]int{}
		for i, p := range w.Pods {
			nodes[i%2] = append(nodes[i%2], p)
			where[p.IP] = i % 2
		}
		var pipes [2]*Pipeline
		for n := range nodes {
			pipes[n] = Compile(w, nodes[n]).Pipeline()
			for _, st := range append(pipes[n].Egress, pipes[n].Ingress...) {
				for _, r := range st.Rules {
					if len(r.AppliedTo) > 1 {
						shared++
					}
				}
			}
		}
		for _, src := range w.Pods {
			for _, dst := range w.Pods {
				for _, port := range []int32{53, 80, 8080} {
					for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
						c := oracle.Conn{Src: src.IP, Dst: dst.IP, Protocol: proto, Port: port}
						want := w.Evaluate(c).Action
						got := decideStages(pipes[where[src.IP]].Egress, c.Src, c.Dst, c)
						if got == fabricv1.ActionAllow {
							got = decideStages(pipes[where[dst.IP]].Ingress, c.Dst, c.Src, c)
						}
						if got != want {
							t.Fatalf("seed %d: %v → %v %s/%d: node pipelines %s, oracle %s", seed, c.Src, c.Dst, proto, port, got, want)
						}
					}
				}
			}
		}
	}
	if shared == 0 {
		t.Error("no rule was shared by two pods of a node: grouping does not work")
	}
	t.Logf("%d rules shared by several pods", shared)
}

// The pipeline's flat form and its mask tables (what the eBPF datapath holds) decide each pod's
// directions exactly as the oracle.
func TestFlatFormAgreesWithTheOracle(t *testing.T) {
	checked := 0
	for seed := range 300 {
		g := gen{rand.New(rand.NewPCG(uint64(seed), 13))}
		w := g.world(seed)
		prog := Compile(w, nil).Pipeline()
		type tables struct {
			rules []FlatRule
			peers []PrefixMask
			ports []PortMask
		}
		flat := map[netip.Addr]map[networkingv1.PolicyType]tables{}
		for _, p := range w.Pods {
			flat[p.IP] = map[networkingv1.PolicyType]tables{}
			for _, dir := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
				rules, err := prog.Flat(p.IP, dir)
				if err != nil {
					t.Fatal(err)
				}
				flat[p.IP][dir] = tables{rules, PeerMasks(rules, 4), PortMasks(rules)}
			}
		}
		decide := func(pod, remote netip.Addr, dir networkingv1.PolicyType, c oracle.Conn) fabricv1.PolicyAction {
			tb, ok := flat[pod][dir]
			if !ok {
				return fabricv1.ActionAllow
			}
			a := DecideFlat(tb.rules, remote, c)
			if b := DecideMasks(tb.rules, tb.peers, tb.ports, remote, c); a != b {
				t.Fatalf("seed %d: pod %v %s %+v: flat list %s, mask tables %s", seed, pod, dir, c, a, b)
			}
			return a
		}
		ends := []netip.Addr{netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("10.245.1.1"), netip.MustParseAddr("10.0.1.200")}
		for _, p := range w.Pods {
			ends = append(ends, p.IP)
		}
		for _, src := range ends {
			for _, dst := range ends {
				if src == dst {
					continue
				}
				for _, port := range []int32{53, 80, 443, 500, 8080} {
					for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
						c := oracle.Conn{Src: src, Dst: dst, Protocol: proto, Port: port}
						got := decide(src, dst, networkingv1.PolicyTypeEgress, c)
						if got == fabricv1.ActionAllow {
							got = decide(dst, src, networkingv1.PolicyTypeIngress, c)
						}
						if want := w.Evaluate(c).Action; got != want {
							t.Fatalf("seed %d: %v → %v %s/%d: flat %s, oracle %s", seed, src, dst, proto, port, got, want)
						}
						checked++
					}
				}
			}
		}
	}
	t.Logf("%d connections agree (flat lists and mask tables)", checked)
}

// Rule sets span words: the lowest rule, and a Pass clearing the rules below its tier's end,
// across word boundaries.
func TestBitsAcrossWords(t *testing.T) {
	var b Bits
	for _, i := range []int{3, 63, 64, 130, 255} {
		b.Set(i)
	}
	var got []int
	for c := b; c.Lowest() >= 0; {
		i := c.Lowest()
		got = append(got, i)
		c.ClearBelow(i + 1)
	}
	if fmt.Sprint(got) != "[3 63 64 130 255]" {
		t.Errorf("walking the set: %v", got)
	}
	c := b
	c.ClearBelow(64)
	if c.Lowest() != 64 {
		t.Errorf("after clearing below 64: lowest %d", c.Lowest())
	}
	c.ClearBelow(200)
	if c.Lowest() != 255 {
		t.Errorf("after clearing below 200: lowest %d", c.Lowest())
	}
	c.ClearBelow(256)
	if c.Lowest() != -1 {
		t.Errorf("after clearing everything: lowest %d", c.Lowest())
	}
	var o Bits
	o.Set(130)
	if a := b.And(o); a.Lowest() != 130 {
		t.Errorf("and: lowest %d", a.Lowest())
	}
}
