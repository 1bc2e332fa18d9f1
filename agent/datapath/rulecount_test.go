package datapath

import (
	"slices"
	"testing"
)

// A rule keeps its slot while it is enforced, whatever comes and goes around it; a removed
// rule's slot is freed (for its counter to be zeroed) and given to the next new rule; Pass
// rules and rules beyond the slots get none; what is saved numbers the same way again.
func TestRuleSlots(t *testing.T) {
	a := RuleInfo{Tier: "t", Policy: "p", Rule: "a", Action: "Allow", Direction: "Ingress"}
	b := RuleInfo{Tier: "t", Policy: "p", Rule: "b", Action: "Drop", Direction: "Ingress"}
	c := RuleInfo{Tier: "t", Policy: "p", Rule: "c", Action: "Reject", Direction: "Egress"}
	pass := RuleInfo{Tier: "t", Policy: "p", Rule: "pass", Action: "Pass", Direction: "Egress"}
	s := NewRuleSlots(3, nil)
	if freed, err := s.Assign([]RuleInfo{b, a, pass, a}); err != nil || len(freed) != 0 {
		t.Fatalf("first assignment: freed %v, %v", freed, err)
	}
	sa, sb := s.Slot(a), s.Slot(b)
	if sa == 0 || sb == 0 || sa == sb || s.Slot(pass) != 0 {
		t.Fatalf("slots a=%d b=%d pass=%d: want two distinct non-zero slots and none for Pass", sa, sb, s.Slot(pass))
	}
	// c comes and a goes in one change: a's slot is freed, c takes it, b keeps its own.
	freed, err := s.Assign([]RuleInfo{c, b})
	if err != nil || !slices.Equal(freed, []uint32{sa}) {
		t.Fatalf("freed %v (%v), want [%d]", freed, err, sa)
	}
	if s.Slot(b) != sb || s.Slot(c) != sa || s.Slot(a) != 0 {
		t.Errorf("after the change: b=%d (was %d), c=%d (want %d), a=%d (want 0)", s.Slot(b), sb, s.Slot(c), sa, s.Slot(a))
	}
	// Two slots (1 and 2) are all there are: a third rule is enforced, not counted.
	if _, err := s.Assign([]RuleInfo{c, b, a}); err == nil || s.Slot(a) != 0 {
		t.Errorf("a third rule in two slots: slot %d, err %v; want 0 and an error", s.Slot(a), err)
	}
	again := NewRuleSlots(3, s.Saved())
	if again.Slot(b) != sb || again.Slot(c) != sa {
		t.Errorf("restored from what was saved: b=%d c=%d, want %d %d", again.Slot(b), again.Slot(c), sb, sa)
	}
	counts, err := again.Counts(func(slot uint32) (uint64, error) { return uint64(slot) * 10, nil })
	if err != nil || len(counts) != 2 {
		t.Fatalf("counts %v, %v", counts, err)
	}
	for _, rc := range counts {
		if rc.Packets != uint64(again.Slot(rc.Rule))*10 {
			t.Errorf("%+v: packets %d, want its slot's counter", rc.Rule, rc.Packets)
		}
	}
}
