package clusterpeer

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestRefuseReason(t *testing.T) {
	local := []hostAddr{
		{netip.MustParseAddr("172.30.1.11"), "node n1's address 172.30.1.11"},
		{netip.MustParseAddr("172.30.1.2"), "the API server's address 172.30.1.2"},
	}
	for _, c := range []struct {
		cidr    string
		allowed []fabricv1.CIDR
		want    string // "" accepted, else a part of the reason
	}{
		{"10.245.0.0/16", nil, ""},
		{"fd00:10:245::/56", nil, ""},
		{"0.0.0.0/0", nil, "is a default route"},
		{"::/0", nil, "is a default route"},
		{"0.0.0.0/1", nil, "covers the unspecified network"},
		{"64.0.0.0/2", nil, "covers loopback 127.0.0.0/8"},
		{"169.254.169.254/32", nil, "the cloud metadata address"},
		{"169.0.0.0/8", nil, "link-local"},
		{"224.0.0.0/24", nil, "multicast"},
		{"255.255.255.255/32", nil, "broadcast"},
		{"fe80::/64", nil, "link-local fe80::/10"},
		{"fd00:ec2::/32", nil, "metadata address fd00:ec2::254"},
		{"172.30.0.0/16", nil, "node n1's address 172.30.1.11"},
		{"172.30.1.2/32", nil, "the API server's address"},
		{"172.30.2.0/24", nil, ""},
		{"10.245.0.0/16", []fabricv1.CIDR{"10.245.0.0/16"}, ""},
		{"10.245.8.0/24", []fabricv1.CIDR{"10.0.0.0/8"}, ""},
		{"10.0.0.0/8", []fabricv1.CIDR{"10.245.0.0/16"}, "lies outside spec.allowedCIDRs"},
		{"10.246.0.0/16", []fabricv1.CIDR{"10.245.0.0/16", "192.168.0.0/16"}, "lies outside spec.allowedCIDRs"},
	} {
		got := refuseReason(netip.MustParsePrefix(c.cidr), local, c.allowed)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s (allowed %v): %q, want %q", c.cidr, c.allowed, got, c.want)
		}
	}
}

func TestBoundRangesKeepsWhatMayBeClaimed(t *testing.T) {
	kept, refused := boundRanges("pod", []string{"10.245.0.0/16", "0.0.0.0/0", "fd00:10:245::/56"}, nil, nil)
	if !slices.Equal(kept, []string{"10.245.0.0/16", "fd00:10:245::/56"}) {
		t.Errorf("kept %v", kept)
	}
	if !slices.Equal(refused, []string{"pod range 0.0.0.0/0 is a default route"}) {
		t.Errorf("refused %v", refused)
	}
}
