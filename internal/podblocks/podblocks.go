// Package podblocks says which pod blocks are valid for a cluster: each inside the
// ClusterNetwork's podCIDRs, of its node mask size, at most one per IP family, and — across
// nodes — no two overlapping. The operator checks the blocks it finds before counting them
// as taken; every agent checks every other node's blocks before routing to them, so a
// FabricNode that claims another node's block, 0.0.0.0/0 or the cloud metadata address
// changes no route anywhere.
package podblocks

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Default node mask sizes, when the ClusterNetwork sets none.
const (
	DefaultMaskIPv4 = 24
	DefaultMaskIPv6 = 80
)

// Pools are the ranges blocks come from and the size of a block in each family.
type Pools struct {
	CIDRs          []netip.Prefix
	MaskV4, MaskV6 int
}

// Of returns the ClusterNetwork's valid pod ranges and block sizes.
func Of(cn *fabricv1.ClusterNetwork) Pools {
	p := Pools{MaskV4: int(cn.Spec.IPAM.NodeMaskSizeIPv4), MaskV6: int(cn.Spec.IPAM.NodeMaskSizeIPv6)}
	for _, c := range cn.Spec.PodCIDRs {
		if pr, err := netip.ParsePrefix(string(c)); err == nil && pr.Masked() == pr {
			p.CIDRs = append(p.CIDRs, pr)
		}
	}
	if p.MaskV4 == 0 {
		p.MaskV4 = DefaultMaskIPv4
	}
	if p.MaskV6 == 0 {
		p.MaskV6 = DefaultMaskIPv6
	}
	return p
}

// MaskSize is the size of a block in pool's family.
func (p Pools) MaskSize(pool netip.Prefix) int {
	if pool.Addr().Is4() {
		return p.MaskV4
	}
	return p.MaskV6
}

// CheckOne checks one block on its own: a network address inside a pool, of the pool's
// block size. It returns the block, or the RefusedBlock reason and a message.
func (p Pools) CheckOne(c fabricv1.CIDR) (netip.Prefix, string, string) {
	b, err := netip.ParsePrefix(string(c))
	if err != nil {
		return netip.Prefix{}, fabricv1.BlockInvalid, err.Error()
	}
	if b.Masked() != b {
		return netip.Prefix{}, fabricv1.BlockInvalid, fmt.Sprintf("%s is not a network address", b)
	}
	for _, pool := range p.CIDRs {
		if pool.Addr().Is4() != b.Addr().Is4() || !pool.Contains(b.Addr()) || b.Bits() < pool.Bits() {
			continue
		}
		if want := p.MaskSize(pool); b.Bits() != want {
			return netip.Prefix{}, fabricv1.BlockWrongSize, fmt.Sprintf("blocks of %s are /%d", pool, want)
		}
		return b, "", ""
	}
	return netip.Prefix{}, fabricv1.BlockOutsidePodCIDRs, fmt.Sprintf("not inside the cluster's podCIDRs %v", p.CIDRs)
}

// Own reads a node's blocks as the operator gave them: valid only if every one passes
// CheckOne, no family repeats, and every pool has its block.
func (p Pools) Own(cidrs []fabricv1.CIDR) ([]netip.Prefix, bool) {
	out, ok := p.Valid(cidrs)
	if !ok {
		return nil, false
	}
	return out, len(out) > 0 && len(out) == len(p.CIDRs)
}

// Valid reads blocks that may still lack a family: each passes CheckOne and no family
// repeats; ok is false (and the blocks nil) when one does not.
func (p Pools) Valid(cidrs []fabricv1.CIDR) (blocks []netip.Prefix, ok bool) {
	seen := map[bool]bool{}
	for _, c := range cidrs {
		b, reason, _ := p.CheckOne(c)
		if reason != "" || seen[b.Addr().Is4()] {
			return nil, false
		}
		seen[b.Addr().Is4()] = true
		blocks = append(blocks, b)
	}
	return blocks, true
}

// Claim is what a FabricNode says about its node's blocks.
type Claim struct {
	Node string
	// Since orders claims: of two overlapping blocks the older claim keeps its block.
	Since time.Time
	CIDRs []fabricv1.CIDR
}

// Accepted is a node with the blocks it may be routed to.
type Accepted struct {
	Node   string
	Blocks []netip.Prefix
}

// Filter checks the other nodes' claims as node self's agent must before routing to them:
// each block on its own (CheckOne), then against the blocks already accepted — self's own
// first (the agent knows those are its own), then the older claims — refusing any that
// overlaps one of them, and a second block of a family. Accepted nodes come back sorted by
// name, with at least one block each; refused blocks in claim order.
func (p Pools) Filter(self string, own []netip.Prefix, claims []Claim) ([]Accepted, []fabricv1.RefusedBlock) {
	type holder struct {
		node  string
		block netip.Prefix
	}
	held := make([]holder, 0, len(own)+len(claims))
	for _, b := range own {
		held = append(held, holder{self, b})
	}
	sorted := slices.Clone(claims)
	slices.SortStableFunc(sorted, func(a, b Claim) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.Node, b.Node)
	})
	var accepted []Accepted
	var refused []fabricv1.RefusedBlock
	for _, c := range sorted {
		if c.Node == self {
			continue
		}
		var blocks []netip.Prefix
		families := map[bool]bool{}
	claim:
		for _, raw := range c.CIDRs {
			b, reason, msg := p.CheckOne(raw)
			if reason == "" && families[b.Addr().Is4()] {
				reason, msg = fabricv1.BlockInvalid, "a second block of the same IP family"
			}
			if reason != "" {
				refused = append(refused, fabricv1.RefusedBlock{Node: c.Node, CIDR: string(raw), Reason: reason, Message: msg})
				continue
			}
			for _, h := range held {
				if h.block.Overlaps(b) {
					refused = append(refused, fabricv1.RefusedBlock{Node: c.Node, CIDR: string(raw), Reason: fabricv1.BlockOverlaps,
						Message: fmt.Sprintf("overlaps %s, held by node %s", h.block, h.node)})
					continue claim
				}
			}
			families[b.Addr().Is4()] = true
			blocks = append(blocks, b)
			held = append(held, holder{c.Node, b})
		}
		if len(blocks) > 0 {
			accepted = append(accepted, Accepted{Node: c.Node, Blocks: blocks})
		}
	}
	slices.SortFunc(accepted, func(a, b Accepted) int { return cmp.Compare(a.Node, b.Node) })
	return accepted, refused
}
