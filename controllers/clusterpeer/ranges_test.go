package clusterpeer

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestFirstOverlap(t *testing.T) {
	own := append(ranges("this cluster", "pod", []string{"10.244.0.0/16", "fd00:10:244::/56"}),
		ranges("this cluster", "service", []string{"10.96.0.0/16"})...)
	for _, c := range []struct {
		peer []string
		want string
	}{
		{[]string{"10.245.0.0/16"}, ""},
		{[]string{"10.244.128.0/17"}, "peer east's pod range 10.244.128.0/17 / this cluster's pod range 10.244.0.0/16"},
		{[]string{"10.0.0.0/8"}, "peer east's pod range 10.0.0.0/8 / this cluster's pod range 10.244.0.0/16"},
		{[]string{"10.245.0.0/16", "fd00:10:244:1::/64"}, "peer east's pod range fd00:10:244:1::/64 / this cluster's pod range fd00:10:244::/56"},
		{[]string{"10.96.7.0/24"}, "peer east's pod range 10.96.7.0/24 / this cluster's service range 10.96.0.0/16"},
		{[]string{"not a cidr"}, ""},
	} {
		p, o, ok := firstOverlap(ranges("peer east", "pod", c.peer), own)
		got := ""
		if ok {
			got = p.String() + " / " + o.String()
		}
		if got != c.want {
			t.Errorf("%v: got %q, want %q", c.peer, got, c.want)
		}
	}
}

func TestPrecedes(t *testing.T) {
	at := func(name string, sec int) *fabricv1.ClusterPeer {
		return &fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(int64(sec), 0))}}
	}
	if !precedes(at("b", 1), at("a", 2)) || precedes(at("a", 2), at("b", 1)) {
		t.Error("the older peer must keep its ranges")
	}
	if !precedes(at("a", 1), at("b", 1)) || precedes(at("b", 1), at("a", 1)) {
		t.Error("same age: the name that sorts first must keep its ranges")
	}
}

func TestAssignAliases(t *testing.T) {
	pool := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}
	own := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
	taken := append(slices.Clone(pool), own...)
	peer := append(ranges("peer c3", "pod", []string{"10.244.0.0/16"}), ranges("peer c3", "service", []string{"10.96.0.0/12", "10.7.0.0/16"})...)
	str := func(as []fabricv1.CIDRAlias) string {
		var out []string
		for _, a := range as {
			out = append(out, a.CIDR+"→"+a.Alias)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name string
		had  []fabricv1.CIDRAlias
		used []string
		want string
	}{
		{"fresh: first free blocks; the range overlapping nothing keeps its addresses", nil, nil,
			"10.244.0.0/16→100.64.0.0/16 10.96.0.0/12→100.80.0.0/12"},
		{"another peer holds the first blocks", nil, []string{"100.64.0.0/16", "100.80.0.0/16"},
			"10.244.0.0/16→100.65.0.0/16 10.96.0.0/12→100.96.0.0/12"},
		{"what it had is kept", []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.70.0.0/16"}}, nil,
			"10.244.0.0/16→100.70.0.0/16 10.96.0.0/12→100.80.0.0/12"},
		{"what it had, now another's, is not", []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.70.0.0/16"}}, []string{"100.70.0.0/17"},
			"10.244.0.0/16→100.64.0.0/16 10.96.0.0/12→100.80.0.0/12"},
		{"what it had outside the pool is not", []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "192.168.0.0/16"}}, nil,
			"10.244.0.0/16→100.64.0.0/16 10.96.0.0/12→100.80.0.0/12"},
	} {
		var used []netip.Prefix
		for _, u := range c.used {
			used = append(used, netip.MustParsePrefix(u))
		}
		got, err := assignAliases(peer, taken, pool, c.had, used)
		if err != nil || str(got) != c.want {
			t.Errorf("%s: got %q (%v), want %q", c.name, str(got), err, c.want)
		}
	}
	// A peer range inside the pool is aliased too; one larger than the pool finds no room.
	got, err := assignAliases(ranges("peer c4", "pod", []string{"100.64.0.0/16"}), taken, pool, nil, nil)
	if err != nil || str(got) != "100.64.0.0/16→100.64.0.0/16" {
		t.Errorf("a peer range inside the pool: %q, %v", str(got), err)
	}
	if got, err := assignAliases(ranges("peer c4", "pod", []string{"10.0.0.0/8"}), taken, pool, nil, nil); err == nil {
		t.Errorf("a /8 fitted a /10 pool: %q", str(got))
	} else if want := "peer c4's pod range 10.0.0.0/8 overlaps a range already taken and the alias pool [100.64.0.0/10] has no free /8 for it"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if _, err := assignAliases(ranges("peer c4", "pod", []string{"fd00::/48"}), []netip.Prefix{netip.MustParsePrefix("fd00::/40")}, pool, nil, nil); err == nil {
		t.Error("an IPv6 range was given an alias from an IPv4 pool")
	}
}

func TestNextBlock(t *testing.T) {
	for in, want := range map[string]string{
		"100.64.0.0/16":    "100.65.0.0/16",
		"100.64.255.0/24":  "100.65.0.0/24",
		"10.0.0.0/12":      "10.16.0.0/12",
		"255.255.0.0/16":   "invalid Prefix",
		"fd00:0:0:ff::/64": "fd00:0:0:100::/64",
	} {
		if got := nextBlock(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("nextBlock(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSeenAs(t *testing.T) {
	own := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
	published := []fabricv1.PeerAliases{
		{ClusterID: "other", Aliases: []fabricv1.CIDRAlias{{CIDR: "10.1.0.0/16", Alias: "100.64.0.0/16"}}},
		{ClusterID: "c1", Aliases: []fabricv1.CIDRAlias{
			{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"},
			{CIDR: "10.96.0.0/12", Alias: "100.80.0.0/16"},
			{CIDR: "10.97.0.0/16", Alias: "100.81.0.0/16"},
			{CIDR: "10.244.0.0/16", Alias: "100.65.0.0/16"},
		}},
	}
	got, why := seenAs(published, "c1", own)
	if len(got) != 1 || got[0].Alias != "100.64.0.0/16" {
		t.Errorf("kept %v", got)
	}
	want := []string{"alias 100.80.0.0/16 for 10.96.0.0/12 is not a range of the same size",
		"10.97.0.0/16, which it says it aliases, is not a range of this cluster", "10.244.0.0/16 is aliased twice"}
	if !slices.Equal(why, want) {
		t.Errorf("why = %q\nwant  %q", why, want)
	}
}
