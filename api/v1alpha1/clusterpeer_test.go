package v1alpha1_test

import (
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestClusterPeerInForce(t *testing.T) {
	cond := func(typ string, s metav1.ConditionStatus) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s}
	}
	for _, c := range []struct {
		name  string
		conds []metav1.Condition
		want  bool
	}{
		{"accepted, tunnels not up yet", []metav1.Condition{cond("Accepted", "True"), cond("Ready", "False")}, true},
		{"held back, whatever Ready says", []metav1.Condition{cond("Accepted", "False"), cond("Ready", "True")}, false},
		{"written before Accepted existed: Ready meant the same", []metav1.Condition{cond("Ready", "True")}, true},
		{"written before Accepted existed, not Ready", []metav1.Condition{cond("Ready", "False")}, false},
		{"no status yet", nil, false},
	} {
		st := fabricv1.ClusterPeerStatus{Conditions: c.conds}
		if got := st.InForce(); got != c.want {
			t.Errorf("%s: InForce() = %t, want %t", c.name, got, c.want)
		}
	}
}

func TestClusterPeerAliases(t *testing.T) {
	st := fabricv1.ClusterPeerStatus{
		PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12", "fd00:96::/108"},
		Aliases: []fabricv1.CIDRAlias{
			{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"},
			{CIDR: "10.96.0.0/12", Alias: "100.80.0.0/12"},
			{CIDR: "10.1.0.0/16", Alias: "100.99.0.0/24"}, // not the same size: ignored
		},
	}
	var got []string
	for _, p := range st.Prefixes() {
		got = append(got, p.String())
	}
	if want := "[100.64.0.0/16 100.80.0.0/12 fd00:96::/108]"; fmt.Sprint(got) != want {
		t.Errorf("Prefixes() = %v, want %s", got, want)
	}
	for _, c := range []struct {
		in, want string
		service  bool
	}{
		{"10.244.3.7", "100.64.3.7", false},
		{"10.244.255.255", "100.64.255.255", false},
		{"10.111.22.33", "100.95.22.33", true}, // 10.96/12 spans 10.96–10.111: the low 20 bits kept
		{"fd00:96::1:2", "fd00:96::1:2", true}, // not aliased
		{"10.245.0.1", "", false},              // not the peer's
	} {
		ranges := st.PodRanges()
		if c.service {
			ranges = st.ServiceRanges()
		}
		var out string
		for _, m := range ranges {
			if a, ok := m.Translate(netip.MustParseAddr(c.in)); ok {
				out = a.String()
			}
		}
		if out != c.want {
			t.Errorf("%s: translated to %q, want %q", c.in, out, c.want)
		}
	}
	if a := fabricv1.Rebase(netip.MustParseAddr("fd00:1:2::abcd"), netip.MustParsePrefix("fd00:1::/36"),
		netip.MustParsePrefix("fd99:f000::/36")); a.String() != "fd99:f000:2::abcd" {
		t.Errorf("Rebase across a nibble = %s", a)
	}
}
