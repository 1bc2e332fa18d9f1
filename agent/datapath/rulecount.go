package datapath

import (
	"fmt"
	"slices"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// RuleCount is what one enforced rule decided since it was first enforced on this node:
// the packets it allowed, dropped or rejected. A connection is decided once, by its first
// packet, when the rule allows it; every packet a rule drops or rejects was decided (a
// refused client's retransmissions each count). Pass rules decide nothing and have none.
type RuleCount struct {
	Rule    RuleInfo
	Packets uint64
}

// RuleSlots numbers the rules a driver counts: each enforced rule that decides (not Pass)
// keeps one counter slot, 1 to Max-1, for as long as it is enforced — whatever else is
// added or removed — so that its count grows monotonically across policy changes. Slot 0
// counts nothing. A driver keeps one RuleSlots per node and saves it with its policy.
type RuleSlots struct {
	// Max is the number of slots (the counters' array size); rules beyond Max-1 are not
	// counted.
	Max   int
	slots map[RuleInfo]uint32
}

// RuleSlot is one rule and its slot, as saved.
type RuleSlot struct {
	Rule RuleInfo `json:"rule"`
	Slot uint32   `json:"slot"`
}

// NewRuleSlots numbers rules into max slots, starting from saved (an earlier run's).
func NewRuleSlots(max int, saved []RuleSlot) *RuleSlots {
	s := &RuleSlots{Max: max, slots: map[RuleInfo]uint32{}}
	for _, e := range saved {
		if e.Slot > 0 && int(e.Slot) < max {
			s.slots[e.Rule] = e.Slot
		}
	}
	return s
}

// Assign gives every deciding rule of rules a slot: the one it has, else the lowest free.
// Rules that are no longer enforced give theirs up: freed are those slots, whose counters
// the driver zeroes before giving them to another rule. A rule that finds no free slot is
// not counted (err says how many).
func (s *RuleSlots) Assign(rules []RuleInfo) (freed []uint32, err error) {
	want := map[RuleInfo]bool{}
	for _, r := range rules {
		if r.Action != fabricv1.ActionPass {
			want[r] = true
		}
	}
	used := map[uint32]bool{}
	for r, slot := range s.slots {
		if want[r] {
			used[slot] = true
			continue
		}
		delete(s.slots, r)
		freed = append(freed, slot)
	}
	// New rules in a stable order, so that the same policy numbers the same way.
	var added []RuleInfo
	for r := range want {
		if _, ok := s.slots[r]; !ok {
			added = append(added, r)
		}
	}
	slices.SortFunc(added, compareRuleInfo)
	next, missing := uint32(1), 0
	for _, r := range added {
		for used[next] {
			next++
		}
		if int(next) >= s.Max {
			missing++
			continue
		}
		s.slots[r], used[next] = next, true
	}
	slices.Sort(freed)
	if missing > 0 {
		err = fmt.Errorf("%d of this node's rules are not counted: at most %d are", missing, s.Max-1)
	}
	return freed, err
}

// Slot is the rule's slot (0: not counted).
func (s *RuleSlots) Slot(r RuleInfo) uint32 { return s.slots[r] }

// Saved is what NewRuleSlots takes back, in slot order.
func (s *RuleSlots) Saved() []RuleSlot {
	out := make([]RuleSlot, 0, len(s.slots))
	for r, slot := range s.slots {
		out = append(out, RuleSlot{Rule: r, Slot: slot})
	}
	slices.SortFunc(out, func(a, b RuleSlot) int { return int(a.Slot) - int(b.Slot) })
	return out
}

// Counts pairs each counted rule with its slot's value, read by count.
func (s *RuleSlots) Counts(count func(slot uint32) (uint64, error)) ([]RuleCount, error) {
	out := make([]RuleCount, 0, len(s.slots))
	for _, e := range s.Saved() {
		n, err := count(e.Slot)
		if err != nil {
			return nil, fmt.Errorf("the counter of %s %s/%s %s: %w", e.Rule.Direction, e.Rule.Tier, e.Rule.Policy, e.Rule.Rule, err)
		}
		out = append(out, RuleCount{Rule: e.Rule, Packets: n})
	}
	return out, nil
}

func compareRuleInfo(a, b RuleInfo) int {
	for _, c := range [][2]string{{a.Direction, b.Direction}, {a.Tier, b.Tier}, {a.Policy, b.Policy}, {a.Rule, b.Rule},
		{string(a.Action), string(b.Action)}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}
