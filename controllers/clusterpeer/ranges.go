package clusterpeer

import (
	"fmt"
	"net/netip"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// namedRange is an address range and whose it is, for messages.
type namedRange struct {
	owner  string // "this cluster", "peer east"
	kind   string // "pod", "service"
	prefix netip.Prefix
}

func (n namedRange) String() string {
	return fmt.Sprintf("%s's %s range %s", n.owner, n.kind, n.prefix)
}

func ranges(owner, kind string, cidrs []string) []namedRange {
	var out []namedRange
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, namedRange{owner: owner, kind: kind, prefix: p.Masked()})
		}
	}
	return out
}

func cidrStrings(cidrs []fabricv1.CIDR) []string {
	out := make([]string, len(cidrs))
	for i, c := range cidrs {
		out[i] = string(c)
	}
	return out
}

// firstOverlap returns the first of the peer's ranges that overlaps a range already taken.
func firstOverlap(peer, taken []namedRange) (namedRange, namedRange, bool) {
	for _, p := range peer {
		for _, t := range taken {
			if p.prefix.Overlaps(t.prefix) {
				return p, t, true
			}
		}
	}
	return namedRange{}, namedRange{}, false
}

// precedes tells whether peer a keeps its ranges over peer b when they overlap: the peer
// that was there first (then the one whose name sorts first) keeps them.
func precedes(a, b *fabricv1.ClusterPeer) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}
