// Package conditions sets the kstatus condition triple (Ready, Reconciling, Stalled) on weft
// objects consistently, so Argo CD, Flux and `kubectl wait` read their health.
//
// The three helpers are the only way controllers change that triple; each leaves exactly one
// state: reconciling, stalled or ready. Other condition types (such as Connected) are set
// directly with meta.SetStatusCondition. It is not a generic condition library.
package conditions

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// MarkReconciling says the operator is still working: Reconciling=True, Ready=False, no Stalled.
func MarkReconciling(conds *[]metav1.Condition, generation int64, reason, message string) {
	set(conds, generation, fabricv1.ConditionReconciling, metav1.ConditionTrue, reason, message)
	set(conds, generation, fabricv1.ConditionReady, metav1.ConditionFalse, reason, message)
	meta.RemoveStatusCondition(conds, fabricv1.ConditionStalled)
}

// MarkStalled says progress needs the user: Stalled=True, Ready=False, no Reconciling.
func MarkStalled(conds *[]metav1.Condition, generation int64, reason, message string) {
	set(conds, generation, fabricv1.ConditionStalled, metav1.ConditionTrue, reason, message)
	set(conds, generation, fabricv1.ConditionReady, metav1.ConditionFalse, reason, message)
	meta.RemoveStatusCondition(conds, fabricv1.ConditionReconciling)
}

// MarkReady says the desired state is realized: Ready=True, no Reconciling, no Stalled.
func MarkReady(conds *[]metav1.Condition, generation int64, reason, message string) {
	set(conds, generation, fabricv1.ConditionReady, metav1.ConditionTrue, reason, message)
	meta.RemoveStatusCondition(conds, fabricv1.ConditionReconciling)
	meta.RemoveStatusCondition(conds, fabricv1.ConditionStalled)
}

// IsReady reports whether Ready is True.
func IsReady(conds []metav1.Condition) bool {
	return meta.IsStatusConditionTrue(conds, fabricv1.ConditionReady)
}

func set(conds *[]metav1.Condition, generation int64, typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(conds, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: generation,
	})
}
