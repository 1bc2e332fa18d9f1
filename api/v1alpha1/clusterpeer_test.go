package v1alpha1_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestClusterPeerInForce(t *testing.T) {
	cond := func(typ string, s metav1.ConditionStatus) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s}
	}
	for _, c := range []struct {
		name  string
		conds []metav1.Condition
		want  bool
	}{
		{"accepted, tunnels not up yet", []metav1.Condition{cond("Accepted", "True"), cond("Ready", "False")}, true},
		{"held back, whatever Ready says", []metav1.Condition{cond("Accepted", "False"), cond("Ready", "True")}, false},
		{"written before Accepted existed: Ready meant the same", []metav1.Condition{cond("Ready", "True")}, true},
		{"written before Accepted existed, not Ready", []metav1.Condition{cond("Ready", "False")}, false},
		{"no status yet", nil, false},
	} {
		st := fabricv1.ClusterPeerStatus{Conditions: c.conds}
		if got := st.InForce(); got != c.want {
			t.Errorf("%s: InForce() = %t, want %t", c.name, got, c.want)
		}
	}
}
