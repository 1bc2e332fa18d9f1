package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// A router announcing a default route, the metadata address, this cluster's service range,
// a node's address or its pod range gets none of them installed; its other routes are; a
// peer announcing more than its bound gets none; what the administrator allows gets in
// (never the pod range).
func TestImportFilter(t *testing.T) {
	tor, chatty := netip.MustParseAddr("172.29.8.1"), netip.MustParseAddr("172.29.8.2")
	route := func(peer netip.Addr, p string) Route {
		return Route{Prefix: netip.MustParsePrefix(p), NextHop: peer, Peer: peer}
	}
	f := ImportFilter{
		Own:         []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Services:    []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		Nodes:       []netip.Addr{netip.MustParseAddr("172.29.8.11")},
		MaxPrefixes: map[netip.Addr]int{chatty: 2},
	}
	routes := []Route{
		route(tor, "192.168.50.0/24"), route(tor, "0.0.0.0/0"), route(tor, "169.254.169.254/32"),
		route(tor, "10.96.0.0/24"), route(tor, "172.29.8.0/24"), route(tor, "10.244.3.0/24"), route(tor, "224.0.0.0/8"),
		route(chatty, "192.168.60.0/24"), route(chatty, "192.168.61.0/24"), route(chatty, "192.168.62.0/24"),
	}
	kept, refused := f.Filter(routes)
	if !slices.Equal(kept, []Route{route(tor, "192.168.50.0/24")}) {
		t.Errorf("kept %v, want only 192.168.50.0/24 from %s", kept, tor)
	}
	if !strings.HasPrefix(refused[tor], "6 prefixes not imported, such as 0.0.0.0/0 is a default route") {
		t.Errorf("%s: %q", tor, refused[tor])
	}
	if refused[chatty] != "announces 3 prefixes, more than maxPrefixes 2: none imported" {
		t.Errorf("%s: %q", chatty, refused[chatty])
	}
	for p, want := range map[string]string{
		"169.254.169.254/32": "covers link-local",
		"10.96.0.0/24":       "overlaps this cluster's service range 10.96.0.0/16",
		"172.29.8.0/24":      "covers node address 172.29.8.11",
		"10.244.3.0/24":      "lies in this cluster's pod range 10.244.0.0/16",
		"224.0.0.0/8":        "covers multicast",
	} {
		if got := f.refuse(netip.MustParsePrefix(p)); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}

	// Allowed by the administrator: the default route and the service range; never the
	// pod range.
	f.Allow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	kept, _ = f.Filter([]Route{route(tor, "0.0.0.0/0"), route(tor, "10.96.0.0/24"), route(tor, "10.244.3.0/24")})
	if !slices.Equal(kept, []Route{route(tor, "0.0.0.0/0"), route(tor, "10.96.0.0/24")}) {
		t.Errorf("with 0.0.0.0/0 allowed kept %v, want the default route and the service range", kept)
	}
	// A peer's bound defaults to DefaultMaxPrefixes.
	many := make([]Route, 0, DefaultMaxPrefixes+1)
	for i := range DefaultMaxPrefixes + 1 {
		many = append(many, route(tor, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i / 256), byte(i % 256)}), 32).String()))
	}
	if kept, refused := (ImportFilter{}).Filter(many); len(kept) != 0 || refused[tor] == "" {
		t.Errorf("%d prefixes from a peer without a bound: %d kept (%q)", len(many), len(kept), refused[tor])
	}
}
