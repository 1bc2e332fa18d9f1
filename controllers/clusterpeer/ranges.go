package clusterpeer

import (
	"fmt"
	"net/netip"
	"slices"

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

// assignAliases gives each of the peer's ranges that overlaps taken (this cluster's ranges,
// the alias pool, earlier peers' ranges as seen here) an alias: the one it had (had, the
// peer's status.aliases) while that still fits, else the first free block of its size in the
// pool. used are the aliases other peers hold. The ranges that overlap nothing keep their
// addresses: no translation on their path. An error names the range that found no room.
func assignAliases(peer []namedRange, taken []netip.Prefix, pool []netip.Prefix, had []fabricv1.CIDRAlias, used []netip.Prefix) ([]fabricv1.CIDRAlias, error) {
	var out []fabricv1.CIDRAlias
	free := func(p netip.Prefix) bool {
		inPool := slices.ContainsFunc(pool, func(q netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) })
		return inPool && !slices.ContainsFunc(used, p.Overlaps)
	}
	for _, r := range peer {
		if !slices.ContainsFunc(taken, r.prefix.Overlaps) {
			continue
		}
		alias, ok := netip.Prefix{}, false
		for _, a := range had {
			if from, to, valid := a.Prefixes(); valid && from == r.prefix && free(to) {
				alias, ok = to, true
			}
		}
		for _, q := range pool {
			if ok {
				break
			}
			alias, ok = firstFree(q, r.prefix.Bits(), free)
		}
		if !ok {
			return nil, fmt.Errorf("%s overlaps a range already taken and the alias pool %v has no free /%d for it", r, pool, r.prefix.Bits())
		}
		used = append(used, alias)
		out = append(out, fabricv1.CIDRAlias{CIDR: r.prefix.String(), Alias: alias.String()})
	}
	return out, nil
}

// firstFree is the first block of length bits in pool that free accepts, in address order.
// It looks at no more than 1<<16 blocks.
func firstFree(pool netip.Prefix, bits int, free func(netip.Prefix) bool) (netip.Prefix, bool) {
	if bits < pool.Bits() || bits > pool.Addr().BitLen() {
		return netip.Prefix{}, false
	}
	n := 1 << min(bits-pool.Bits(), 16)
	block := netip.PrefixFrom(pool.Addr(), bits)
	for range n {
		if free(block) {
			return block, true
		}
		next := nextBlock(block)
		if !next.IsValid() || !pool.Contains(next.Addr()) {
			break
		}
		block = next
	}
	return netip.Prefix{}, false
}

// nextBlock is the block of the same length right after p (invalid past the end of the
// address space).
func nextBlock(p netip.Prefix) netip.Prefix {
	b := p.Masked().Addr().AsSlice()
	bit := p.Bits() - 1 // add 1 at the last bit of the network part
	for i := bit / 8; i >= 0; i-- {
		step := byte(1)
		if i == bit/8 {
			step = 1 << (7 - bit%8)
		}
		sum := uint16(b[i]) + uint16(step)
		b[i] = byte(sum)
		if sum < 0x100 {
			a, _ := netip.AddrFromSlice(b)
			return netip.PrefixFrom(a, p.Bits())
		}
		bit = 8*i - 1
		if bit < 0 {
			break
		}
	}
	return netip.Prefix{}
}

// seenAs is what the peer publishes of how it sees this cluster (the peer's
// status.peerAliases entry for ownID), kept where it names one of this cluster's ranges and
// an alias of its size; the rest is said in why.
func seenAs(published []fabricv1.PeerAliases, ownID string, own []netip.Prefix) (out []fabricv1.CIDRAlias, why []string) {
	for _, pa := range published {
		if pa.ClusterID != ownID {
			continue
		}
		for _, a := range pa.Aliases {
			from, _, ok := a.Prefixes()
			switch {
			case !ok:
				why = append(why, fmt.Sprintf("alias %s for %s is not a range of the same size", a.Alias, a.CIDR))
			case !slices.Contains(own, from):
				why = append(why, fmt.Sprintf("%s, which it says it aliases, is not a range of this cluster", a.CIDR))
			case slices.ContainsFunc(out, func(b fabricv1.CIDRAlias) bool { return b.CIDR == a.CIDR }):
				why = append(why, fmt.Sprintf("%s is aliased twice", a.CIDR))
			default:
				out = append(out, a)
			}
		}
	}
	return out, why
}
