package nodeipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNextFree(t *testing.T) {
	pool := netip.MustParsePrefix("10.244.0.0/16")
	used := map[netip.Prefix]bool{netip.MustParsePrefix("10.244.0.0/24"): true, netip.MustParsePrefix("10.244.1.0/24"): true}
	if b, err := nextFree(pool, 24, used); err != nil || b.String() != "10.244.2.0/24" {
		t.Errorf("nextFree = %v, %v; want 10.244.2.0/24", b, err)
	}
	v6 := netip.MustParsePrefix("fd00:10:244::/56")
	if b, err := nextFree(v6, 80, nil); err != nil || b.String() != "fd00:10:244::/80" {
		t.Errorf("IPv6 first block = %v, %v", b, err)
	}
	if b, err := nextFree(v6, 80, map[netip.Prefix]bool{netip.MustParsePrefix("fd00:10:244::/80"): true}); err != nil || b.String() != "fd00:10:244:0:1::/80" {
		t.Errorf("IPv6 second block = %v, %v", b, err)
	}
	small := netip.MustParsePrefix("10.0.0.0/23")
	full := map[netip.Prefix]bool{netip.MustParsePrefix("10.0.0.0/24"): true, netip.MustParsePrefix("10.0.1.0/24"): true}
	if _, err := nextFree(small, 24, full); err == nil || !strings.Contains(err.Error(), "all 2 blocks of 10.0.0.0/23 are taken") {
		t.Errorf("exhausted pool: %v", err)
	}
	if _, err := nextFree(pool, 12, nil); err == nil {
		t.Error("a block larger than its pool was accepted")
	}
}

func TestParseBlocks(t *testing.T) {
	pools := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00::/56")}
	mask := func(p netip.Prefix) int {
		if p.Addr().Is4() {
			return 24
		}
		return 80
	}
	cases := map[string]bool{
		"10.244.3.0/24,fd00::/80": true,
		"10.244.3.0/24":           false, // the IPv6 block is missing
		"10.245.3.0/24,fd00::/80": false, // outside the pool
		"10.244.3.0/25,fd00::/80": false, // wrong size
		"10.244.3.7/24,fd00::/80": false, // not a network address
		"garbage":                 false,
		"":                        false,
	}
	for in, want := range cases {
		if _, ok := parseBlocks(in, pools, mask); ok != want {
			t.Errorf("parseBlocks(%q) ok = %v, want %v", in, ok, want)
		}
	}
}
