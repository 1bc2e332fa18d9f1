// Package oracle is the reference evaluator of weft's network policy: Tiers, FabricPolicies
// and Kubernetes NetworkPolicy, over a snapshot of pods and namespaces, decide a connection
// the way the datapaths must. It is written for clarity, not speed, and is the oracle the
// datapath drivers and the lab's probe matrix are checked against. It enforces nothing.
//
// The semantics:
//   - A connection is decided twice: as egress of its source pod and as ingress of its
//     destination pod (an address that is no pod of the snapshot has no policy of its own).
//     It passes when both allow; the egress side is decided first.
//   - For one side: tiers below fabricv1.NetworkPolicyTierPriority in priority order; in a
//     tier, the policies applied to the pod by (priority, name); in a policy, the rules of
//     that direction in order. The first rule whose peers and ports match decides: Allow,
//     Drop or Reject end the evaluation, Pass skips the rest of the tier.
//   - Then Kubernetes NetworkPolicy with upstream semantics: when a NetworkPolicy of the
//     pod's namespace selects it for this direction, the pod is isolated and the connection
//     passes only if one of those policies allows it — nothing after is consulted.
//   - Then, for pods NetworkPolicy does not isolate, the tiers at or above
//     NetworkPolicyTierPriority (Baseline), the same way; and finally Allow.
package oracle

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Pod is what the evaluator knows of a pod.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	IP              netip.Addr
	// Ports are its named container ports (for named ports in rules).
	Ports []NamedPort
}

// NamedPort is a container port with a name.
type NamedPort struct {
	Name     string
	Protocol corev1.Protocol
	Port     int32
}

// World is the snapshot a decision is made on.
type World struct {
	Tiers           []fabricv1.Tier
	Policies        []fabricv1.FabricPolicy
	NetworkPolicies []networkingv1.NetworkPolicy
	// Namespaces' labels by name.
	Namespaces map[string]map[string]string
	Pods       []Pod
	// Resolved holds, per pod (by address) and per DNS name, the addresses that pod received
	// for the name from a trusted resolver: an FQDN peer of a rule matches, for each pod the
	// rule applies to, what that pod itself was told.
	Resolved map[netip.Addr]map[string][]netip.Addr
	// Clusters holds each peer cluster's ranges (cluster peers).
	Clusters map[string][]netip.Prefix
}

// Conn is a connection: who opens it to whom, on which protocol and destination port.
type Conn struct {
	Src, Dst netip.Addr
	Protocol corev1.Protocol
	Port     int32
}

// Layer names what decided.
type Layer string

const (
	LayerFabricPolicy  Layer = "FabricPolicy"
	LayerNetworkPolicy Layer = "NetworkPolicy"
	LayerDefault       Layer = "Default"
)

// Verdict is a decision and what made it.
type Verdict struct {
	// Action is Allow, Drop or Reject.
	Action fabricv1.PolicyAction
	// Direction is the side that decided: Ingress or Egress (the ingress side when both
	// allowed).
	Direction networkingv1.PolicyType
	Layer     Layer
	// Tier, Policy and Rule name the deciding rule (FabricPolicy: tier, policy, rule name or
	// index; NetworkPolicy: namespace/name of an allowing policy, or none for isolation).
	Tier, Policy, Rule string
	// Logged says the deciding rule asked for logging.
	Logged bool
}

// Allowed says whether the connection passes.
func (v Verdict) Allowed() bool { return v.Action == fabricv1.ActionAllow }

// Evaluate decides a connection.
func (w *World) Evaluate(c Conn) Verdict {
	if src, ok := w.podByIP(c.Src); ok {
		if v := w.side(src, networkingv1.PolicyTypeEgress, c.Dst, c); !v.Allowed() {
			return v
		}
	}
	if dst, ok := w.podByIP(c.Dst); ok {
		return w.side(dst, networkingv1.PolicyTypeIngress, c.Src, c)
	}
	return Verdict{Action: fabricv1.ActionAllow, Direction: networkingv1.PolicyTypeIngress, Layer: LayerDefault}
}

func (w *World) podByIP(ip netip.Addr) (Pod, bool) {
	for _, p := range w.Pods {
		if p.IP == ip {
			return p, true
		}
	}
	return Pod{}, false
}

// side decides one direction for pod (the policies' subject); remote is the other end.
func (w *World) side(pod Pod, dir networkingv1.PolicyType, remote netip.Addr, c Conn) Verdict {
	tiers := OrderedTiers(w.Tiers)
	for _, t := range tiers {
		if t.Spec.Priority >= fabricv1.NetworkPolicyTierPriority {
			break
		}
		if v, decided := w.tier(t, pod, dir, remote, c); decided {
			return v
		}
	}
	if v, isolated := w.networkPolicy(pod, dir, remote, c); isolated {
		return v
	}
	for _, t := range tiers {
		if t.Spec.Priority < fabricv1.NetworkPolicyTierPriority {
			continue
		}
		if v, decided := w.tier(t, pod, dir, remote, c); decided {
			return v
		}
	}
	return Verdict{Action: fabricv1.ActionAllow, Direction: dir, Layer: LayerDefault}
}

// tier evaluates the tier's policies for pod; decided is false when nothing matched or a
// rule passed.
func (w *World) tier(t fabricv1.Tier, pod Pod, dir networkingv1.PolicyType, remote netip.Addr, c Conn) (Verdict, bool) {
	pols := PoliciesIn(w.Policies, t.Name, func(p *fabricv1.FabricPolicy) bool { return w.AppliesTo(*p, pod) })
	for _, p := range pols {
		for i, r := range Rules(p, dir) {
			if !w.fabricPeersMatch(Peers(r, dir), pod, remote) || !portsMatch(r.Ports, c, w.portOwner(pod, dir, remote)) {
				continue
			}
			if r.Action == fabricv1.ActionPass {
				return Verdict{}, false
			}
			return Verdict{Action: r.Action, Direction: dir, Layer: LayerFabricPolicy, Tier: t.Name, Policy: p.Name,
				Rule: RuleName(r, dir, i), Logged: r.EnableLogging}, true
		}
	}
	return Verdict{}, false
}

// OrderedTiers returns the tiers in evaluation order: by priority, then name.
func OrderedTiers(tiers []fabricv1.Tier) []fabricv1.Tier {
	out := slices.Clone(tiers)
	slices.SortStableFunc(out, func(a, b fabricv1.Tier) int {
		if a.Spec.Priority != b.Spec.Priority {
			return int(a.Spec.Priority - b.Spec.Priority)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// PoliciesIn returns the policies of a tier that apply (to the pod at hand), in evaluation
// order: by priority, then name.
func PoliciesIn(policies []fabricv1.FabricPolicy, tier string, applies func(*fabricv1.FabricPolicy) bool) []*fabricv1.FabricPolicy {
	var out []*fabricv1.FabricPolicy
	for i := range policies {
		if p := &policies[i]; p.Spec.Tier == tier && applies(p) {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b *fabricv1.FabricPolicy) int {
		if a.Spec.Priority != b.Spec.Priority {
			return int(a.Spec.Priority - b.Spec.Priority)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Rules are a policy's rules of one direction.
func Rules(p *fabricv1.FabricPolicy, dir networkingv1.PolicyType) []fabricv1.PolicyRule {
	if dir == networkingv1.PolicyTypeEgress {
		return p.Spec.Egress
	}
	return p.Spec.Ingress
}

// Peers are a rule's peers in one direction (from for ingress, to for egress).
func Peers(r fabricv1.PolicyRule, dir networkingv1.PolicyType) []fabricv1.PolicyPeer {
	if dir == networkingv1.PolicyTypeEgress {
		return r.To
	}
	return r.From
}

// RuleName is a rule's name in verdicts and logs: its own, else its direction and index.
func RuleName(r fabricv1.PolicyRule, dir networkingv1.PolicyType, index int) string {
	if r.Name != "" {
		return r.Name
	}
	return strings.ToLower(string(dir)) + "-" + strconv.Itoa(index)
}

// portOwner is the pod whose named ports a rule's port names refer to: the destination.
func (w *World) portOwner(pod Pod, dir networkingv1.PolicyType, remote netip.Addr) *Pod {
	if dir == networkingv1.PolicyTypeIngress {
		return &pod
	}
	if p, ok := w.podByIP(remote); ok {
		return &p
	}
	return nil
}

// AppliesTo says whether a FabricPolicy applies to a pod.
func (w *World) AppliesTo(p fabricv1.FabricPolicy, pod Pod) bool {
	for _, t := range p.Spec.AppliedTo {
		if Selects(t.PodSelector, pod.Labels) && Selects(t.NamespaceSelector, w.Namespaces[pod.Namespace]) {
			return true
		}
	}
	return false
}

// Selects says whether a selector matches labels; an absent selector matches everything, an
// invalid one nothing.
func Selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

func (w *World) fabricPeersMatch(peers []fabricv1.PolicyPeer, pod Pod, remote netip.Addr) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		switch {
		case p.IPBlock != nil:
			if inBlock(p.IPBlock.CIDR, p.IPBlock.Except, remote) {
				return true
			}
		case p.FQDN != "":
			for name, addrs := range w.Resolved[pod.IP] {
				if FQDNMatches(p.FQDN, name) && slices.Contains(addrs, remote) {
					return true
				}
			}
		case p.Cluster != "":
			for _, pfx := range w.Clusters[p.Cluster] {
				if pfx.Contains(remote) {
					return true
				}
			}
		default:
			if rp, ok := w.podByIP(remote); ok && Selects(p.PodSelector, rp.Labels) && Selects(p.NamespaceSelector, w.Namespaces[rp.Namespace]) {
				return true
			}
		}
	}
	return false
}

// FQDNMatches matches a name against "name" or "*.suffix" (any depth of subdomain, not the
// suffix itself), case-insensitively, ignoring a trailing dot.
func FQDNMatches(pattern, name string) bool {
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(name, "."+suffix)
	}
	return name == pattern
}

func inBlock(cidr string, except []string, ip netip.Addr) bool {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Contains(ip) {
		return false
	}
	for _, e := range except {
		if ep, err := netip.ParsePrefix(e); err == nil && ep.Contains(ip) {
			return false
		}
	}
	return true
}

// portsMatch matches the connection's protocol and port; owner resolves named ports (nil:
// a name matches nothing).
func portsMatch(ports []fabricv1.PolicyPort, c Conn, owner *Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if portMatches(proto, p.Port, p.EndPort, c, owner) {
			return true
		}
	}
	return false
}

func portMatches(proto corev1.Protocol, port *intstr.IntOrString, end *int32, c Conn, owner *Pod) bool {
	if proto != c.Protocol {
		return false
	}
	if port == nil {
		return true
	}
	if port.Type == intstr.String {
		if owner == nil {
			return false
		}
		for _, np := range owner.Ports {
			if np.Name == port.StrVal && np.Protocol == proto && np.Port == c.Port {
				return true
			}
		}
		return false
	}
	lo, hi := port.IntVal, port.IntVal
	if end != nil {
		hi = *end
	}
	return c.Port >= lo && c.Port <= hi
}

// networkPolicy applies Kubernetes NetworkPolicy to one side: isolated says whether any
// policy selects the pod for this direction (then the verdict is final).
func (w *World) networkPolicy(pod Pod, dir networkingv1.PolicyType, remote netip.Addr, c Conn) (Verdict, bool) {
	isolated := false
	for _, np := range w.NetworkPolicies {
		if np.Namespace != pod.Namespace || !Selects(&np.Spec.PodSelector, pod.Labels) || !HasType(np, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if w.npPeersMatch(np.Namespace, r.From, remote) && npPortsMatch(r.Ports, c, w.portOwner(pod, dir, remote)) {
					return Verdict{Action: fabricv1.ActionAllow, Direction: dir, Layer: LayerNetworkPolicy, Policy: np.Namespace + "/" + np.Name}, true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if w.npPeersMatch(np.Namespace, r.To, remote) && npPortsMatch(r.Ports, c, w.portOwner(pod, dir, remote)) {
					return Verdict{Action: fabricv1.ActionAllow, Direction: dir, Layer: LayerNetworkPolicy, Policy: np.Namespace + "/" + np.Name}, true
				}
			}
		}
	}
	if isolated {
		return Verdict{Action: fabricv1.ActionDrop, Direction: dir, Layer: LayerNetworkPolicy}, true
	}
	return Verdict{}, false
}

// HasType applies the upstream default: Ingress always, Egress when there are egress rules.
func HasType(np networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) > 0 {
		return slices.Contains(np.Spec.PolicyTypes, dir)
	}
	return dir == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
}

func (w *World) npPeersMatch(ns string, peers []networkingv1.NetworkPolicyPeer, remote netip.Addr) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			if inBlock(p.IPBlock.CIDR, p.IPBlock.Except, remote) {
				return true
			}
			continue
		}
		rp, ok := w.podByIP(remote)
		if !ok {
			continue
		}
		switch {
		case p.NamespaceSelector == nil: // pods of the policy's namespace
			if rp.Namespace == ns && Selects(p.PodSelector, rp.Labels) {
				return true
			}
		default:
			if Selects(p.NamespaceSelector, w.Namespaces[rp.Namespace]) && Selects(p.PodSelector, rp.Labels) {
				return true
			}
		}
	}
	return false
}

func npPortsMatch(ports []networkingv1.NetworkPolicyPort, c Conn, owner *Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if portMatches(proto, p.Port, p.EndPort, c, owner) {
			return true
		}
	}
	return false
}
