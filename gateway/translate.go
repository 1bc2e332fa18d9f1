package gateway

import (
	"fmt"
	"net/netip"
	"strings"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/nft"
)

// Overlapping clusters (docs/overlap.md). Where a peer's ranges overlap this cluster's (or
// another peer's), this cluster sees the peer at aliases (ClusterPeer status.aliases), and
// the peer may see this cluster at aliases too (status.seenAs). Every packet a gateway sends
// into a tunnel is put into the receiver's view before it leaves: the destination, an alias
// here, becomes the peer's real address, and a source in this cluster's ranges becomes the
// alias the peer knows it by. The receiving gateway then has nothing to do, what it takes
// out of the tunnel is already in its cluster's view, and every node, policy and pod there
// sees the sender at one address of its own.
//
// The rewrite is stateless (nftables payload statements, address bits under the mask kept,
// checksums fixed by the kernel), after routing, on the way into the tunnel devices: no
// connection state that a gateway's failure would lose — a flow moved to another gateway is
// rewritten there the same way — and no cost but a few rules per aliased range. Replies are
// rewritten by the peer's gateways the same way on their way back.

// Translation is what this gateway rewrites in what it sends to one peer.
type Translation struct {
	Peer string // cluster ID
	// To is the peer as this cluster sees it (where packets for it are routed).
	To []netip.Prefix
	// Destination maps the peer's aliases here to its real ranges.
	Destination []fabricv1.RangeMap // Local: the alias, Remote: the peer's range
	// Source maps this cluster's ranges to the aliases the peer knows them by.
	Source []fabricv1.RangeMap // Local: this cluster's range, Remote: the peer's alias for it
}

// Translations are the rewrites for the Accepted peers that have aliases either way.
func Translations(peers []fabricv1.ClusterPeer) []Translation {
	var out []Translation
	for _, p := range peers {
		if !p.Status.InForce() {
			continue
		}
		t := Translation{Peer: p.Spec.ClusterID, To: p.Status.Prefixes(), Destination: p.Status.AliasedRanges()}
		for _, a := range p.Status.SeenAs {
			if own, alias, ok := a.Prefixes(); ok && own != alias {
				t.Source = append(t.Source, fabricv1.RangeMap{Local: own, Remote: alias})
			}
		}
		if len(t.Destination)+len(t.Source) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// translateTable is the nftables table (replaced whole, in one transaction) that rewrites
// what leaves by the tunnel devices (ifname, an nft pattern) for ts. It is a table apart
// from weft-gateway's filter, which a restart makes again: the rewrites stay in force while
// a restarted gateway waits to read the peers.
func translateTable(ifname string, ts []Translation) string {
	var b strings.Builder
	b.WriteString("table inet weft-translate\ndelete table inet weft-translate\ntable inet weft-translate {\n")
	b.WriteString("\tchain to_tunnel {\n\t\ttype filter hook postrouting priority mangle; policy accept;\n")
	for _, t := range ts {
		// Sources first, while the destination is still this cluster's view of the peer.
		for _, s := range t.Source {
			fam := family(s.Local)
			for _, to := range t.To {
				if family(to) != fam {
					continue
				}
				fmt.Fprintf(&b, "\t\toifname %q %s daddr %s %s saddr %s %s saddr set %s saddr & %s | %s comment %q\n",
					ifname, fam, to, fam, s.Local, fam, fam, hostMask(s.Local), s.Remote.Masked().Addr(), "to "+t.Peer+": as it sees this cluster")
			}
		}
		for _, d := range t.Destination {
			fam := family(d.Local)
			fmt.Fprintf(&b, "\t\toifname %q %s daddr %s %s daddr set %s daddr & %s | %s comment %q\n",
				ifname, fam, d.Local, fam, fam, hostMask(d.Local), d.Remote.Masked().Addr(), "to "+t.Peer+": its own addresses")
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "ip"
	}
	return "ip6"
}

// hostMask is the address with p's host bits set.
func hostMask(p netip.Prefix) netip.Addr {
	b := make([]byte, p.Addr().BitLen()/8)
	for i := range b {
		switch bits := p.Bits() - 8*i; {
		case bits <= 0:
			b[i] = 0xff
		case bits < 8:
			b[i] = 0xff >> bits
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// setTranslation applies translateTable.
func setTranslation(ifname string, ts []Translation) error {
	return applyTranslation(translateTable(ifname, ts))
}

// applyTranslation applies a translateTable script.
func applyTranslation(script string) error {
	if err := nft.Apply(script); err != nil {
		return fmt.Errorf("nft (translation for overlapping peers): %w", err)
	}
	return nil
}
