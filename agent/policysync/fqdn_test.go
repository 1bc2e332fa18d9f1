package policysync

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/agent/datapath"
)

func TestFQDNCache(t *testing.T) {
	c := fqdnCache{}
	now := time.Unix(1000, 0)
	pod := netip.MustParseAddr("10.0.0.5")
	rules := []string{"*.test"}
	keep := map[netip.Addr][]string{pod: rules}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !c.learn(pod, rules, []datapath.DNSRecord{{Name: "x.test", Addr: a, TTL: 5 * time.Second}}, now) {
		t.Error("a new address is news")
	}
	if c.learn(pod, rules, []datapath.DNSRecord{{Name: "x.test", Addr: a, TTL: 120 * time.Second}}, now.Add(time.Second)) {
		t.Error("a known address is no news (only its expiry moves)")
	}
	if !c.learn(pod, rules, []datapath.DNSRecord{{Name: "x.test", Addr: b, TTL: 0}}, now) {
		t.Error("a second address is news")
	}
	got, next := c.resolved(now.Add(10*time.Second), keep)
	if len(got[pod]["x.test"]) != 2 || !next.Equal(now.Add(MinDNSTTL)) {
		t.Errorf("after 10 s: %v, next expiry %v (want both; short TTLs are kept %v)", got, next, MinDNSTTL)
	}
	got, _ = c.resolved(now.Add(60*time.Second), keep)
	if len(got[pod]["x.test"]) != 1 || got[pod]["x.test"][0] != a {
		t.Errorf("after 60 s: %v, want only the address with TTL 120 s", got)
	}
	got, next = c.resolved(now.Add(200*time.Second), keep)
	if len(got) != 0 || !next.IsZero() || len(c) != 0 {
		t.Errorf("after 200 s: %v %v %v, want nothing", got, next, c)
	}
}

func TestFQDNCacheBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	pod, other := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")
	rules := []string{"api.example.com", "*.cdn.example"}
	keep := map[netip.Addr][]string{pod: rules, other: rules}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}) }

	t.Run("only names the pod's rules name are learnt", func(t *testing.T) {
		c := fqdnCache{}
		if c.learn(pod, rules, []datapath.DNSRecord{{Name: "evil.example.com", Addr: addr(1), TTL: time.Minute}}, now) {
			t.Error("a name no rule names was learnt")
		}
		if c.learn(pod, nil, []datapath.DNSRecord{{Name: "api.example.com", Addr: addr(1), TTL: time.Minute}}, now) {
			t.Error("an answer to a pod without FQDN rules was learnt")
		}
		if !c.learn(pod, rules, []datapath.DNSRecord{{Name: "a.cdn.example", Addr: addr(2), TTL: time.Minute}}, now) {
			t.Error("a name a pattern matches was not learnt")
		}
	})
	t.Run("what one pod learns is that pod's", func(t *testing.T) {
		c := fqdnCache{}
		c.learn(pod, rules, []datapath.DNSRecord{{Name: "api.example.com", Addr: addr(1), TTL: time.Minute}}, now)
		got, _ := c.resolved(now, keep)
		if len(got[other]) != 0 || len(got[pod]["api.example.com"]) != 1 {
			t.Errorf("resolved %v, want the address for %s only", got, pod)
		}
	})
	t.Run("a TTL above the cap is kept only up to it", func(t *testing.T) {
		c := fqdnCache{}
		c.learn(pod, rules, []datapath.DNSRecord{{Name: "api.example.com", Addr: addr(1), TTL: 7 * 24 * time.Hour}}, now)
		if _, next := c.resolved(now, keep); !next.Equal(now.Add(MaxDNSTTL)) {
			t.Errorf("a week's TTL expires at %v, want %v", next, now.Add(MaxDNSTTL))
		}
	})
	t.Run("a name keeps at most MaxAddrsPerName addresses, the newest", func(t *testing.T) {
		c := fqdnCache{}
		for i := range MaxAddrsPerName + 10 {
			c.learn(pod, rules, []datapath.DNSRecord{{Name: "api.example.com", Addr: addr(i), TTL: time.Duration(60+i) * time.Second}}, now)
		}
		got, _ := c.resolved(now, keep)
		if n := len(got[pod]["api.example.com"]); n != MaxAddrsPerName {
			t.Errorf("%d addresses kept, want %d", n, MaxAddrsPerName)
		}
		if _, ok := c[pod]["api.example.com"][addr(MaxAddrsPerName+9)]; !ok {
			t.Error("the newest address was not kept")
		}
	})
	t.Run("a pod keeps at most MaxNamesPerPod names", func(t *testing.T) {
		c := fqdnCache{}
		for i := range MaxNamesPerPod + 10 {
			c.learn(pod, rules, []datapath.DNSRecord{{Name: fmt.Sprintf("n%d.cdn.example", i), Addr: addr(1), TTL: time.Minute}}, now)
		}
		if n := len(c[pod]); n != MaxNamesPerPod {
			t.Errorf("%d names kept, want %d", n, MaxNamesPerPod)
		}
	})
	t.Run("a pod gone, or without FQDN rules, is forgotten", func(t *testing.T) {
		c := fqdnCache{}
		c.learn(other, rules, []datapath.DNSRecord{{Name: "api.example.com", Addr: addr(1), TTL: time.Minute}}, now)
		if got, _ := c.resolved(now, map[netip.Addr][]string{pod: rules}); len(got) != 0 || len(c) != 0 {
			t.Errorf("resolved %v, cache %v: want %s forgotten", got, c, other)
		}
	})
}
