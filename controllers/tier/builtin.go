package tier

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// LabelBuiltin marks the tiers the operator creates and keeps.
const LabelBuiltin = "fabric.weft.dev/built-in"

// Builtin is the tier set every cluster has, in evaluation order. Kubernetes NetworkPolicy is
// evaluated between Application and Baseline.
var Builtin = []fabricv1.Tier{
	builtin("emergency", 50, "Emergency overrides, evaluated first."),
	builtin("securityops", 100, "Policies of the security operations team."),
	builtin("networkops", 150, "Policies of the network operations team."),
	builtin("platform", 200, "Platform-wide policies."),
	builtin("application", 250, "Application policies; Kubernetes NetworkPolicy is evaluated after this tier."),
	builtin("baseline", 253, "Defaults evaluated after Kubernetes NetworkPolicy."),
}

func builtin(name string, priority int32, description string) fabricv1.Tier {
	return fabricv1.Tier{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelBuiltin: "true"}},
		Spec:       fabricv1.TierSpec{Priority: priority, Description: description},
	}
}

// builtinNamed returns the built-in tier with that name, if there is one.
func builtinNamed(name string) (fabricv1.Tier, bool) {
	for _, t := range Builtin {
		if t.Name == name {
			return *t.DeepCopy(), true
		}
	}
	return fabricv1.Tier{}, false
}
