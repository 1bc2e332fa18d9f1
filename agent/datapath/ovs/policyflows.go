package ovs

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Policy tables. New connections (conntrack state new, or invalid: a packet of a connection
// this node never saw start) pass the egress stages of their source pod, then the ingress
// stages of their destination pod, then are committed; packets of committed connections
// skip the stages. A stage is a table: one per tier and one for the NetworkPolicy layer.
const (
	tablePolicyEntry = 40
	tablePoliced     = 41 // does the policy name either end?
	tableExempt      = 42 // the node's own packets, Service addresses
	tableStageBase   = 50 // egress stages, then ingress stages
	tableCommit      = 250
	tableDispatch    = 251 // back to the forwarding table the packet came for
)

// Registers. reg4 says where a packet goes after the policy tables and whether it entered
// from the gateway (its connection is committed with markGateway); reg5 marks packets the
// agent injects (rejections, held DNS answers): they skip conntrack and policy.
const (
	reg4FromTunnel  = 0x1
	reg4FromGateway = 0x2
	reg4Policed     = 0x4 // a pod of either end has rules (its connections are committed)
	reg5Injected    = 0x1
)

// Cookies of policy flows: cookieBase in the top byte; in the next, what the agent does
// with a packet the flow sends it; the rule's number in the low 32 bits (every rule's flows
// carry it: the rule's counters are read by it).
const (
	cookieBase    = uint64(0x57) << 56
	cookieReject  = uint64(1) << 48
	cookieLog     = uint64(2) << 48
	cookieDNS     = uint64(4) << 48
	cookieFlagsAt = 48
)

// maxStageRules bounds the rules of one stage (each takes an OpenFlow priority).
const maxStageRules = 60000

// policyProgram is the policy tables' flows and what their cookies stand for.
type policyProgram struct {
	Flows []string                     `json:"flows"`
	Rules map[uint32]datapath.RuleInfo `json:"rules"`
	// Slots are the deciding rules' numbers (RuleSlots), kept across compiles so that a
	// rule's flows keep their cookie, and their counters, while the rule is enforced. Pass
	// rules and rules beyond maxRuleSlots-1 are numbered from maxRuleSlots on.
	Slots []datapath.RuleSlot `json:"slots,omitempty"`
	// Base is, by rule number, what the rule's flows that are gone had counted.
	Base map[uint32]uint64 `json:"base,omitempty"`
}

// maxRuleSlots bounds the numbers of counted rules (as the eBPF driver's counters do).
const maxRuleSlots = 4096

// isolationRule names the drop of a NetworkPolicy-isolated pod's connections no rule allows
// (as policy.Flat does for the eBPF driver).
func isolationRule(dir string) datapath.RuleInfo {
	return datapath.RuleInfo{Policy: policy.IsolationPolicy, Action: fabricv1.ActionDrop, Direction: dir}
}

// stageRule names a stage's rule in a direction ("Egress", "Ingress").
func stageRule(st policy.Stage, r policy.PipelineRule, dir string) datapath.RuleInfo {
	return datapath.RuleInfo{Tier: st.Tier, Policy: r.Policy, Rule: r.Name, Action: r.Action, Direction: dir}
}

// flowSet collects flows by table, priority and match; conjunction actions of flows with the
// same match merge (OpenFlow keeps one flow per match and priority).
type flowSet struct {
	order   []string
	actions map[string][]string
	cookies map[string]uint64
}

func newFlowSet() *flowSet {
	return &flowSet{actions: map[string][]string{}, cookies: map[string]uint64{}}
}

func (s *flowSet) add(match string, cookie uint64, actions ...string) {
	if _, ok := s.actions[match]; !ok {
		s.order = append(s.order, match)
		s.cookies[match] = cookie
		s.actions[match] = actions
		return
	}
	// Only conjunction clauses may share a match.
	if strings.HasPrefix(actions[0], "conjunction(") && strings.HasPrefix(s.actions[match][0], "conjunction(") {
		s.actions[match] = append(s.actions[match], actions...)
	}
}

func (s *flowSet) flows() []string {
	out := make([]string, 0, len(s.order))
	for _, m := range s.order {
		f := m
		if c := s.cookies[m]; c != 0 {
			f = fmt.Sprintf("cookie=%#x,%s", c, m)
		}
		out = append(out, f+",actions="+strings.Join(s.actions[m], ","))
	}
	return out
}

// policyFlows compiles a pipeline (nil: no policy) into the policy tables. exempt are
// ranges decided later than the first hop: Service addresses, which the node's kernel
// rewrites to pod addresses before the packet comes back through the gateway port and is
// decided then. nodeIP is the node's address in its pod block: the node reaches its pods
// whatever the policy (probes).
//
// DNS answers to dnsPods from dnsServers go to the agent first, which learns FQDN rules'
// addresses from them and sends them on — only replies of queries the pod sent (its
// connection is tracked: the pod has egress rules, so it is committed); anything else from
// port 53 goes through the policy like any packet.
//
// slots number the rules (nil: from scratch); the program's Slots are what they are after.
func policyFlows(p *policy.Pipeline, exempt []netip.Prefix, nodeIP netip.Addr, dnsPods, dnsServers []netip.Addr, slots *datapath.RuleSlots) (policyProgram, error) {
	fs := newFlowSet()
	prog := policyProgram{Rules: map[uint32]datapath.RuleInfo{}}
	var egress, ingress []policy.Stage
	if p != nil {
		egress, ingress = p.Egress, p.Ingress
	}
	firstIngress := tableStageBase + len(egress)
	if firstIngress+len(ingress) > tableCommit {
		return prog, fmt.Errorf("%d policy stages do not fit the OpenFlow tables", len(egress)+len(ingress))
	}

	// Packets of known connections skip the stages; so do the node's own and those the
	// kernel decides after a Service rewrite. The rest start at the first stage.
	for _, pod := range dnsPods {
		for _, server := range dnsServers {
			if pod.Is4() && server.Is4() {
				fs.add(fmt.Sprintf("table=%d,priority=400,ct_state=+trk+est+rpl,udp,nw_src=%s,nw_dst=%s,tp_src=53", tablePolicyEntry, server, pod),
					cookieBase|cookieDNS, "controller(max_len=65535)")
			}
		}
	}
	fs.add(fmt.Sprintf("table=%d,priority=300,ct_state=+trk+est", tablePolicyEntry), 0, fmt.Sprintf("goto_table:%d", tableDispatch))
	fs.add(fmt.Sprintf("table=%d,priority=300,ct_state=+trk+rel", tablePolicyEntry), 0, fmt.Sprintf("goto_table:%d", tableDispatch))
	fs.add(fmt.Sprintf("table=%d,priority=0", tablePolicyEntry), 0, fmt.Sprintf("goto_table:%d", tablePoliced))
	// Connections of pods no rule names skip the stages and are not committed: connection
	// tracking costs (userspace OVS follows every TCP segment), and nothing would decide
	// their replies anyway.
	for _, pod := range policed(egress, ingress) {
		for _, field := range []string{"nw_src", "nw_dst"} {
			fs.add(fmt.Sprintf("table=%d,priority=100,ip,%s=%s", tablePoliced, field, pod), 0,
				"load:1->NXM_NX_REG4[2]", fmt.Sprintf("goto_table:%d", tableExempt))
		}
	}
	fs.add(fmt.Sprintf("table=%d,priority=0", tablePoliced), 0, fmt.Sprintf("goto_table:%d", tableCommit))
	fs.add(fmt.Sprintf("table=%d,priority=200,ip,nw_src=%s", tableExempt, nodeIP), 0, fmt.Sprintf("goto_table:%d", tableCommit))
	for _, e := range exempt {
		if e.Addr().Is4() {
			fs.add(fmt.Sprintf("table=%d,priority=200,ip,nw_dst=%s", tableExempt, e.Masked()), 0, fmt.Sprintf("goto_table:%d", tableCommit))
		}
	}
	fs.add(fmt.Sprintf("table=%d,priority=0", tableExempt), 0, fmt.Sprintf("goto_table:%d", tableStageBase))

	// Every rule's number first: a deciding rule keeps the one it had.
	var infos []datapath.RuleInfo
	for dirIndex, stages := range [][]policy.Stage{egress, ingress} {
		dirName := map[bool]string{true: "Egress", false: "Ingress"}[dirIndex == 0]
		for _, st := range stages {
			for _, r := range st.Rules {
				infos = append(infos, stageRule(st, r, dirName))
			}
			if st.NetworkPolicy() && len(st.Isolated) > 0 {
				infos = append(infos, isolationRule(dirName))
			}
		}
	}
	if slots == nil {
		slots = datapath.NewRuleSlots(maxRuleSlots, nil)
	}
	_, _ = slots.Assign(infos) // rules beyond the slots are enforced, not counted
	prog.Slots = slots.Saved()
	uncounted := uint32(maxRuleSlots)
	number := func(info datapath.RuleInfo) uint32 {
		id := slots.Slot(info)
		if id == 0 {
			id = uncounted
			uncounted++
		}
		prog.Rules[id] = info
		return id
	}

	conj := uint32(0)
	for dirIndex, stages := range [][]policy.Stage{egress, ingress} {
		egressDir := dirIndex == 0
		base, allowed := tableStageBase, firstIngress
		dirName := "Egress"
		if !egressDir {
			base, allowed, dirName = firstIngress, tableCommit, "Ingress"
		}
		for i, st := range stages {
			table, next := base+i, base+i+1
			if egressDir && next == firstIngress || !egressDir && next == firstIngress+len(ingress) {
				next = allowed
			}
			if len(st.Rules) > maxStageRules {
				return prog, fmt.Errorf("tier %q has %d rules for this node's pods; at most %d fit", st.Tier, len(st.Rules), maxStageRules)
			}
			for j, r := range st.Rules {
				// A tier's rules take one priority each, in order. The NetworkPolicy
				// stage's rules all allow: conjunctive ones share priority 200, and those
				// that match any peer and port (a flow per pod) sit above at 300 — a flow
				// per pod and a conjunction clause on the same pod must not share a
				// match and priority (OpenFlow would keep only one of them).
				prio, plainPrio := maxStageRules+1000-j, maxStageRules+1000-j
				if st.NetworkPolicy() {
					prio, plainPrio = 200, 300
				}
				ruleID := number(stageRule(st, r, dirName))
				actions, cookie := ruleActions(r.Rule, ruleID, allowed, next)
				conj++
				addRule(fs, table, prio, plainPrio, r, egressDir, conj, cookie, actions)
			}
			if st.NetworkPolicy() && len(st.Isolated) > 0 {
				cookie := cookieBase | uint64(number(isolationRule(dirName)))
				for _, pod := range st.Isolated {
					if !pod.Is4() {
						continue
					}
					fs.add(fmt.Sprintf("table=%d,priority=100,ip,%s=%s", table, podField(egressDir), pod), cookie, "drop")
				}
			}
			fs.add(fmt.Sprintf("table=%d,priority=0", table), 0, fmt.Sprintf("goto_table:%d", next))
		}
	}
	if len(egress) == 0 && len(ingress) == 0 {
		fs.add(fmt.Sprintf("table=%d,priority=0", tableStageBase), 0, fmt.Sprintf("goto_table:%d", tableCommit))
	} else if len(egress) == 0 || len(ingress) == 0 {
		// One direction has no stage: its first table number hands on to what follows.
		if len(egress) == 0 && firstIngress != tableStageBase {
			fs.add(fmt.Sprintf("table=%d,priority=0", tableStageBase), 0, fmt.Sprintf("goto_table:%d", firstIngress))
		}
		if len(ingress) == 0 && len(egress) > 0 {
			fs.add(fmt.Sprintf("table=%d,priority=0", firstIngress), 0, fmt.Sprintf("goto_table:%d", tableCommit))
		}
	}

	// Commit new connections (those from the gateway with their mark), then go on.
	fs.add(fmt.Sprintf("table=%d,priority=100,ip,ct_state=+trk+new,reg4=%#x/%#x", tableCommit, reg4FromGateway, reg4FromGateway), 0,
		fmt.Sprintf("ct(commit,zone=%d,exec(set_field:%d->ct_mark))", ctZone, markGateway), fmt.Sprintf("goto_table:%d", tableDispatch))
	fs.add(fmt.Sprintf("table=%d,priority=90,ip,ct_state=+trk+new,reg4=%#x/%#x", tableCommit, reg4Policed, reg4Policed), 0,
		fmt.Sprintf("ct(commit,zone=%d)", ctZone), fmt.Sprintf("goto_table:%d", tableDispatch))
	fs.add(fmt.Sprintf("table=%d,priority=0", tableCommit), 0, fmt.Sprintf("goto_table:%d", tableDispatch))
	fs.add(fmt.Sprintf("table=%d,priority=100,reg4=%#x/%#x", tableDispatch, reg4FromTunnel, reg4FromTunnel), 0, fmt.Sprintf("resubmit(,%d)", tableFromTunnel))
	fs.add(fmt.Sprintf("table=%d,priority=0", tableDispatch), 0, fmt.Sprintf("resubmit(,%d)", tableForward))
	prog.Flows = fs.flows()
	return prog, nil
}

// podField is the field that holds the pod a rule applies to; peerField the remote end's.
func podField(egress bool) string {
	if egress {
		return "nw_src"
	}
	return "nw_dst"
}

func peerField(egress bool) string { return podField(!egress) }

// ruleActions are what a matching rule does: Allow goes on to the other direction (or to
// the commit), Pass to the next stage, Drop drops, Reject hands the packet to the agent
// which answers it. Logged rules copy the packet to the agent first. The cookie names the
// rule (its packets are counted by it) and what the agent does with what it is sent.
func ruleActions(r policy.Rule, id uint32, allowed, next int) ([]string, uint64) {
	var actions []string
	cookie := cookieBase | uint64(id)
	if r.Logged {
		cookie |= cookieLog
	}
	switch r.Action {
	case fabricv1.ActionAllow:
		if r.Logged {
			actions = append(actions, "controller(max_len=128)")
		}
		actions = append(actions, fmt.Sprintf("goto_table:%d", allowed))
	case fabricv1.ActionPass:
		if r.Logged {
			actions = append(actions, "controller(max_len=128)")
		}
		actions = append(actions, fmt.Sprintf("goto_table:%d", next))
	case fabricv1.ActionReject:
		cookie |= cookieReject
		actions = append(actions, "controller(max_len=128)")
	default: // Drop: no action but the copy to the agent when logged
		if r.Logged {
			actions = append(actions, "controller(max_len=128)")
		} else {
			actions = append(actions, "drop")
		}
	}
	return actions, cookie
}

// addRule writes one rule: a flow per pod when it matches any peer and port, else a
// conjunctive match whose clauses are the pods, the peers and the ports (so a rule costs
// pods + peers + ports flows, not their product).
func addRule(fs *flowSet, table, prio, plainPrio int, r policy.PipelineRule, egress bool, conj uint32, cookie uint64, actions []string) {
	var pods, peers, ports []string
	for _, a := range r.AppliedTo {
		if a.Is4() {
			pods = append(pods, fmt.Sprintf("ip,%s=%s", podField(egress), a))
		}
	}
	if !r.AnyPeer {
		for _, p := range r.Peers {
			if p.Addr().Is4() {
				peers = append(peers, fmt.Sprintf("ip,%s=%s", peerField(egress), p.Masked()))
			}
		}
		if len(peers) == 0 {
			return // no IPv4 peer: the rule matches nothing here
		}
	}
	if !r.AnyPort {
		for _, pr := range r.Ports {
			ports = append(ports, portMatches(pr)...)
		}
		if len(ports) == 0 {
			return
		}
	}
	if len(pods) == 0 {
		return
	}
	dims := [][]string{pods}
	if peers != nil {
		dims = append(dims, peers)
	}
	if ports != nil {
		dims = append(dims, ports)
	}
	if len(dims) == 1 {
		for _, m := range pods {
			fs.add(fmt.Sprintf("table=%d,priority=%d,%s", table, plainPrio, m), cookie, actions...)
		}
		return
	}
	for k, dim := range dims {
		sort.Strings(dim)
		for _, m := range dim {
			fs.add(fmt.Sprintf("table=%d,priority=%d,%s", table, prio, m), 0, fmt.Sprintf("conjunction(%d,%d/%d)", conj, k+1, len(dims)))
		}
	}
	fs.add(fmt.Sprintf("table=%d,priority=%d,conj_id=%d,ip", table, prio, conj), cookie, actions...)
}

// portMatches matches a protocol's port range with as few value/mask pairs as it takes.
func portMatches(pr policy.PortRange) []string {
	proto := map[corev1.Protocol]string{corev1.ProtocolTCP: "tcp", corev1.ProtocolUDP: "udp", corev1.ProtocolSCTP: "sctp"}[pr.Protocol]
	if proto == "" || pr.From > pr.To || pr.To < 0 {
		return nil
	}
	lo, hi := max(int(pr.From), 0), min(int(pr.To), 65535)
	if lo <= 1 && hi == 65535 {
		return []string{proto}
	}
	var out []string
	for _, b := range policy.PortBlocks(lo, hi) {
		if b[1] == 16 {
			out = append(out, fmt.Sprintf("%s,tp_dst=%d", proto, b[0]))
		} else {
			out = append(out, fmt.Sprintf("%s,tp_dst=%#x/%#x", proto, b[0], 0xffff&^(1<<(16-b[1])-1)))
		}
	}
	return out
}

// policed are the pods some stage's rules apply to or that NetworkPolicy isolates.
func policed(directions ...[]policy.Stage) []netip.Addr {
	set := map[netip.Addr]bool{}
	for _, stages := range directions {
		for _, st := range stages {
			for _, r := range st.Rules {
				for _, a := range r.AppliedTo {
					set[a] = true
				}
			}
			for _, a := range st.Isolated {
				set[a] = true
			}
		}
	}
	out := make([]netip.Addr, 0, len(set))
	for a := range set {
		if a.Is4() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
