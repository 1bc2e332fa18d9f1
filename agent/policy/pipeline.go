package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Pipeline is a Program regrouped for datapaths that match on tables rather than per pod:
// for each direction, the stages a new connection passes in order, each rule carrying the
// set of the node's pods it applies to. A rule shared by many pods appears once.
//
// For a pod X and a direction: each stage in order; in a tier stage the first rule that
// applies to X and matches decides — Allow ends the direction allowed, Drop and Reject end
// the connection, Pass goes on to the next stage; no match goes on too. In the NetworkPolicy
// stage a matching rule allows; else an isolated X is dropped; else on. After the last stage
// the direction is allowed. Egress is decided at the source pod, ingress at the destination.
type Pipeline struct {
	Egress, Ingress []Stage
}

// Stage is one tier, or the Kubernetes NetworkPolicy layer.
type Stage struct {
	// Tier is the tier's name; empty for the NetworkPolicy stage.
	Tier string
	// Rules in first-match order. In the NetworkPolicy stage all of them allow.
	Rules []PipelineRule
	// Isolated are the pods a NetworkPolicy selects for this direction (NetworkPolicy stage).
	Isolated []netip.Addr
}

// NetworkPolicy reports whether the stage is the Kubernetes NetworkPolicy layer.
func (s Stage) NetworkPolicy() bool { return s.Tier == "" }

// PipelineRule is a compiled rule with the pods it applies to.
type PipelineRule struct {
	Rule
	AppliedTo []netip.Addr
}

// Stages returns the stages of a direction.
func (p *Pipeline) Stages(dir networkingv1.PolicyType) []Stage {
	if dir == networkingv1.PolicyTypeEgress {
		return p.Egress
	}
	return p.Ingress
}

// Rules counts the pipeline's rules.
func (p *Pipeline) Rules() int {
	n := 0
	for _, st := range append(slices.Clip(p.Egress), p.Ingress...) {
		n += len(st.Rules)
	}
	return n
}

// Pipeline regroups the program. Tiers with no rule for any pod have no stage; the
// NetworkPolicy stage is always there.
func (p *Program) Pipeline() *Pipeline {
	out := &Pipeline{}
	for _, dir := range []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress} {
		var stages []Stage
		npDone := false
		for _, t := range p.tiers {
			if t.Spec.Priority > fabricv1.NetworkPolicyTierPriority && !npDone {
				stages, npDone = append(stages, p.networkPolicyStage(dir)), true
			}
			if st := p.tierStage(t.Name, dir); len(st.Rules) > 0 {
				stages = append(stages, st)
			}
		}
		if !npDone {
			stages = append(stages, p.networkPolicyStage(dir))
		}
		if dir == networkingv1.PolicyTypeEgress {
			out.Egress = stages
		} else {
			out.Ingress = stages
		}
	}
	return out
}

// group merges equal rules of many pods into one rule applied to all of them.
type group struct {
	order []string
	rules map[string]*PipelineRule
}

func (g *group) add(r Rule, pod netip.Addr) {
	// Rules of equal rank are equal but for ports that a named port resolved on the pod,
	// and peers that are the pod's own (FQDN answers).
	key := fmt.Sprintf("%v|%v", r.rank, r.Ports)
	if r.ownPeers {
		key += fmt.Sprintf("|%v", r.Peers)
	}
	pr, ok := g.rules[key]
	if !ok {
		pr = &PipelineRule{Rule: r}
		g.rules[key] = pr
		g.order = append(g.order, key)
	}
	pr.AppliedTo = append(pr.AppliedTo, pod)
}

func (g *group) sorted() []PipelineRule {
	out := make([]PipelineRule, 0, len(g.order))
	for _, k := range g.order {
		r := g.rules[k]
		slices.SortFunc(r.AppliedTo, netip.Addr.Compare)
		out = append(out, *r)
	}
	slices.SortStableFunc(out, func(a, b PipelineRule) int {
		for i := range a.rank {
			if c := cmp.Compare(a.rank[i], b.rank[i]); c != 0 {
				return c
			}
		}
		// Equal ranks apply to different pods: any order decides alike; keep it stable.
		return strings.Compare(fmt.Sprint(a.Ports), fmt.Sprint(b.Ports))
	})
	return out
}

// pods returns the program's pods in address order, so pipelines compare equal.
func (p *Program) pods() []netip.Addr {
	out := make([]netip.Addr, 0, len(p.Sides))
	for a := range p.Sides {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (p *Program) tierStage(tier string, dir networkingv1.PolicyType) Stage {
	g := &group{rules: map[string]*PipelineRule{}}
	for _, pod := range p.pods() {
		s := p.Sides[pod][dir]
		for _, seg := range append(slices.Clip(s.Before), s.After...) {
			if seg.Tier != tier {
				continue
			}
			for _, r := range seg.Rules {
				g.add(r, pod)
			}
		}
	}
	return Stage{Tier: tier, Rules: g.sorted()}
}

func (p *Program) networkPolicyStage(dir networkingv1.PolicyType) Stage {
	g := &group{rules: map[string]*PipelineRule{}}
	st := Stage{}
	for _, pod := range p.pods() {
		s := p.Sides[pod][dir]
		if !s.Isolated {
			continue
		}
		st.Isolated = append(st.Isolated, pod)
		for _, r := range s.NPAllow {
			g.add(r, pod)
		}
	}
	st.Rules = g.sorted()
	return st
}

// Decide evaluates the pipeline the way a table-driven datapath does: egress stages for the
// source, then ingress stages for the destination.
func (p *Pipeline) Decide(c oracle.Conn) fabricv1.PolicyAction {
	if a := decideStages(p.Egress, c.Src, c.Dst, c); a != fabricv1.ActionAllow {
		return a
	}
	return decideStages(p.Ingress, c.Dst, c.Src, c)
}

func decideStages(stages []Stage, pod, remote netip.Addr, c oracle.Conn) fabricv1.PolicyAction {
	for _, st := range stages {
		decided := false
		for _, r := range st.Rules {
			if !slices.Contains(r.AppliedTo, pod) || !r.matches(remote, c) {
				continue
			}
			if r.Action == fabricv1.ActionPass {
				decided = true // skip the rest of the tier
				break
			}
			return r.Action
		}
		if !decided && st.NetworkPolicy() && slices.Contains(st.Isolated, pod) {
			return fabricv1.ActionDrop
		}
	}
	return fabricv1.ActionAllow
}
