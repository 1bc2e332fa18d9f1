// Package policy compiles Tiers, FabricPolicies and Kubernetes NetworkPolicies into the form a
// datapath driver enforces: for each pod of the node and each direction, tier segments of
// first-match rules over concrete address sets and port ranges, then the NetworkPolicy layer,
// then the baseline segments. Selectors, named ports and FQDN answers are resolved here, so a
// driver only matches addresses, protocols and ports. The compiled form decides exactly as
// the reference evaluator (agent/policy/oracle) does; tests check that on random worlds.
//
// It neither watches the API nor programs a datapath.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Rule is a compiled rule: it matches a remote address in Peers (all addresses when
// AnyPeer) and a protocol/port in Ports (all when AnyPort).
type Rule struct {
	// Policy and Name identify the source rule (logs).
	Policy, Name string
	Action       fabricv1.PolicyAction
	AnyPeer      bool
	Peers        []netip.Prefix
	AnyPort      bool
	Ports        []PortRange
	Logged       bool
	// rank orders the rule among all rules of its tier (or of the NetworkPolicy layer) for
	// every pod alike: the source policy's place, the rule's index, the expansion's index.
	rank [3]int
	// ownPeers: the peers are what this pod was told (FQDN answers), so the same rule of
	// another pod may name others.
	ownPeers bool
}

// PortRange is an inclusive range of ports of one protocol.
type PortRange struct {
	Protocol corev1.Protocol
	From, To int32
}

// Segment is one tier's rules for a pod and direction, in evaluation order.
type Segment struct {
	Tier  string
	Rules []Rule
}

// Side is everything that decides one direction of one pod.
type Side struct {
	// Before are the tiers before Kubernetes NetworkPolicy, After the baseline tiers.
	Before, After []Segment
	// Isolated: a NetworkPolicy selects the pod for this direction; then only NPAllow
	// rules let a connection through and After is never consulted.
	Isolated bool
	NPAllow  []Rule
}

// Program is the compiled policy of a set of pods.
type Program struct {
	// Sides by pod address and direction.
	Sides map[netip.Addr]map[networkingv1.PolicyType]*Side
	// tiers are the tiers in evaluation order.
	tiers []fabricv1.Tier
}

// Compile compiles the policy of world for the given pods (a node's; nil: all of world's).
func Compile(w *oracle.World, pods []oracle.Pod) *Program {
	if pods == nil {
		pods = w.Pods
	}
	c := compiler{w: w, byIP: map[netip.Addr]oracle.Pod{}, selectors: map[*metav1.LabelSelector]labels.Selector{},
		peerSets: map[peerKey][]netip.Prefix{}, polRank: map[string]int{}}
	for _, p := range w.Pods {
		c.byIP[p.IP] = p
	}
	tiers := oracle.OrderedTiers(w.Tiers)
	for _, t := range tiers {
		for i, p := range oracle.PoliciesIn(w.Policies, t.Name, func(*fabricv1.FabricPolicy) bool { return true }) {
			c.polRank[p.Name] = i
		}
	}
	prog := &Program{Sides: map[netip.Addr]map[networkingv1.PolicyType]*Side{}, tiers: tiers}
	for _, pod := range pods {
		prog.Sides[pod.IP] = map[networkingv1.PolicyType]*Side{}
		for _, dir := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
			s := &Side{}
			for _, t := range tiers {
				seg := c.segment(t, pod, dir)
				if len(seg.Rules) == 0 {
					continue
				}
				if t.Spec.Priority < fabricv1.NetworkPolicyTierPriority {
					s.Before = append(s.Before, seg)
				} else {
					s.After = append(s.After, seg)
				}
			}
			s.Isolated, s.NPAllow = c.networkPolicy(pod, dir)
			prog.Sides[pod.IP][dir] = s
		}
	}
	return prog
}

type compiler struct {
	w    *oracle.World
	byIP map[netip.Addr]oracle.Pod
	// selectors are parsed once; peerSets (a rule's peers, which do not depend on the pod
	// the rule applies to) are resolved once per compile.
	selectors map[*metav1.LabelSelector]labels.Selector
	peerSets  map[peerKey][]netip.Prefix
	// polRank is each policy's place in its tier's evaluation order.
	polRank map[string]int
}

// peerKey names a FabricPolicy rule's peer list; pod is set where the list names FQDN peers
// (what they match is what that pod was told).
type peerKey struct {
	policy string
	dir    networkingv1.PolicyType
	rule   int
	pod    netip.Addr
}

// selects is oracle.Selects with each selector parsed once.
func (c *compiler) selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, ok := c.selectors[sel]
	if !ok {
		var err error
		if s, err = metav1.LabelSelectorAsSelector(sel); err != nil {
			s = labels.Nothing()
		}
		c.selectors[sel] = s
	}
	return s.Matches(labels.Set(l))
}

// appliesTo is World.AppliesTo with cached selectors.
func (c *compiler) appliesTo(p *fabricv1.FabricPolicy, pod oracle.Pod) bool {
	for i := range p.Spec.AppliedTo {
		t := &p.Spec.AppliedTo[i]
		if c.selects(t.PodSelector, pod.Labels) && c.selects(t.NamespaceSelector, c.w.Namespaces[pod.Namespace]) {
			return true
		}
	}
	return false
}

func (c *compiler) segment(t fabricv1.Tier, pod oracle.Pod, dir networkingv1.PolicyType) Segment {
	pols := oracle.PoliciesIn(c.w.Policies, t.Name, func(p *fabricv1.FabricPolicy) bool { return c.appliesTo(p, pod) })
	seg := Segment{Tier: t.Name}
	for _, p := range pols {
		for i, r := range oracle.Rules(p, dir) {
			peers := oracle.Peers(r, dir)
			meta := Rule{Policy: p.Name, Name: oracle.RuleName(r, dir, i), Action: r.Action, Logged: r.EnableLogging,
				rank: [3]int{c.polRank[p.Name], i}, ownPeers: hasFQDN(peers)}
			var ports []portSpec
			for _, pp := range r.Ports {
				ports = append(ports, portSpec{pp.Protocol, pp.Port, pp.EndPort})
			}
			key := peerKey{p.Name, dir, i, netip.Addr{}}
			if meta.ownPeers {
				key.pod = pod.IP
			}
			set, ok := c.peerSets[key]
			if !ok {
				set = c.fabricPeers(peers, pod)
				c.peerSets[key] = set
			}
			seg.Rules = append(seg.Rules, c.expand(meta, len(peers) == 0, set, ports, pod, dir)...)
		}
	}
	return seg
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func hasFQDN(peers []fabricv1.PolicyPeer) bool {
	return slices.ContainsFunc(peers, func(p fabricv1.PolicyPeer) bool { return p.FQDN != "" })
}

// fabricPeers are the addresses of a rule's peers, for pod (FQDN peers: what it was told).
func (c *compiler) fabricPeers(peers []fabricv1.PolicyPeer, pod oracle.Pod) []netip.Prefix {
	var out []netip.Prefix
	for i := range peers {
		p := &peers[i]
		switch {
		case p.IPBlock != nil:
			out = append(out, blockMinus(p.IPBlock.CIDR, p.IPBlock.Except)...)
		case p.FQDN != "":
			for name, addrs := range c.w.Resolved[pod.IP] {
				if oracle.FQDNMatches(p.FQDN, name) {
					for _, a := range addrs {
						out = append(out, host(a))
					}
				}
			}
		case p.Cluster != "":
			out = append(out, c.w.Clusters[p.Cluster]...)
		default:
			for _, rp := range c.w.Pods {
				if c.selects(p.PodSelector, rp.Labels) && c.selects(p.NamespaceSelector, c.w.Namespaces[rp.Namespace]) {
					out = append(out, host(rp.IP))
				}
			}
		}
	}
	return out
}

// portSpec is a port entry of a FabricPolicy or NetworkPolicy rule.
type portSpec struct {
	proto corev1.Protocol
	port  *intstr.IntOrString
	end   *int32
}

// expand compiles one source rule into first-match rules with the same action, consecutive
// (so their union is the source rule). Numeric ports go into one rule; a named port resolves
// on the destination: the pod itself for ingress, and for egress each peer pod that has a
// port of that name — one rule per such pod, as the number differs from pod to pod (a name no
// pod has matches nothing, like a name on an address that is no pod).
func (c *compiler) expand(meta Rule, anyPeer bool, peers []netip.Prefix, ports []portSpec, pod oracle.Pod, dir networkingv1.PolicyType) []Rule {
	base := meta
	base.AnyPeer, base.Peers, base.AnyPort = anyPeer, peers, len(ports) == 0
	var named []portSpec
	for _, ps := range ports {
		proto := ps.proto
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		switch {
		case ps.port == nil:
			base.Ports = append(base.Ports, PortRange{proto, 1, 65535})
		case ps.port.Type == intstr.Int:
			hi := ps.port.IntVal
			if ps.end != nil {
				hi = *ps.end
			}
			base.Ports = append(base.Ports, PortRange{proto, ps.port.IntVal, hi})
		case dir == networkingv1.PolicyTypeIngress:
			for _, np := range pod.Ports {
				if np.Name == ps.port.StrVal && np.Protocol == proto {
					base.Ports = append(base.Ports, PortRange{proto, np.Port, np.Port})
				}
			}
		default:
			named = append(named, portSpec{proto, ps.port, nil})
		}
	}
	var out []Rule
	if base.AnyPort || len(base.Ports) > 0 {
		out = append(out, base)
	}
	// The expansion index is the same for every pod the rule applies to: only ingress rules
	// resolve names on the pod itself, and those expand to the one base rule.
	next := 1
	for _, ps := range named {
		for _, rp := range c.w.Pods {
			if !anyPeer && !containsAddr(peers, rp.IP) {
				continue
			}
			for _, np := range rp.Ports {
				if np.Name == ps.port.StrVal && np.Protocol == ps.proto {
					r := meta
					r.Peers = []netip.Prefix{host(rp.IP)}
					r.Ports = []PortRange{{ps.proto, np.Port, np.Port}}
					r.rank[2] = next
					next++
					out = append(out, r)
				}
			}
		}
	}
	return out
}

func containsAddr(set []netip.Prefix, a netip.Addr) bool {
	for _, p := range set {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// blockMinus is cidr without the exceptions, as prefixes.
func blockMinus(cidr string, except []string) []netip.Prefix {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil
	}
	set := []netip.Prefix{p.Masked()}
	for _, e := range except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			continue
		}
		var next []netip.Prefix
		for _, s := range set {
			next = append(next, subtract(s, ep.Masked())...)
		}
		set = next
	}
	return set
}

// subtract returns a without b, as prefixes.
func subtract(a, b netip.Prefix) []netip.Prefix {
	if a.Addr().BitLen() != b.Addr().BitLen() || !a.Overlaps(b) {
		return []netip.Prefix{a}
	}
	if b.Bits() <= a.Bits() {
		return nil // b covers a
	}
	// Split a in halves until the half that holds b is b itself.
	var out []netip.Prefix
	for cur := a; cur.Bits() < b.Bits(); {
		lo, hi := halves(cur)
		if lo.Contains(b.Addr()) {
			out, cur = append(out, hi), lo
		} else {
			out, cur = append(out, lo), hi
		}
	}
	return out
}

func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits).Masked()
	b := lo.Addr().AsSlice()
	i := (bits - 1) / 8
	b[i] |= 0x80 >> ((bits - 1) % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}

func (c *compiler) networkPolicy(pod oracle.Pod, dir networkingv1.PolicyType) (bool, []Rule) {
	isolated := false
	var allow []Rule
	for npIndex, np := range c.w.NetworkPolicies {
		if np.Namespace != pod.Namespace || !oracle.Selects(&np.Spec.PodSelector, pod.Labels) || !oracle.HasType(np, dir) {
			continue
		}
		isolated = true
		add := func(ruleIndex int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) {
			var set []netip.Prefix
			for _, p := range peers {
				if p.IPBlock != nil {
					set = append(set, blockMinus(p.IPBlock.CIDR, p.IPBlock.Except)...)
					continue
				}
				for _, rp := range c.w.Pods {
					inNS := rp.Namespace == np.Namespace
					if p.NamespaceSelector != nil {
						inNS = oracle.Selects(p.NamespaceSelector, c.w.Namespaces[rp.Namespace])
					}
					if inNS && oracle.Selects(p.PodSelector, rp.Labels) {
						set = append(set, host(rp.IP))
					}
				}
			}
			var specs []portSpec
			for _, pp := range ports {
				proto := corev1.ProtocolTCP
				if pp.Protocol != nil {
					proto = *pp.Protocol
				}
				specs = append(specs, portSpec{proto, pp.Port, pp.EndPort})
			}
			meta := Rule{Policy: np.Namespace + "/" + np.Name, Name: fmt.Sprintf("%s-%d", strings.ToLower(string(dir)), ruleIndex),
				Action: fabricv1.ActionAllow, rank: [3]int{npIndex, ruleIndex}}
			allow = append(allow, c.expand(meta, len(peers) == 0, set, specs, pod, dir)...)
		}
		if dir == networkingv1.PolicyTypeIngress {
			for i, r := range np.Spec.Ingress {
				add(i, r.From, r.Ports)
			}
		} else {
			for i, r := range np.Spec.Egress {
				add(i, r.To, r.Ports)
			}
		}
	}
	return isolated, allow
}

// Decide evaluates the compiled program for a connection the way a datapath would: egress
// at the source (if it is one of the program's pods), then ingress at the destination.
func (p *Program) Decide(c oracle.Conn) fabricv1.PolicyAction {
	if s, ok := p.Sides[c.Src][networkingv1.PolicyTypeEgress]; ok {
		if a := s.decide(c.Dst, c); a != fabricv1.ActionAllow {
			return a
		}
	}
	if s, ok := p.Sides[c.Dst][networkingv1.PolicyTypeIngress]; ok {
		return s.decide(c.Src, c)
	}
	return fabricv1.ActionAllow
}

func (s *Side) decide(remote netip.Addr, c oracle.Conn) fabricv1.PolicyAction {
	if a, ok := segments(s.Before, remote, c); ok {
		return a
	}
	if s.Isolated {
		for _, r := range s.NPAllow {
			if r.matches(remote, c) {
				return fabricv1.ActionAllow
			}
		}
		return fabricv1.ActionDrop
	}
	if a, ok := segments(s.After, remote, c); ok {
		return a
	}
	return fabricv1.ActionAllow
}

func segments(segs []Segment, remote netip.Addr, c oracle.Conn) (fabricv1.PolicyAction, bool) {
	for _, seg := range segs {
		for _, r := range seg.Rules {
			if !r.matches(remote, c) {
				continue
			}
			if r.Action == fabricv1.ActionPass {
				break
			}
			return r.Action, true
		}
	}
	return "", false
}

func (r Rule) matches(remote netip.Addr, c oracle.Conn) bool {
	peer := r.AnyPeer
	for _, p := range r.Peers {
		if !peer && p.Contains(remote) {
			peer = true
		}
	}
	if !peer {
		return false
	}
	if r.AnyPort {
		return true
	}
	for _, pr := range r.Ports {
		if pr.Protocol == c.Protocol && c.Port >= pr.From && c.Port <= pr.To {
			return true
		}
	}
	return false
}
