package testenv

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/weft-net/weft/internal/argohealth"
)

// CheckHealth checks what GitOps tools make of an object the operator reconciled: kstatus
// (Flux's wait, cli-utils) must say want, and the Argo CD health check weft ships for the
// kind, if any, must say the same in Argo CD's words.
func CheckHealth(c client.Client, obj client.Object, want kstatus.Status) error {
	return CheckHealthAs(c, obj, want, argohealth.ArgoStatus(want))
}

// CheckHealthAs is CheckHealth where the two tools' words differ: a ClusterPeer served from
// its last known state is Current to kstatus (nothing is broken: Flux's wait passes) and
// Degraded to Argo CD (which has the word).
func CheckHealthAs(c client.Client, obj client.Object, want kstatus.Status, wantArgo string) error {
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	res, err := kstatus.Compute(u)
	if err != nil {
		return fmt.Errorf("kstatus: %w", err)
	}
	if res.Status != want {
		return fmt.Errorf("%s %s: kstatus says %s (%s), want %s", gvk.Kind, obj.GetName(), res.Status, res.Message, want)
	}
	check, ok := argohealth.For(gvk.Group, gvk.Kind)
	if !ok {
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	script, err := argohealth.Load(root, check.Script)
	if err != nil {
		return err
	}
	st, err := argohealth.Run(script, u.Object)
	if err != nil {
		return fmt.Errorf("argo cd health of %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	if st.Status != wantArgo {
		return fmt.Errorf("%s %s: Argo CD health %s (%s), want %s", gvk.Kind, obj.GetName(), st.Status, st.Message, wantArgo)
	}
	return nil
}
