package v1alpha1_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func fabricPolicy(name string, mutate func(*fabricv1.FabricPolicySpec)) *fabricv1.FabricPolicy {
	p := &fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricPolicySpec{
		Priority:  10,
		AppliedTo: []fabricv1.PolicyTarget{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
		Ingress: []fabricv1.PolicyRule{{Name: "in", Action: fabricv1.ActionAllow,
			From:  []fabricv1.PolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
			Ports: []fabricv1.PolicyPort{{Port: ptr.To(intstr.FromInt32(8000)), EndPort: ptr.To[int32](8100)}}}},
		Egress: []fabricv1.PolicyRule{{Name: "out", Action: fabricv1.ActionReject,
			To: []fabricv1.PolicyPeer{{FQDN: "*.example.com"}, {IPBlock: &fabricv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}, {Cluster: "west"}}}},
	}}
	if mutate != nil {
		mutate(&p.Spec)
	}
	return p
}

func TestFabricPolicyValidation(t *testing.T) {
	ctx := context.Background()
	t.Run("a full policy is accepted with defaults filled in", func(t *testing.T) {
		p := fabricPolicy("full", nil)
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, p) })
		got := &fabricv1.FabricPolicy{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Tier != "application" || got.Spec.Ingress[0].Ports[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("defaults: tier %q, protocol %q; want application and TCP", got.Spec.Tier, got.Spec.Ingress[0].Ports[0].Protocol)
		}
	})
	for i, c := range []struct {
		name   string
		mutate func(*fabricv1.FabricPolicySpec)
		want   string
	}{
		{"an unknown action", func(s *fabricv1.FabricPolicySpec) { s.Ingress[0].Action = "Permit" }, `Unsupported value: "Permit"`},
		{"no appliedTo", func(s *fabricv1.FabricPolicySpec) { s.AppliedTo = nil }, "spec.appliedTo"},
		{"to in an ingress rule", func(s *fabricv1.FabricPolicySpec) { s.Ingress[0].To = s.Egress[0].To[2:] }, "ingress rules name peers in from, not to"},
		{"from in an egress rule", func(s *fabricv1.FabricPolicySpec) { s.Egress[0].From = s.Ingress[0].From }, "egress rules name peers in to, not from"},
		{"fqdn in an ingress rule", func(s *fabricv1.FabricPolicySpec) {
			s.Ingress[0].From = []fabricv1.PolicyPeer{{FQDN: "api.example.com"}}
		}, "fqdn peers are for egress rules only"},
		{"a peer of two kinds", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To[1].Cluster = "west"
		}, "a peer is exactly one of"},
		{"an empty peer", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To = []fabricv1.PolicyPeer{{}}
		}, "a peer is exactly one of"},
		{"a bad CIDR", func(s *fabricv1.FabricPolicySpec) { s.Egress[0].To[1].IPBlock.CIDR = "10.0.0.0/33" }, "cidr must be a CIDR"},
		{"a bad exception", func(s *fabricv1.FabricPolicySpec) { s.Egress[0].To[1].IPBlock.Except = []string{"nope"} }, "except entries must be CIDRs"},
		{"a CIDR with host bits", func(s *fabricv1.FabricPolicySpec) { s.Egress[0].To[1].IPBlock.CIDR = "10.0.0.1/8" }, "its host bits must be zero"},
		{"an exception with host bits", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To[1].IPBlock = &fabricv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.1/16"}}
		}, "except entries must be network addresses"},
		{"an exception outside the CIDR", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To[1].IPBlock = &fabricv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"192.168.0.0/16"}}
		}, "except entries must lie inside cidr and be narrower than it"},
		{"an exception wider than the CIDR", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To[1].IPBlock = &fabricv1.IPBlock{CIDR: "10.1.0.0/16", Except: []string{"10.0.0.0/8"}}
		}, "except entries must lie inside cidr and be narrower than it"},
		{"an exception as wide as the CIDR", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To[1].IPBlock = &fabricv1.IPBlock{CIDR: "10.1.0.0/16", Except: []string{"10.1.0.0/16"}}
		}, "except entries must lie inside cidr and be narrower than it"},
		{"an exception of the other family", func(s *fabricv1.FabricPolicySpec) {
			s.Egress[0].To[1].IPBlock = &fabricv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"fd00::/64"}}
		}, "except entries must lie inside cidr and be narrower than it"},
		{"a bad fqdn pattern", func(s *fabricv1.FabricPolicySpec) { s.Egress[0].To[0].FQDN = "a.*.example.com" }, "spec.egress[0].to[0].fqdn"},
		{"endPort below port", func(s *fabricv1.FabricPolicySpec) { s.Ingress[0].Ports[0].EndPort = ptr.To[int32](7000) }, "endPort needs a numeric port not above it"},
		{"endPort with a named port", func(s *fabricv1.FabricPolicySpec) {
			s.Ingress[0].Ports[0].Port = ptr.To(intstr.FromString("http"))
		}, "endPort needs a numeric port not above it"},
		{"an unknown protocol", func(s *fabricv1.FabricPolicySpec) { s.Ingress[0].Ports[0].Protocol = "ICMP" }, `Unsupported value: "ICMP"`},
		{"a negative priority", func(s *fabricv1.FabricPolicySpec) { s.Priority = -1 }, "spec.priority"},
	} {
		t.Run(c.name+" is refused", func(t *testing.T) {
			err := k8s.Create(ctx, fabricPolicy(fmt.Sprintf("bad-%d", i), c.mutate))
			expectRejected(t, err, c.want)
		})
	}
}
