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
