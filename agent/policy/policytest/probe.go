package policytest

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
)

// Pod is a pod of the datapath policy tests: who it is to the oracle, and its network
// namespace.
type Pod struct {
	oracle.Pod
	NS *netnstest.Netns
}

// Serve runs the servers the probes try: TCP 80 and 8080, UDP 53 (an echo).
func Serve(t testing.TB, p *Pod) {
	t.Helper()
	p.NS.ServeEcho(t, p.IP, []int{80, 8080}, []int{53})
}

// Probe tries one connection and says what the datapath did: allowed (connected or echoed),
// rejected (refused or unreachable at once), or dropped (no answer).
func Probe(from *Pod, to netip.Addr, proto corev1.Protocol, port int32) fabricv1.PolicyAction {
	switch from.NS.Probe(strings.ToLower(string(proto)), netip.AddrPortFrom(to, uint16(port)), 800*time.Millisecond) {
	case netnstest.Connected:
		return fabricv1.ActionAllow
	case netnstest.Refused:
		return fabricv1.ActionReject
	}
	return fabricv1.ActionDrop
}

// ProbeMatrix probes every pair of pods on TCP 80, TCP 8080 and UDP 53, in parallel, and
// compares with the oracle (a test error per disagreement).
func ProbeMatrix(t testing.TB, w *oracle.World, pods []*Pod) (checked, denied int) {
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
					got := Probe(src, dst.IP, pp.proto, pp.port)
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
	for _, r := range results {
		byAction[r.got]++
		if r.got != r.want {
			wrong = append(wrong, fmt.Sprintf("%s: datapath %s, oracle %s", r.what, r.got, r.want))
		}
		if r.want != fabricv1.ActionAllow {
			denied++
		}
	}
	t.Logf("probe matrix: %v", byAction)
	if len(wrong) > 0 {
		t.Errorf("%d of %d probes disagree with the oracle:\n%s", len(wrong), len(results), strings.Join(wrong, "\n"))
	}
	return len(results), denied
}

// LabelSel selects the labels key1, value1, key2, value2…
func LabelSel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// TCPPort is a FabricPolicy port.
func TCPPort(p int32) fabricv1.PolicyPort {
	return fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromInt32(p))}
}

// UDPPort is a FabricPolicy port.
func UDPPort(p int32) fabricv1.PolicyPort {
	return fabricv1.PolicyPort{Protocol: corev1.ProtocolUDP, Port: ptr.To(intstr.FromInt32(p))}
}

// Matrix is the datapath tests' policy over pods in namespaces prod and dev labelled app
// web, db or cache: every action, Pass, a NetworkPolicy that isolates, a baseline rule the
// isolation hides, egress and ingress, logging. It rejects dev web → prod TCP 8080 at the
// destination and dev web → db UDP 53 at the source (both logged where noted).
func Matrix(pods []oracle.Pod) *oracle.World {
	pol := func(name, tier string, applied fabricv1.PolicyTarget, in, eg []fabricv1.PolicyRule) fabricv1.FabricPolicy {
		return fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricPolicySpec{Tier: tier, Priority: 1,
			AppliedTo: []fabricv1.PolicyTarget{applied}, Ingress: in, Egress: eg}}
	}
	fromDev := []fabricv1.PolicyPeer{{NamespaceSelector: LabelSel("env", "dev")}}
	return &oracle.World{Tiers: Tiers, Pods: pods,
		Namespaces: map[string]map[string]string{"prod": {"env": "prod"}, "dev": {"env": "dev"}},
		Policies: []fabricv1.FabricPolicy{
			// Dev may not reach prod's 8080 (rejected); anything else from dev is passed on.
			pol("dev-to-prod", "securityops", fabricv1.PolicyTarget{NamespaceSelector: LabelSel("env", "prod")}, []fabricv1.PolicyRule{
				{Name: "reject-8080", Action: fabricv1.ActionReject, From: fromDev, Ports: []fabricv1.PolicyPort{TCPPort(8080)}, EnableLogging: true},
				{Name: "pass-rest", Action: fabricv1.ActionPass, From: fromDev},
			}, nil),
			// The database takes web on 80 and nothing else.
			pol("db", "application", fabricv1.PolicyTarget{PodSelector: LabelSel("app", "db")}, []fabricv1.PolicyRule{
				{Name: "web", Action: fabricv1.ActionAllow, From: []fabricv1.PolicyPeer{{PodSelector: LabelSel("app", "web")}}, Ports: []fabricv1.PolicyPort{TCPPort(80)}},
				{Name: "rest", Action: fabricv1.ActionDrop, EnableLogging: true},
			}, nil),
			// Web in dev may not send UDP to the database (rejected at the source).
			pol("dev-web-egress", "securityops", fabricv1.PolicyTarget{PodSelector: LabelSel("app", "web"), NamespaceSelector: LabelSel("env", "dev")}, nil,
				[]fabricv1.PolicyRule{{Name: "no-udp-to-db", Action: fabricv1.ActionReject, To: []fabricv1.PolicyPeer{{PodSelector: LabelSel("app", "db")}},
					Ports: []fabricv1.PolicyPort{UDPPort(53)}}}),
			// Baseline: nothing reaches 8080 unless a tier before allowed it (hidden for
			// pods a NetworkPolicy isolates).
			pol("baseline", "baseline", fabricv1.PolicyTarget{PodSelector: &metav1.LabelSelector{}}, []fabricv1.PolicyRule{
				{Name: "no-8080", Action: fabricv1.ActionDrop, Ports: []fabricv1.PolicyPort{TCPPort(8080)}},
			}, nil),
		},
		NetworkPolicies: []networkingv1.NetworkPolicy{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "cache"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *LabelSel("app", "cache"),
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: LabelSel("app", "web"), NamespaceSelector: &metav1.LabelSelector{}}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(8080))}, {Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(intstr.FromInt32(53))}}}}},
		}},
	}
}
