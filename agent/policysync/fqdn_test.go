package policysync

import (
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/agent/datapath"
)

func TestFQDNCache(t *testing.T) {
	c := fqdnCache{}
	now := time.Unix(1000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !c.learn([]datapath.DNSRecord{{Name: "x.test", Addr: a, TTL: 5 * time.Second}}, now) {
		t.Error("a new address is news")
	}
	if c.learn([]datapath.DNSRecord{{Name: "x.test", Addr: a, TTL: 120 * time.Second}}, now.Add(time.Second)) {
		t.Error("a known address is no news (only its expiry moves)")
	}
	if !c.learn([]datapath.DNSRecord{{Name: "x.test", Addr: b, TTL: 0}}, now) {
		t.Error("a second address is news")
	}
	got, next := c.resolved(now.Add(10 * time.Second))
	if len(got["x.test"]) != 2 || !next.Equal(now.Add(MinDNSTTL)) {
		t.Errorf("after 10 s: %v, next expiry %v (want both; short TTLs are kept %v)", got, next, MinDNSTTL)
	}
	got, _ = c.resolved(now.Add(60 * time.Second))
	if len(got["x.test"]) != 1 || got["x.test"][0] != a {
		t.Errorf("after 60 s: %v, want only the address with TTL 120 s", got)
	}
	got, next = c.resolved(now.Add(200 * time.Second))
	if len(got) != 0 || !next.IsZero() || len(c) != 0 {
		t.Errorf("after 200 s: %v %v %v, want nothing", got, next, c)
	}
}
