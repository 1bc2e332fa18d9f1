package podblocks_test

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/podblocks"
)

func pools() podblocks.Pools {
	cn := &fabricv1.ClusterNetwork{}
	cn.Spec.PodCIDRs = []fabricv1.CIDR{"10.244.0.0/16", "fd00:10:244::/56"}
	return podblocks.Of(cn)
}

func TestOwn(t *testing.T) {
	p := pools()
	cases := []struct {
		in   []fabricv1.CIDR
		want bool
	}{
		{[]fabricv1.CIDR{"10.244.3.0/24", "fd00:10:244::/80"}, true},
		{[]fabricv1.CIDR{"10.244.3.0/24"}, false},                     // the IPv6 block is missing
		{[]fabricv1.CIDR{"10.245.3.0/24", "fd00:10:244::/80"}, false}, // outside the pool
		{[]fabricv1.CIDR{"10.244.3.0/25", "fd00:10:244::/80"}, false}, // wrong size
		{[]fabricv1.CIDR{"10.244.3.7/24", "fd00:10:244::/80"}, false}, // not a network address
		{[]fabricv1.CIDR{"10.244.3.0/24", "10.244.4.0/24"}, false},    // a family twice
		{[]fabricv1.CIDR{"garbage", "fd00:10:244::/80"}, false},       // not a CIDR
		{nil, false}, // none
		{[]fabricv1.CIDR{"0.0.0.0/0", "fd00:10:244::/80"}, false},          // everything
		{[]fabricv1.CIDR{"169.254.169.254/32", "fd00:10:244::/80"}, false}, // the metadata address
	}
	for _, c := range cases {
		if _, ok := p.Own(c.in); ok != c.want {
			t.Errorf("Own(%v) = %v, want %v", c.in, ok, c.want)
		}
	}
}

func TestFilterRefusesWhatAnAgentMustNotRoute(t *testing.T) {
	p := pools()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	own := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	claims := []podblocks.Claim{
		{Node: "b", Since: t0.Add(time.Minute), CIDRs: []fabricv1.CIDR{"10.244.2.0/24"}},
		{Node: "c", Since: t0.Add(2 * time.Minute), CIDRs: []fabricv1.CIDR{"10.244.2.0/24"}},                   // b's block
		{Node: "d", Since: t0, CIDRs: []fabricv1.CIDR{"0.0.0.0/0"}},                                            // everything
		{Node: "e", Since: t0, CIDRs: []fabricv1.CIDR{"169.254.169.254/32"}},                                   // the metadata address
		{Node: "f", Since: t0, CIDRs: []fabricv1.CIDR{"10.244.1.0/24"}},                                        // self's block, older
		{Node: "g", Since: t0, CIDRs: []fabricv1.CIDR{"10.244.0.0/16"}},                                        // the whole range
		{Node: "h", Since: t0, CIDRs: []fabricv1.CIDR{"10.244.8.0/24", "fd00:10:244::/80"}},                    // fine, both families
		{Node: "i", Since: t0.Add(3 * time.Minute), CIDRs: []fabricv1.CIDR{"10.244.9.0/24", "10.244.10.0/24"}}, // two of a family
		{Node: "self", Since: t0, CIDRs: []fabricv1.CIDR{"10.244.1.0/24"}},                                     // self's own object: skipped
	}
	acc, refused := p.Filter("self", own, claims)
	wantAcc := []podblocks.Accepted{
		{Node: "b", Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
		{Node: "h", Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.8.0/24"), netip.MustParsePrefix("fd00:10:244::/80")}},
		{Node: "i", Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}},
	}
	if !reflect.DeepEqual(acc, wantAcc) {
		t.Errorf("accepted %v\nwant %v", acc, wantAcc)
	}
	reasons := map[string]string{}
	for _, r := range refused {
		reasons[r.Node+" "+r.CIDR] = r.Reason
	}
	want := map[string]string{
		"c 10.244.2.0/24":      fabricv1.BlockOverlaps,
		"d 0.0.0.0/0":          fabricv1.BlockOutsidePodCIDRs,
		"e 169.254.169.254/32": fabricv1.BlockOutsidePodCIDRs,
		"f 10.244.1.0/24":      fabricv1.BlockOverlaps,
		"g 10.244.0.0/16":      fabricv1.BlockWrongSize,
		"i 10.244.10.0/24":     fabricv1.BlockInvalid,
	}
	if !reflect.DeepEqual(reasons, want) {
		t.Errorf("refused %v\nwant %v", reasons, want)
	}
}
