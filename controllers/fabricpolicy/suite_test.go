package fabricpolicy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/fabricpolicy"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func startControllers(t *testing.T) {
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: operator.NewScheme(),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fabricpolicy.Setup(context.Background(), mgr); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)
}

func policy(name, tier string) *fabricv1.FabricPolicy {
	return &fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricPolicySpec{
		Tier: tier, Priority: 1, AppliedTo: []fabricv1.PolicyTarget{{PodSelector: &metav1.LabelSelector{}}},
		Ingress: []fabricv1.PolicyRule{{Name: "deny", Action: fabricv1.ActionDrop}}}}
}

func waitPolicy(t *testing.T, name string, check func(*fabricv1.FabricPolicy) error) *fabricv1.FabricPolicy {
	t.Helper()
	p := &fabricv1.FabricPolicy{}
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
			return err
		}
		if p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("generation %d not observed yet", p.Generation)
		}
		return check(p)
	})
	return p
}

func TestPolicyStatusAndTierInUse(t *testing.T) {
	ctx := context.Background()
	startControllers(t)
	node := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{"10.244.1.0/24"}}}
	// A node without a weft block runs no agent: it is not counted.
	if err := env.Client.Create(ctx, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: "n0"}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}

	t.Log("a policy naming a missing tier is Stalled with reason TierNotFound (kstatus Failed)")
	p := policy("web", "compliance")
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, "web", func(p *fabricv1.FabricPolicy) error {
		return errors.Join(testenv.CheckCondition(p.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricpolicy.ReasonTierNotFound),
			testenv.CheckHealth(env.Client, p, kstatus.FailedStatus))
	})

	t.Log("the tier appears: the policy is valid, waiting for enforcement on the cluster's node (InProgress)")
	tier := &fabricv1.Tier{ObjectMeta: metav1.ObjectMeta{Name: "compliance"}, Spec: fabricv1.TierSpec{Priority: 120}}
	if err := env.Client.Create(ctx, tier); err != nil {
		t.Fatal(err)
	}
	got := waitPolicy(t, "web", func(p *fabricv1.FabricPolicy) error {
		return errors.Join(testenv.CheckCondition(p.Status.Conditions, "Reconciling", metav1.ConditionTrue, fabricpolicy.ReasonEnforcementPending),
			testenv.CheckAbsent(p.Status.Conditions, "Stalled"),
			testenv.CheckHealth(env.Client, p, kstatus.InProgressStatus))
	})
	if got.Status.DesiredNodes != 1 || got.Status.RealizedNodes != 0 {
		t.Errorf("desired/realized nodes %d/%d, want 1/0", got.Status.DesiredNodes, got.Status.RealizedNodes)
	}

	t.Log("the node's agent reports it enforces this generation: Ready (Current), 1/1")
	setRealized := func(v ...fabricv1.RealizedPolicy) {
		t.Helper()
		n := &fabricv1.FabricNode{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "n1"}, n); err != nil {
			t.Fatal(err)
		}
		n.Status.RealizedPolicies = v
		if err := env.Client.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	setRealized(fabricv1.RealizedPolicy{Name: "other", Generation: 7}, fabricv1.RealizedPolicy{Name: "web", Generation: got.Generation})
	got = waitPolicy(t, "web", func(p *fabricv1.FabricPolicy) error {
		if p.Status.RealizedNodes != 1 {
			return fmt.Errorf("realized %d", p.Status.RealizedNodes)
		}
		return errors.Join(testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, fabricpolicy.ReasonEnforced),
			testenv.CheckHealth(env.Client, p, kstatus.CurrentStatus))
	})

	t.Log("a new generation is pending until the agent reports it")
	got.Spec.Priority++
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, "web", func(p *fabricv1.FabricPolicy) error {
		if p.Status.RealizedNodes != 0 {
			return fmt.Errorf("realized %d", p.Status.RealizedNodes)
		}
		return testenv.CheckCondition(p.Status.Conditions, "Reconciling", metav1.ConditionTrue, fabricpolicy.ReasonEnforcementPending)
	})

	t.Log("the tier in use carries the finalizer; deleting it leaves it Terminating")
	testenv.Eventually(t, 10*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(tier), tier); err != nil {
			return err
		}
		if !slices.Contains(tier.Finalizers, fabricpolicy.FinalizerInUse) {
			return fmt.Errorf("finalizers %v", tier.Finalizers)
		}
		return nil
	})
	if err := env.Client.Delete(ctx, tier); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(tier), tier); err != nil || tier.DeletionTimestamp.IsZero() {
		t.Fatalf("the tier in use should stay, Terminating: %v, %+v", err, tier.ObjectMeta)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		evs := &corev1.EventList{}
		if err := env.Client.List(ctx, evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "TierInUse" && e.InvolvedObject.Name == "compliance" {
				return nil
			}
		}
		return errors.New("no TierInUse event")
	})
	waitPolicy(t, "web", func(p *fabricv1.FabricPolicy) error {
		return testenv.CheckCondition(p.Status.Conditions, "Reconciling", metav1.ConditionTrue, fabricpolicy.ReasonEnforcementPending)
	})

	t.Log("moving the policy to another tier releases the tier, which goes; the policy follows its new tier")
	testenv.Eventually(t, 10*time.Second, func() error {
		cur := &fabricv1.FabricPolicy{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "web"}, cur); err != nil {
			return err
		}
		cur.Spec.Tier = "gone-too"
		return env.Client.Update(ctx, cur)
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(tier), &fabricv1.Tier{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("tier still there (%w)", err)
		}
		return nil
	})
	waitPolicy(t, "web", func(p *fabricv1.FabricPolicy) error {
		return testenv.CheckCondition(p.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricpolicy.ReasonTierNotFound)
	})
}

func TestInUseMessageNamesPolicies(t *testing.T) {
	got := fabricpolicy.InUseMessage("app", []string{"a", "b", "c", "d", "e", "f", "g"})
	want := `tier "app" is used by FabricPolicies a, b, c, d, e, and 2 more: move them to another tier or delete them first`
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
