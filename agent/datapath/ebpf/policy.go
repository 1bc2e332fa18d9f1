package ebpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/statefile"
)

// The programs' constants (bpf/weft.c).
const (
	dirEgress  = 0
	dirIngress = 1
	// injectMark marks packets the agent sends into pods (Reject answers, DNS answers it
	// held), which the programs let through undecided.
	injectMark = 0x200000
)

var dirs = []struct {
	typ networkingv1.PolicyType
	n   uint8
}{{networkingv1.PolicyTypeEgress, dirEgress}, {networkingv1.PolicyTypeIngress, dirIngress}}

// be32 is an IPv4 address as the programs hold it: network order in memory.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

var protoNumbers = map[corev1.Protocol]uint8{corev1.ProtocolTCP: 6, corev1.ProtocolUDP: 17, corev1.ProtocolSCTP: 132}

// sideTables is one pod's direction in the programs' maps.
type sideTables struct {
	key   weftPolSideKey
	side  weftPolSide
	peers map[weftPolPeerKey]weftRules
	ports map[weftPolPortKey]weftRules
	rules []datapath.RuleInfo
}

// tables computes the maps' entries of a pod's direction at a version.
func tables(pl *policy.Pipeline, pod netip.Addr, dir networkingv1.PolicyType, dirN, version uint8, gen uint32) (*sideTables, error) {
	rules, err := pl.Flat(pod, dir)
	if err != nil || len(rules) == 0 {
		return nil, err
	}
	t := &sideTables{key: weftPolSideKey{Pod: be32(pod), Version: version, Dir: dirN},
		peers: map[weftPolPeerKey]weftRules{}, ports: map[weftPolPortKey]weftRules{}}
	t.side.Generation = gen
	var allow, reject, pass, logged policy.Bits
	for i, r := range rules {
		switch r.Action {
		case fabricv1.ActionAllow:
			allow.Set(i)
		case fabricv1.ActionReject:
			reject.Set(i)
		case fabricv1.ActionPass:
			pass.Set(i)
		}
		if r.Logged {
			logged.Set(i)
		}
		t.side.TierEnd[i] = uint16(r.TierEnd)
		t.rules = append(t.rules, datapath.RuleInfo{Tier: tierOf(pl, r.Rule, dir), Policy: r.Policy, Rule: r.Name, Action: r.Action, Direction: string(dir)})
	}
	t.side.Allow, t.side.Reject, t.side.Pass, t.side.Logged = words(allow), words(reject), words(pass), words(logged)
	t.side.AnyPort = words(policy.AnyPortMask(rules))
	for _, e := range policy.PeerMasks(rules, 4) {
		t.peers[weftPolPeerKey{Prefixlen: 64 + uint32(e.Prefix.Bits()), Pod: t.key.Pod, Version: version, Dir: dirN,
			Addr: be32(e.Prefix.Addr())}] = words(e.Mask)
	}
	for _, e := range policy.PortMasks(rules) {
		proto, ok := protoNumbers[e.Protocol]
		if !ok {
			continue
		}
		t.ports[weftPolPortKey{Prefixlen: 64 + uint32(e.Bits), Pod: t.key.Pod, Version: version, Dir: dirN, Proto: proto,
			Port: be16(e.Value)}] = words(e.Mask)
	}
	return t, nil
}

func words(b policy.Bits) weftRules { return weftRules{W: b} }

// tierOf finds the tier of a compiled rule (for logs).
func tierOf(pl *policy.Pipeline, r policy.Rule, dir networkingv1.PolicyType) string {
	for _, st := range pl.Stages(dir) {
		for _, pr := range st.Rules {
			if pr.Policy == r.Policy && pr.Name == r.Name {
				return st.Tier
			}
		}
	}
	return ""
}

// policedPods are the pods a pipeline names.
func policedPods(pl *policy.Pipeline) []netip.Addr {
	var out []netip.Addr
	for _, st := range append(slices.Clip(pl.Egress), pl.Ingress...) {
		for _, r := range st.Rules {
			out = append(out, r.AppliedTo...)
		}
		out = append(out, st.Isolated...)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// policyRecord is what the driver keeps of the enforced policy: the rules behind the
// programs' rule numbers, by generation, for the reports of logged rules.
type policyRecord struct {
	Generation uint32                         `json:"generation"`
	Rules      map[string][]datapath.RuleInfo `json:"rules"` // "<pod>/<direction>"
	// Slots are the rules' counters in rule_hits.
	Slots []datapath.RuleSlot `json:"slots,omitempty"`
}

// maxRuleSlots is rule_hits' size (MAX_SLOTS in bpf/weft.c).
const maxRuleSlots = 4096

func sideName(pod netip.Addr, dir uint8) string {
	if dir == dirEgress {
		return pod.String() + "/Egress"
	}
	return pod.String() + "/Ingress"
}

// setPolicy writes the policy beside the enforced one (the other version), switches to it
// in one step and removes the old one. Called with d.mu held.
func (d *Driver) setPolicy(p datapath.Policy) error {
	var st weftPolState
	if err := d.objs.PolState.Lookup(uint32(0), &st); err != nil {
		return fmt.Errorf("reading the policy state: %w", err)
	}
	next := weftPolState{Version: 1 - st.Version&1, Generation: st.Generation + 1}
	ver := uint8(next.Version)
	rec := policyRecord{Generation: next.Generation, Rules: map[string][]datapath.RuleInfo{}}
	var sides []*sideTables
	if p.Pipeline != nil {
		for _, pod := range policedPods(p.Pipeline) {
			if !pod.Is4() {
				continue
			}
			for _, dir := range dirs {
				t, err := tables(p.Pipeline, pod, dir.typ, dir.n, ver, next.Generation)
				if err != nil {
					return fmt.Errorf("%w: %w", datapath.ErrPolicyUnsupported, err)
				}
				if t != nil {
					sides = append(sides, t)
					rec.Rules[sideName(pod, dir.n)] = t.rules
				}
			}
		}
	}
	// Each deciding rule keeps its counter; the counters of rules no longer enforced are
	// zeroed once the old version is gone, before another rule takes them.
	var all []datapath.RuleInfo
	for _, t := range sides {
		all = append(all, t.rules...)
	}
	if d.slots == nil {
		d.slots = datapath.NewRuleSlots(maxRuleSlots, nil)
	}
	// Beyond maxRuleSlots-1 distinct rules on one node, the rest are enforced but not
	// counted (docs/metrics.md).
	freed, _ := d.slots.Assign(all)
	for _, t := range sides {
		for i, r := range t.rules {
			t.side.Slot[i] = uint16(d.slots.Slot(r))
		}
	}
	rec.Slots = d.slots.Saved()
	// Whatever an earlier, interrupted call left at this version goes first.
	if err := d.deleteVersion(ver); err != nil {
		return err
	}
	for _, t := range sides {
		for k, v := range t.peers {
			if err := d.objs.PolPeers.Put(k, v); err != nil {
				return fmt.Errorf("policy peers: %w", err)
			}
		}
		for k, v := range t.ports {
			if err := d.objs.PolPorts.Put(k, v); err != nil {
				return fmt.Errorf("policy ports: %w", err)
			}
		}
		if err := d.objs.PolSides.Put(t.key, t.side); err != nil {
			return fmt.Errorf("policy sides: %w", err)
		}
	}
	if err := syncSet(d.objs.SvcCidrs, serviceKeys(p.ServiceCIDRs)); err != nil {
		return fmt.Errorf("service ranges: %w", err)
	}
	if err := syncSet(d.objs.DnsPods, v4Keys(p.DNSPods)); err != nil {
		return fmt.Errorf("DNS pods: %w", err)
	}
	if err := syncSet(d.objs.DnsServers, v4Keys(p.DNSServers)); err != nil {
		return fmt.Errorf("DNS servers: %w", err)
	}
	// The record first: events of the new generation may come as soon as it is enforced.
	d.record(rec)
	if err := d.savePolicyRecord(rec); err != nil {
		return err
	}
	if err := d.objs.PolState.Put(uint32(0), next); err != nil {
		return fmt.Errorf("switching to the new policy: %w", err)
	}
	if err := d.deleteVersion(1 - ver); err != nil {
		return err
	}
	zero := make([]uint64, d.cpus)
	for _, slot := range freed {
		if err := d.objs.RuleHits.Put(slot, zero); err != nil {
			return fmt.Errorf("zeroing the counter of a removed rule: %w", err)
		}
	}
	return nil
}

// RuleCounts reads the rules' counters, summed over CPUs. The driver's lock is held only to
// take the numbering and a handle of the map: the reads (one per rule) do not hold up a
// failover.
func (d *Driver) RuleCounts(context.Context) ([]datapath.RuleCount, error) {
	d.mu.Lock()
	if d.objs == nil || d.slots == nil {
		d.mu.Unlock()
		return nil, nil
	}
	slots := datapath.NewRuleSlots(maxRuleSlots, d.slots.Saved())
	hits, err := d.objs.RuleHits.Clone()
	cpus := d.cpus
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	defer hits.Close()
	perCPU := make([]uint64, cpus)
	return slots.Counts(func(slot uint32) (uint64, error) {
		if err := hits.Lookup(slot, &perCPU); err != nil {
			return 0, err
		}
		var n uint64
		for _, v := range perCPU {
			n += v
		}
		return n, nil
	})
}

// v4Keys are the IPv4 addresses among addrs, as the maps key them.
func v4Keys(addrs []netip.Addr) []uint32 {
	var out []uint32
	for _, a := range addrs {
		if a.Is4() {
			out = append(out, be32(a))
		}
	}
	return out
}

func serviceKeys(cidrs []netip.Prefix) []weftAddrKey {
	var out []weftAddrKey
	for _, c := range cidrs {
		if c.Addr().Is4() {
			c = c.Masked()
			out = append(out, weftAddrKey{Prefixlen: uint32(c.Bits()), Addr: be32(c.Addr())})
		}
	}
	return out
}

// syncSet makes a map's keys exactly want (values 1).
func syncSet[K comparable](m *ebpf.Map, want []K) error {
	keep := map[K]bool{}
	for _, k := range want {
		keep[k] = true
		if err := m.Put(k, uint8(1)); err != nil {
			return err
		}
	}
	var k K
	var v uint8
	var stale []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !keep[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// deleteVersion removes a version's entries from the policy maps.
func (d *Driver) deleteVersion(ver uint8) error {
	if err := deleteWhere(d.objs.PolSides, func(k weftPolSideKey) bool { return k.Version == ver }); err != nil {
		return fmt.Errorf("policy sides: %w", err)
	}
	if err := deleteWhere(d.objs.PolPeers, func(k weftPolPeerKey) bool { return k.Version == ver }); err != nil {
		return fmt.Errorf("policy peers: %w", err)
	}
	if err := deleteWhere(d.objs.PolPorts, func(k weftPolPortKey) bool { return k.Version == ver }); err != nil {
		return fmt.Errorf("policy ports: %w", err)
	}
	return nil
}

func deleteWhere[K any](m *ebpf.Map, match func(K) bool) error {
	var gone []K
	var prev any // nil: the first key
	for {
		var k K
		if err := m.NextKey(prev, &k); errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		} else if err != nil {
			return err
		}
		if match(k) {
			gone = append(gone, k)
		}
		prev = k
	}
	for _, k := range gone {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// record keeps the rules of the newest generations (events of the one before may still be
// on their way).
func (d *Driver) record(rec policyRecord) {
	d.evMu.Lock()
	defer d.evMu.Unlock()
	if d.records == nil {
		d.records = map[uint32]policyRecord{}
	}
	d.records[rec.Generation] = rec
	for g := range d.records {
		if g+1 < rec.Generation {
			delete(d.records, g)
		}
	}
}

func (d *Driver) ruleInfo(gen uint32, pod netip.Addr, dir uint8, rule int) (datapath.RuleInfo, bool) {
	d.evMu.Lock()
	defer d.evMu.Unlock()
	rules := d.records[gen].Rules[sideName(pod, dir)]
	if rule < 0 || rule >= len(rules) {
		return datapath.RuleInfo{}, false
	}
	return rules[rule], true
}

func (d *Driver) policyRecordPath() string {
	if d.opts.StateDir == "" {
		return ""
	}
	return filepath.Join(d.opts.StateDir, "ebpf-policy.json")
}

func (d *Driver) savePolicyRecord(rec policyRecord) error {
	path := d.policyRecordPath()
	if path == "" {
		return nil
	}
	return statefile.PrivateJSON(path, rec)
}

// loadPolicyRecord reads the record of the enforced policy (an earlier run's).
func (d *Driver) loadPolicyRecord() error {
	path := d.policyRecordPath()
	if path == "" {
		return nil
	}
	var rec policyRecord
	if found, err := statefile.ReadJSON(path, &rec); !found || err != nil {
		return err
	}
	d.record(rec)
	d.slots = datapath.NewRuleSlots(maxRuleSlots, rec.Slots)
	return nil
}
