package ovs

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// A port range becomes value/mask matches that cover exactly the range.
func TestPortMatchesCoverExactlyTheRange(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		lo := r.IntN(65535) + 1
		hi := lo + r.IntN(min(65535-lo+1, 3000))
		if r.IntN(10) == 0 {
			hi = 65535
		}
		ms := portMatches(policy.PortRange{Protocol: corev1.ProtocolTCP, From: int32(lo), To: int32(hi)})
		type vm struct{ v, m int }
		var pairs []vm
		for _, m := range ms {
			spec := strings.TrimPrefix(m, "tcp")
			if spec == "" {
				pairs = append(pairs, vm{0, 0})
				continue
			}
			var p vm
			if strings.Contains(spec, "/") {
				if _, err := fmt.Sscanf(spec, ",tp_dst=%v/%v", &p.v, &p.m); err != nil {
					t.Fatalf("%q: %v", m, err)
				}
			} else {
				if _, err := fmt.Sscanf(spec, ",tp_dst=%d", &p.v); err != nil {
					t.Fatalf("%q: %v", m, err)
				}
				p.m = 0xffff
			}
			pairs = append(pairs, p)
		}
		for port := 1; port <= 65535; port++ {
			in := false
			for _, p := range pairs {
				if port&p.m == p.v {
					in = true
				}
			}
			if in != (port >= lo && port <= hi) {
				t.Fatalf("[%d, %d] as %v: port %d in=%v", lo, hi, ms, port, in)
			}
		}
		if hi-lo > 16 && len(ms) > 32 {
			t.Errorf("[%d, %d] took %d matches", lo, hi, len(ms))
		}
	}
}

// A rule costs pods + peers + ports flows (a conjunctive match), and conjunction clauses
// that share a match at one priority merge into one flow.
func TestPolicyFlowsUseConjunctions(t *testing.T) {
	var pods, peers []netip.Addr
	for i := range 10 {
		pods = append(pods, netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + i)}))
		peers = append(peers, netip.AddrFrom4([4]byte{10, 2, 0, byte(1 + i)}))
	}
	var peerSet []netip.Prefix
	for _, p := range peers {
		peerSet = append(peerSet, netip.PrefixFrom(p, 32))
	}
	rule := func(port int32) policy.PipelineRule {
		return policy.PipelineRule{AppliedTo: pods, Rule: policy.Rule{Policy: "p", Name: fmt.Sprint(port), Action: fabricv1.ActionAllow,
			Peers: peerSet, Ports: []policy.PortRange{{Protocol: corev1.ProtocolTCP, From: port, To: port}}}}
	}
	np := policy.Stage{Rules: []policy.PipelineRule{rule(80), rule(443)}, Isolated: pods}
	pl := &policy.Pipeline{Ingress: []policy.Stage{{Tier: "application", Rules: []policy.PipelineRule{rule(8080)}}, np}}
	prog, err := policyFlows(pl, nil, netip.MustParseAddr("10.1.0.254"), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	count := map[int]int{}
	for _, f := range prog.Flows {
		var table int
		if _, err := fmt.Sscanf(f[strings.Index(f, "table="):], "table=%d", &table); err != nil {
			t.Fatalf("flow without a table: %q", f)
		}
		count[table]++
	}
	// The tier's rule: 10 pods + 10 peers + 1 port + the conj_id flow + the miss.
	if got := count[tableStageBase]; got != 23 {
		t.Errorf("tier stage has %d flows, want 23", got)
	}
	// The NetworkPolicy stage: two rules sharing their pod and peer clauses (20 merged
	// flows), 2 ports, 2 conj_id flows, 10 isolation drops, the miss.
	if got := count[tableStageBase+1]; got != 35 {
		t.Errorf("NetworkPolicy stage has %d flows, want 35:\n%s", got, strings.Join(prog.Flows, "\n"))
	}
	merged := false
	for _, f := range prog.Flows {
		if strings.Contains(f, "conjunction(2,") && strings.Contains(f, "conjunction(3,") {
			merged = true
		}
	}
	if !merged {
		t.Error("the NetworkPolicy rules' shared clauses were not merged")
	}
}

// In the NetworkPolicy stage, a rule allowing anything for a pod and a conjunctive rule on
// the same pod both keep their flows, whichever comes first.
func TestNetworkPolicyStageKeepsPlainAndConjunctiveRules(t *testing.T) {
	pod := netip.MustParseAddr("10.1.0.5")
	any := policy.PipelineRule{AppliedTo: []netip.Addr{pod}, Rule: policy.Rule{Policy: "ns/all", Action: fabricv1.ActionAllow, AnyPeer: true, AnyPort: true}}
	some := policy.PipelineRule{AppliedTo: []netip.Addr{pod}, Rule: policy.Rule{Policy: "ns/some", Action: fabricv1.ActionAllow,
		Peers: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, AnyPort: true}}
	for _, rules := range [][]policy.PipelineRule{{any, some}, {some, any}} {
		pl := &policy.Pipeline{Ingress: []policy.Stage{{Rules: rules, Isolated: []netip.Addr{pod}}}}
		prog, err := policyFlows(pl, nil, netip.MustParseAddr("10.1.0.1"), nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(prog.Flows, "\n")
		for _, want := range []string{
			fmt.Sprintf("table=%d,priority=300,ip,nw_dst=10.1.0.5,actions=goto_table:%d", tableStageBase, tableCommit),
			fmt.Sprintf("table=%d,priority=200,ip,nw_dst=10.1.0.5,actions=conjunction(", tableStageBase),
			fmt.Sprintf("table=%d,priority=100,ip,nw_dst=10.1.0.5,actions=drop", tableStageBase),
		} {
			if !strings.Contains(all, want) {
				t.Errorf("rules %s, %s: no flow %q in\n%s", rules[0].Policy, rules[1].Policy, want, all)
			}
		}
	}
}

// A rule whose flows change (a pod leaves it: its flow and the packets it counted go) counts
// on from its total; a new rule counts from its own flows; a rule that went counts nothing.
func TestCarryCounts(t *testing.T) {
	kept := datapath.RuleSlot{Rule: datapath.RuleInfo{Policy: "p", Rule: "kept", Action: "Allow", Direction: "Ingress"}, Slot: 1}
	gone := datapath.RuleSlot{Rule: datapath.RuleInfo{Policy: "p", Rule: "gone", Action: "Drop", Direction: "Ingress"}, Slot: 2}
	added := datapath.RuleSlot{Rule: datapath.RuleInfo{Policy: "p", Rule: "new", Action: "Drop", Direction: "Egress"}, Slot: 2}
	prev := &policyProgram{Slots: []datapath.RuleSlot{kept, gone}, Base: map[uint32]uint64{1: 5}}
	next := &policyProgram{Slots: []datapath.RuleSlot{kept, added}}
	// kept: 5 from flows gone earlier + 10 now; after the change its remaining flows hold 4.
	carryCounts(prev, next, map[uint32]uint64{1: 10, 2: 7}, map[uint32]uint64{1: 4, 2: 1})
	if next.Base[1]+4 != 15 {
		t.Errorf("the kept rule counts %d after the change, want 15", next.Base[1]+4)
	}
	if next.Base[2] != 0 {
		t.Errorf("the new rule in the freed number starts from %d more than its flows, want 0", next.Base[2])
	}
	// Unreadable counters: the base is kept as it was.
	again := &policyProgram{Slots: []datapath.RuleSlot{kept}}
	carryCounts(next, again, nil, nil)
	if again.Base[1] != next.Base[1] {
		t.Errorf("without a reading the base went from %d to %d", next.Base[1], again.Base[1])
	}
}
