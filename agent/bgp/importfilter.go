package bgp

import (
	"fmt"
	"net/netip"

	"github.com/weft-net/weft/internal/netguard"
)

// ImportFilter decides which of the routes BGP peers announce a node installs
// (spec.bgp.import): a router, or whoever speaks BGP to the node, must not be able to pull
// the node's own traffic — to Services, other nodes, the metadata address, everything
// (a default route) — somewhere else.
type ImportFilter struct {
	// Own are this cluster's pod ranges: what lies in them is never imported, what covers
	// them only if allowed.
	Own []netip.Prefix
	// Services are this cluster's service ranges; Nodes its nodes' addresses.
	Services []netip.Prefix
	Nodes    []netip.Addr
	// Allow lets in prefixes equal to or inside one of these that a rule above (but Own)
	// refuses.
	Allow []netip.Prefix
	// MaxPrefixes bounds each peer's routes, by peer address (none: DefaultMaxPrefixes).
	MaxPrefixes map[netip.Addr]int
}

// DefaultMaxPrefixes is a peer's bound when its spec says none.
const DefaultMaxPrefixes = 1000

// Filter returns the routes to install, and for each peer with routes left out, why.
func (f ImportFilter) Filter(routes []Route) (kept []Route, refused map[netip.Addr]string) {
	refused = map[netip.Addr]string{}
	count := map[netip.Addr]int{}
	for _, r := range routes {
		count[r.Peer]++
	}
	over := map[netip.Addr]bool{}
	for peer, n := range count {
		limit := f.MaxPrefixes[peer]
		if limit <= 0 {
			limit = DefaultMaxPrefixes
		}
		if n > limit {
			over[peer] = true
			refused[peer] = fmt.Sprintf("announces %d prefixes, more than maxPrefixes %d: none imported", n, limit)
		}
	}
	left := map[netip.Addr][]string{}
	for _, r := range routes {
		if over[r.Peer] {
			continue
		}
		if why := f.refuse(r.Prefix.Masked()); why != "" {
			left[r.Peer] = append(left[r.Peer], r.Prefix.String()+" "+why)
			continue
		}
		kept = append(kept, r)
	}
	for peer, l := range left {
		refused[peer] = fmt.Sprintf("%d prefixes not imported, such as %s", len(l), l[0])
	}
	return kept, refused
}

// refuse says why p is not imported ("" if it is).
func (f ImportFilter) refuse(p netip.Prefix) string {
	for _, o := range f.Own {
		if o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
			return "lies in this cluster's pod range " + o.String()
		}
	}
	for _, a := range f.Allow {
		if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return ""
		}
	}
	if why := netguard.Refuse(p); why != "" {
		return why
	}
	for _, o := range f.Own {
		if p.Overlaps(o) {
			return "covers this cluster's pod range " + o.String()
		}
	}
	for _, s := range f.Services {
		if s.Overlaps(p) {
			return "overlaps this cluster's service range " + s.String()
		}
	}
	for _, n := range f.Nodes {
		if p.Contains(n) {
			return "covers node address " + n.String()
		}
	}
	return ""
}
