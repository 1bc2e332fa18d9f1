// Package policytest builds policy worlds for tests and benchmarks, and probes datapaths
// against the oracle.
package policytest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Tiers are the tiers of the worlds built here.
var Tiers = []fabricv1.Tier{
	{ObjectMeta: metav1.ObjectMeta{Name: "securityops"}, Spec: fabricv1.TierSpec{Priority: 100}},
	{ObjectMeta: metav1.ObjectMeta{Name: "application"}, Spec: fabricv1.TierSpec{Priority: 250}},
	{ObjectMeta: metav1.ObjectMeta{Name: "baseline"}, Spec: fabricv1.TierSpec{Priority: 253}},
}

// TenThousandRules is 100 policies × (50 ingress Allow + 50 egress Drop rules) over pods
// labelled app0…app49 (pod i has app(i%50) and a named port http), peers by pod selector
// and by ipBlock with an exception, one TCP port each (1000–1049). pods are the world's
// pods (addresses given by the caller).
func TenThousandRules(pods []netip.Addr) *oracle.World {
	w := &oracle.World{Tiers: Tiers, Namespaces: map[string]map[string]string{"prod": {"env": "prod"}}}
	for i, ip := range pods {
		w.Pods = append(w.Pods, oracle.Pod{Namespace: "prod", Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%50)}, IP: ip,
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
	return w
}

// Addrs returns n addresses counting up from first.
func Addrs(first netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for a := first; len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out
}
