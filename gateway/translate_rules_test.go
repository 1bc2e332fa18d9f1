package gateway

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestTranslateTable(t *testing.T) {
	accepted := []metav1.Condition{{Type: fabricv1.ConditionAccepted, Status: metav1.ConditionTrue}}
	peers := []fabricv1.ClusterPeer{
		{Spec: fabricv1.ClusterPeerSpec{ClusterID: "c3"}, Status: fabricv1.ClusterPeerStatus{Conditions: accepted,
			PodCIDRs: []string{"10.244.0.0/16", "fd00:10:244::/56"}, ServiceCIDRs: []string{"10.96.0.0/12"},
			Aliases: []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"}, {CIDR: "10.96.0.0/12", Alias: "100.80.0.0/12"},
				{CIDR: "fd00:10:244::/56", Alias: "fd99:0:0:100::/56"}},
			SeenAs: []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.70.0.0/16"}}}},
		// Not aliased either way: nothing to translate.
		{Spec: fabricv1.ClusterPeerSpec{ClusterID: "c2"}, Status: fabricv1.ClusterPeerStatus{Conditions: accepted, PodCIDRs: []string{"10.245.0.0/16"}}},
		// Not Accepted: nothing either.
		{Spec: fabricv1.ClusterPeerSpec{ClusterID: "c4"}, Status: fabricv1.ClusterPeerStatus{PodCIDRs: []string{"10.244.0.0/16"},
			Aliases: []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.66.0.0/16"}}}},
	}
	ts := Translations(peers)
	if len(ts) != 1 || ts[0].Peer != "c3" {
		t.Fatalf("translations for %v, want c3's only", ts)
	}
	got := translateTable("weft-wg*", ts)
	for _, want := range []string{
		// Sources first, matched on every range of the peer as seen here (same family).
		`oifname "weft-wg*" ip daddr 100.64.0.0/16 ip saddr 10.244.0.0/16 ip saddr set ip saddr & 0.0.255.255 | 100.70.0.0`,
		`oifname "weft-wg*" ip daddr 100.80.0.0/12 ip saddr 10.244.0.0/16 ip saddr set ip saddr & 0.0.255.255 | 100.70.0.0`,
		`oifname "weft-wg*" ip daddr 100.64.0.0/16 ip daddr set ip daddr & 0.0.255.255 | 10.244.0.0`,
		`oifname "weft-wg*" ip daddr 100.80.0.0/12 ip daddr set ip daddr & 0.15.255.255 | 10.96.0.0`,
		`oifname "weft-wg*" ip6 daddr fd99:0:0:100::/56 ip6 daddr set ip6 daddr & ::ff:ffff:ffff:ffff:ffff | fd00:10:244::`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no rule %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "ip6 daddr fd99:0:0:100::/56 ip saddr") {
		t.Errorf("an IPv4 source rule for an IPv6 destination:\n%s", got)
	}
	if src, dst := strings.Index(got, "saddr set"), strings.Index(got, "daddr set"); src > dst {
		t.Errorf("destinations are rewritten before sources are matched:\n%s", got)
	}
	if m := hostMask(netip.MustParsePrefix("10.0.0.0/13")); m.String() != "0.7.255.255" {
		t.Errorf("hostMask /13 = %s", m)
	}
}
