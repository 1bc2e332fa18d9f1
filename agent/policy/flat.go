package policy

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// MaxFlatRules is how many rules one pod's direction may have in the flat form (one bit
// each in a Bits).
const MaxFlatRules = 256

// Bits is a set of a flat list's rules, rule i at bit i%64 of word i/64.
type Bits [MaxFlatRules / 64]uint64

// Set adds rule i.
func (b *Bits) Set(i int) { b[i/64] |= 1 << (i % 64) }

// Or adds the rules of o.
func (b *Bits) Or(o Bits) {
	for i := range b {
		b[i] |= o[i]
	}
}

// And keeps the rules also in o.
func (b Bits) And(o Bits) Bits {
	for i := range b {
		b[i] &= o[i]
	}
	return b
}

// Lowest is the first rule of the set, -1 if it is empty.
func (b Bits) Lowest() int {
	for i, w := range b {
		if w != 0 {
			return i*64 + bits.TrailingZeros64(w)
		}
	}
	return -1
}

// ClearBelow removes the rules before n.
func (b *Bits) ClearBelow(n int) {
	for i := range b {
		switch {
		case n >= (i+1)*64:
			b[i] = 0
		case n > i*64:
			b[i] &^= (uint64(1) << (n - i*64)) - 1
		}
	}
}

// ErrTooManyRules: a pod's direction has more rules than the flat form holds.
var ErrTooManyRules = errors.New("too many rules for one pod and direction")

// FlatRule is a rule of a flat list; a Pass rule jumps to TierEnd (the index after its
// tier's last rule).
type FlatRule struct {
	Rule
	TierEnd int
}

// IsolationPolicy names the drop that ends a NetworkPolicy-isolated pod's direction: what no
// NetworkPolicy allows (its rule in flat lists, its counters and logs).
const IsolationPolicy = "networkpolicy-isolation"

// Flat is one pod's direction of the pipeline as a single first-match list, for datapaths
// that evaluate per pod (eBPF): the rules applying to the pod, stage by stage, a Pass rule
// jumping to the end of its stage; for a pod a NetworkPolicy isolates, its allow rules and a
// final rule dropping everything (so the stages after it are never reached). Empty: nothing
// polices the pod's direction.
func (p *Pipeline) Flat(pod netip.Addr, dir networkingv1.PolicyType) ([]FlatRule, error) {
	var out []FlatRule
	for _, st := range p.Stages(dir) {
		start := len(out)
		for _, r := range st.Rules {
			if slices.Contains(r.AppliedTo, pod) {
				out = append(out, FlatRule{Rule: r.Rule})
			}
		}
		isolated := st.NetworkPolicy() && slices.Contains(st.Isolated, pod)
		if isolated {
			out = append(out, FlatRule{Rule: Rule{Policy: IsolationPolicy, Action: fabricv1.ActionDrop, AnyPeer: true, AnyPort: true}})
		}
		for i := start; i < len(out); i++ {
			out[i].TierEnd = len(out)
		}
		if isolated {
			break
		}
	}
	if len(out) > MaxFlatRules {
		return nil, fmt.Errorf("%w: pod %s %s has %d (at most %d)", ErrTooManyRules, pod, dir, len(out), MaxFlatRules)
	}
	return out, nil
}

// AnyPortMask is the rules matching every port and protocol: the port mask of protocols
// without ports (ICMP and the rest).
func AnyPortMask(rules []FlatRule) Bits {
	var m Bits
	for i, r := range rules {
		if r.AnyPort {
			m.Set(i)
		}
	}
	return m
}

// DecideFlat evaluates a flat list for a connection with the given remote end.
func DecideFlat(rules []FlatRule, remote netip.Addr, c oracle.Conn) fabricv1.PolicyAction {
	for i := 0; i < len(rules); {
		r := rules[i]
		if !r.matches(remote, c) {
			i++
			continue
		}
		if r.Action == fabricv1.ActionPass {
			i = r.TierEnd
			continue
		}
		return r.Action
	}
	return fabricv1.ActionAllow
}

// PrefixMask is an entry of a longest-prefix-match table: the rules (bits) that match every
// address of the prefix.
type PrefixMask struct {
	Prefix netip.Prefix
	Mask   Bits
}

// PeerMasks is the flat list's peer table. Looking up an address's longest matching prefix
// yields exactly the rules whose peers contain the address: each prefix a rule names gets the
// rules of every prefix that contains it (the longest match for an address contains, or is,
// every other matching prefix). A /0 holds the rules matching any peer.
func PeerMasks(rules []FlatRule, family int) []PrefixMask {
	any := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if family == 6 {
		any = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	type entry struct {
		p netip.Prefix
		m Bits
	}
	var own []entry // each rule's prefixes
	set := map[netip.Prefix]bool{any: true}
	for i, r := range rules {
		if r.AnyPeer {
			own = append(own, entry{any, bit(i)})
			continue
		}
		for _, p := range r.Peers {
			if p.Addr().BitLen() != any.Addr().BitLen() {
				continue
			}
			p = p.Masked()
			own = append(own, entry{p, bit(i)})
			set[p] = true
		}
	}
	var out []PrefixMask
	for p := range set {
		var m Bits
		for _, e := range own {
			if e.p.Bits() <= p.Bits() && e.p.Contains(p.Addr()) {
				m.Or(e.m)
			}
		}
		out = append(out, PrefixMask{p, m})
	}
	slices.SortFunc(out, func(a, b PrefixMask) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}

// PortMask is an entry of a port table: protocol, and ports Value/Mask-bits (a prefix of the
// 16-bit port; Bits 0 is every port).
type PortMask struct {
	Protocol corev1.Protocol
	Value    uint16
	Bits     int
	Mask     Bits
}

// PortMasks is the flat list's port table, built like PeerMasks over port prefixes.
func PortMasks(rules []FlatRule) []PortMask {
	type key struct {
		proto corev1.Protocol
		value uint16
		bits  int
	}
	type entry struct {
		k key
		m Bits
	}
	var own []entry
	set := map[key]bool{}
	for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
		set[key{proto, 0, 0}] = true
	}
	for i, r := range rules {
		if r.AnyPort {
			for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
				own = append(own, entry{key{proto, 0, 0}, bit(i)})
			}
			continue
		}
		for _, pr := range r.Ports {
			for _, b := range PortBlocks(int(pr.From), int(pr.To)) {
				k := key{pr.Protocol, uint16(b[0]), b[1]}
				own = append(own, entry{k, bit(i)})
				set[k] = true
			}
		}
	}
	contains := func(a, b key) bool { // a contains b
		return a.proto == b.proto && a.bits <= b.bits && (a.bits == 0 || b.value>>(16-a.bits) == a.value>>(16-a.bits))
	}
	var out []PortMask
	for k := range set {
		var m Bits
		for _, e := range own {
			if contains(e.k, k) {
				m.Or(e.m)
			}
		}
		out = append(out, PortMask{k.proto, k.value, k.bits, m})
	}
	slices.SortFunc(out, func(a, b PortMask) int {
		if a.Protocol != b.Protocol {
			if a.Protocol < b.Protocol {
				return -1
			}
			return 1
		}
		if a.Value != b.Value {
			return int(a.Value) - int(b.Value)
		}
		return a.Bits - b.Bits
	})
	return out
}

// PortBlocks covers the ports [lo, hi] with aligned power-of-two blocks, as few as it takes:
// (first port, prefix length in bits of the 16-bit port).
func PortBlocks(lo, hi int) [][2]int {
	lo, hi = max(lo, 0), min(hi, 65535)
	var out [][2]int
	for lo <= hi {
		size := 1
		for lo%(size*2) == 0 && lo+size*2-1 <= hi && size < 65536 {
			size *= 2
		}
		out = append(out, [2]int{lo, 16 - bits.TrailingZeros(uint(size))})
		lo += size
	}
	return out
}

// DecideMasks evaluates the tables as a datapath does: the longest matching peer prefix and
// port prefix give two sets; the lowest rule in both is the first matching rule; a Pass rule
// clears every rule below its tier's end and the search goes on.
func DecideMasks(rules []FlatRule, peers []PrefixMask, ports []PortMask, remote netip.Addr, c oracle.Conn) fabricv1.PolicyAction {
	var pm Bits
	best := -1
	for _, e := range peers {
		if e.Prefix.Contains(remote) && e.Prefix.Bits() > best {
			best, pm = e.Prefix.Bits(), e.Mask
		}
	}
	var qm Bits
	best = -1
	for _, e := range ports {
		if e.Protocol == c.Protocol && e.Bits > best && (e.Bits == 0 || uint16(c.Port)>>(16-e.Bits) == e.Value>>(16-e.Bits)) {
			best, qm = e.Bits, e.Mask
		}
	}
	m := pm.And(qm)
	for i := m.Lowest(); i >= 0; i = m.Lowest() {
		if rules[i].Action != fabricv1.ActionPass {
			return rules[i].Action
		}
		m.ClearBelow(rules[i].TierEnd)
	}
	return fabricv1.ActionAllow
}

func bit(i int) Bits {
	var b Bits
	b.Set(i)
	return b
}
