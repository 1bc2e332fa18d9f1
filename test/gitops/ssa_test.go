package gitops_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/cmd/weft-operator/manager/managertest"
	"github.com/weft-net/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// gitManager is the field manager Argo CD's server-side apply uses.
const gitManager = "argocd-controller"

func applyFromGit(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, opts ...client.PatchOption) error {
	for _, o := range objs {
		o = o.DeepCopy()
		if err := c.Patch(ctx, o, client.Apply, append([]client.PatchOption{client.FieldOwner(gitManager)}, opts...)...); err != nil {
			return fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

func live(ctx context.Context, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(o.GroupVersionKind())
	return got, env.Client.Get(ctx, client.ObjectKeyFromObject(o), got)
}

// specOwners lists the field managers other than Git that own fields of spec.
func specOwners(o *unstructured.Unstructured) []string {
	var owners []string
	for _, mf := range o.GetManagedFields() {
		if mf.Manager == gitManager || mf.FieldsV1 == nil || mf.Subresource != "" {
			continue
		}
		if strings.Contains(string(mf.FieldsV1.Raw), `"f:spec"`) {
			owners = append(owners, mf.Manager)
		}
	}
	return owners
}

// Applying the samples from Git twice with server-side apply changes nothing the second
// time, after the operator has reconciled them: it writes status only, so Argo CD and Flux
// see no drift.
func TestSamplesAppliedTwiceShowNoDrift(t *testing.T) {
	ctx := context.Background()
	managertest.Start(t, env, nil)
	samples, err := testenv.Kustomize("config/samples")
	if err != nil {
		t.Fatal(err)
	}
	var fromGit []*unstructured.Unstructured
	for _, s := range samples {
		// ServiceImports are written by the operator from peers' exports, never kept in Git.
		if s.GetKind() != "ServiceImport" {
			fromGit = append(fromGit, s)
		}
	}
	if len(fromGit) < 5 {
		t.Fatalf("config/samples gave %d objects to apply", len(fromGit))
	}
	if err := applyFromGit(ctx, env.Client, fromGit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, o := range fromGit {
			_ = env.Client.Delete(ctx, o)
		}
	})

	// Wait until the operator has reconciled what it reconciles (status written at the
	// object's generation) and what it writes beside them is in place.
	before := map[string]*unstructured.Unstructured{}
	testenv.Eventually(t, 30*time.Second, func() error {
		var errs []error
		for _, o := range fromGit {
			got, err := live(ctx, o)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if o.GetAPIVersion() == "fabric.weft.dev/v1alpha1" {
				og, _, _ := unstructured.NestedInt64(got.Object, "status", "observedGeneration")
				if og != got.GetGeneration() {
					errs = append(errs, fmt.Errorf("%s %s not reconciled yet", o.GetKind(), o.GetName()))
				}
			}
			if o.GetKind() == "ServiceExport" {
				if conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions"); len(conds) == 0 {
					errs = append(errs, fmt.Errorf("ServiceExport %s has no conditions yet", o.GetName()))
				}
			}
			before[o.GetKind()+"/"+o.GetName()] = got
		}
		return errors.Join(errs...)
	})
	time.Sleep(2 * time.Second) // let any follow-up reconcile land before comparing

	// A dry run of the same apply changes nothing: what Argo CD's server-side diff shows.
	for _, o := range fromGit {
		dry := o.DeepCopy()
		if err := env.Client.Patch(ctx, dry, client.Apply, client.FieldOwner(gitManager), client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		cur, err := live(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if dry.GetGeneration() != cur.GetGeneration() {
			t.Errorf("%s %s: a dry-run apply of the Git copy moves generation %d to %d (drift)", o.GetKind(), o.GetName(), cur.GetGeneration(), dry.GetGeneration())
		}
	}

	if err := applyFromGit(ctx, env.Client, fromGit); err != nil {
		t.Fatal(err)
	}
	for _, o := range fromGit {
		after, err := live(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		b := before[o.GetKind()+"/"+o.GetName()]
		if after.GetGeneration() != b.GetGeneration() {
			t.Errorf("%s %s: generation %d after the second apply, %d before (spec changed)", o.GetKind(), o.GetName(), after.GetGeneration(), b.GetGeneration())
		}
		if owners := specOwners(after); len(owners) > 0 {
			t.Errorf("%s %s: spec fields are owned by %v besides Git (someone writes spec)", o.GetKind(), o.GetName(), owners)
		}
		spec1, _, _ := unstructured.NestedFieldNoCopy(b.Object, "spec")
		spec2, _, _ := unstructured.NestedFieldNoCopy(after.Object, "spec")
		if fmt.Sprint(spec1) != fmt.Sprint(spec2) {
			t.Errorf("%s %s: spec changed:\n%v\n%v", o.GetKind(), o.GetName(), spec1, spec2)
		}
	}
}
