package clusternetwork

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestValidate(t *testing.T) {
	ovsOnly := []fabricv1.DatapathBackend{fabricv1.DatapathOVS}
	spec := func(pods, svcs []fabricv1.CIDR, backend fabricv1.DatapathBackend) fabricv1.ClusterNetworkSpec {
		return fabricv1.ClusterNetworkSpec{ClusterID: "c1", PodCIDRs: pods, ServiceCIDRs: svcs,
			Datapath: fabricv1.DatapathSpec{Backend: backend}}
	}
	cases := []struct {
		name string
		spec fabricv1.ClusterNetworkSpec
		want []Problem
	}{
		{"dual-stack ok", spec([]fabricv1.CIDR{"10.244.0.0/16", "fd00:10:244::/56"},
			[]fabricv1.CIDR{"10.96.0.0/16", "fd00:10:96::/112"}, "ovs"), nil},
		{"empty backend means ovs", spec([]fabricv1.CIDR{"10.244.0.0/16"}, []fabricv1.CIDR{"10.96.0.0/16"}, ""), nil},
		{"pod contains service", spec([]fabricv1.CIDR{"10.0.0.0/8"}, []fabricv1.CIDR{"10.96.0.0/16"}, "ovs"),
			[]Problem{{fabricv1.ReasonOverlappingCIDR, "podCIDR 10.0.0.0/8 overlaps serviceCIDR 10.96.0.0/16"}}},
		{"ipv6 overlap", spec([]fabricv1.CIDR{"fd00::/48"}, []fabricv1.CIDR{"fd00:0:0:1::/64"}, "ovs"),
			[]Problem{{fabricv1.ReasonOverlappingCIDR, "podCIDR fd00::/48 overlaps serviceCIDR fd00:0:0:1::/64"}}},
		{"two ipv4 pod ranges", spec([]fabricv1.CIDR{"10.244.0.0/16", "10.245.0.0/16"}, []fabricv1.CIDR{"10.96.0.0/16"}, "ovs"),
			[]Problem{{fabricv1.ReasonInvalidCIDR, "podCIDRs: 10.244.0.0/16 and 10.245.0.0/16 are the same IP family; give at most one per family"}}},
		{"host bits", spec([]fabricv1.CIDR{"10.244.1.0/16"}, []fabricv1.CIDR{"10.96.0.0/16"}, "ovs"),
			[]Problem{{fabricv1.ReasonInvalidCIDR, "podCIDRs: 10.244.1.0/16 has host bits set (did you mean 10.244.0.0/16?)"}}},
		{"garbage", spec([]fabricv1.CIDR{"10.244.0.0/16"}, []fabricv1.CIDR{"nope"}, "ovs"),
			[]Problem{{fabricv1.ReasonInvalidCIDR, `serviceCIDRs: "nope" is not a CIDR`}}},
		{"pods in the default alias pool", spec([]fabricv1.CIDR{"100.64.0.0/16"}, []fabricv1.CIDR{"10.96.0.0/16"}, "ovs"),
			[]Problem{{fabricv1.ReasonOverlappingCIDR, "the alias pool 100.64.0.0/10 overlaps 100.64.0.0/16, a range of this cluster: name another in spec.overlap.aliasPool"}}},
		{"pods in the default alias pool, another pool named", func() fabricv1.ClusterNetworkSpec {
			s := spec([]fabricv1.CIDR{"100.64.0.0/16"}, []fabricv1.CIDR{"10.96.0.0/16"}, "ovs")
			s.Overlap.AliasPool = []fabricv1.CIDR{"198.18.0.0/15"}
			return s
		}(), nil},
		{"ebpf not built", spec([]fabricv1.CIDR{"10.244.0.0/16"}, []fabricv1.CIDR{"10.96.0.0/16"}, "ebpf"),
			[]Problem{{fabricv1.ReasonUnsupportedBackend, `datapath backend "ebpf" is not available in this weft build (available: ovs)`}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Validate(c.spec, ovsOnly)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Validate:\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestSummarizeKeepsFirstReasonAndAllMessages(t *testing.T) {
	reason, msg := summarize([]Problem{{"A", "first"}, {"B", "second"}})
	if reason != "A" || msg != "first; second" {
		t.Errorf("summarize = %q, %q", reason, msg)
	}
}

func TestUnsupportedOn(t *testing.T) {
	node := func(name string, caps ...fabricv1.DatapathCapability) fabricv1.FabricNode {
		return fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: fabricv1.FabricNodeStatus{Capabilities: caps}}
	}
	encaps := func(e ...fabricv1.Encapsulation) []fabricv1.Encapsulation { return e }
	nodes := []fabricv1.FabricNode{
		node("a", fabricv1.DatapathCapability{Backend: fabricv1.DatapathOVS, Encapsulations: encaps("geneve", "vxlan")},
			fabricv1.DatapathCapability{Backend: fabricv1.DatapathEBPF, Encapsulations: encaps("vxlan")}),
		node("b", fabricv1.DatapathCapability{Backend: fabricv1.DatapathOVS, Encapsulations: encaps("geneve", "vxlan")},
			fabricv1.DatapathCapability{Backend: fabricv1.DatapathEBPF, Encapsulations: encaps("vxlan", "geneve")}),
		node("new"), // its agent has not said yet
	}
	spec := fabricv1.ClusterNetworkSpec{Datapath: fabricv1.DatapathSpec{Backend: fabricv1.DatapathEBPF, Encapsulation: fabricv1.EncapsulationGeneve}}
	if got := UnsupportedOn(spec, nodes); !strings.Contains(got, "cannot use geneve encapsulation on nodes a (there it supports: vxlan)") {
		t.Errorf("ebpf+geneve: %q", got)
	}
	spec.Datapath.Encapsulation = fabricv1.EncapsulationVXLAN
	if got := UnsupportedOn(spec, nodes); got != "" {
		t.Errorf("ebpf+vxlan: %q, want none", got)
	}
	if got := UnsupportedOn(fabricv1.ClusterNetworkSpec{}, nodes); got != "" {
		t.Errorf("the defaults (ovs, geneve): %q, want none", got)
	}
}
