package policy

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// BenchmarkCompile10kRules compiles 10,000 rules (100 policies × 50 ingress + 50 egress
// rules, pod-selector, ipBlock and port peers) for the 110 pods of a node out of 1,000.
// Target (issue 8): under 1 s.
func BenchmarkCompile10kRules(b *testing.B) {
	w := &oracle.World{Tiers: tiers, Namespaces: map[string]map[string]string{"prod": {"env": "prod"}}}
	for i := range 1000 {
		w.Pods = append(w.Pods, oracle.Pod{Namespace: "prod", Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%50)}, IP: netip.AddrFrom4([4]byte{10, 1, byte(i / 250), byte(1 + i%250)}),
			Ports: []oracle.NamedPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}})
	}
	for i := range 100 {
		p := fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("fp%d", i)}, Spec: fabricv1.FabricPolicySpec{
			Tier: "application", Priority: int32(i),
			AppliedTo: []fabricv1.PolicyTarget{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%50)}}}}}}
		for j := range 50 {
			peer := fabricv1.PolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", j)}}}
			if j%2 == 1 {
				peer = fabricv1.PolicyPeer{IPBlock: &fabricv1.IPBlock{CIDR: fmt.Sprintf("172.%d.0.0/16", 16+j%16), Except: []string{fmt.Sprintf("172.%d.1.0/24", 16+j%16)}}}
			}
			port := fabricv1.PolicyPort{Protocol: corev1.ProtocolTCP, Port: ptr.To(intstr.FromInt32(int32(1000 + j)))}
			p.Spec.Ingress = append(p.Spec.Ingress, fabricv1.PolicyRule{Action: fabricv1.ActionAllow, From: []fabricv1.PolicyPeer{peer}, Ports: []fabricv1.PolicyPort{port}})
			p.Spec.Egress = append(p.Spec.Egress, fabricv1.PolicyRule{Action: fabricv1.ActionDrop, To: []fabricv1.PolicyPeer{peer}, Ports: []fabricv1.PolicyPort{port}})
		}
		w.Policies = append(w.Policies, p)
	}
	node := w.Pods[:110]
	b.ResetTimer()
	var rules int
	for range b.N {
		prog := Compile(w, node)
		rules = 0
		for _, sides := range prog.Sides {
			for _, s := range sides {
				for _, seg := range s.Before {
					rules += len(seg.Rules)
				}
			}
		}
	}
	b.ReportMetric(float64(rules), "compiled-rules")
}
