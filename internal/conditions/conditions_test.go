package conditions

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// state renders the kstatus triple as a string like "Ready=False Reconciling=True".
func state(conds []metav1.Condition) string {
	out := ""
	for _, typ := range []string{fabricv1.ConditionReady, fabricv1.ConditionReconciling, fabricv1.ConditionStalled} {
		if c := meta.FindStatusCondition(conds, typ); c != nil {
			if out != "" {
				out += " "
			}
			out += typ + "=" + string(c.Status)
		}
	}
	return out
}

func TestEachMarkLeavesExactlyOneState(t *testing.T) {
	var conds []metav1.Condition
	steps := []struct {
		name string
		mark func()
		want string
	}{
		{"reconciling", func() { MarkReconciling(&conds, 1, "Progressing", "working") }, "Ready=False Reconciling=True"},
		{"stalled", func() { MarkStalled(&conds, 2, "OverlappingCIDR", "bad") }, "Ready=False Stalled=True"},
		{"ready", func() { MarkReady(&conds, 3, "Reconciled", "ok") }, "Ready=True"},
		{"reconciling again", func() { MarkReconciling(&conds, 4, "Progressing", "again") }, "Ready=False Reconciling=True"},
	}
	for _, s := range steps {
		s.mark()
		if got := state(conds); got != s.want {
			t.Fatalf("after %s: got %q, want %q", s.name, got, s.want)
		}
	}
	ready := meta.FindStatusCondition(conds, fabricv1.ConditionReady)
	if ready.ObservedGeneration != 4 || ready.Message != "again" {
		t.Errorf("Ready condition not updated: %+v", ready)
	}
	if IsReady(conds) {
		t.Errorf("IsReady = true while reconciling")
	}
	MarkReady(&conds, 5, "Reconciled", "ok")
	if !IsReady(conds) {
		t.Errorf("IsReady = false after MarkReady")
	}
}
