package testenv

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CheckCondition returns nil when conds has the condition with that status and reason (an
// empty reason matches any), else an error that shows what is there.
func CheckCondition(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition; have %s", typ, Describe(conds))
	}
	if c.Status != status || (reason != "" && c.Reason != reason) {
		return fmt.Errorf("want %s=%s reason %q; have %s", typ, status, reason, Describe(conds))
	}
	return nil
}

// CheckAbsent returns nil when conds has no condition of that type.
func CheckAbsent(conds []metav1.Condition, typ string) error {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return fmt.Errorf("want no %s condition; have %s", typ, Describe(conds))
	}
	return nil
}

// Describe renders conditions for failure messages.
func Describe(conds []metav1.Condition) string {
	if len(conds) == 0 {
		return "no conditions"
	}
	s := ""
	for _, c := range conds {
		s += fmt.Sprintf("[%s=%s %s: %s] ", c.Type, c.Status, c.Reason, c.Message)
	}
	return s
}
