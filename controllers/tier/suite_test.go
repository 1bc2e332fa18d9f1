package tier_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/cmd/weft-operator/manager/managertest"
	"github.com/weft-net/weft/controllers/tier"
	"github.com/weft-net/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const webhookConfig = "weft-validating-webhook-configuration"

func getTier(name string) (*fabricv1.Tier, error) {
	t := &fabricv1.Tier{}
	return t, env.Client.Get(context.Background(), client.ObjectKey{Name: name}, t)
}

func newTier(name string, p int32) *fabricv1.Tier {
	return &fabricv1.Tier{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.TierSpec{Priority: p}}
}

func TestTiers(t *testing.T) {
	ctx := context.Background()
	managertest.Start(t, env, nil)

	t.Run("built-in tiers are created and Ready", func(t *testing.T) {
		for _, want := range tier.Builtin {
			testenv.Eventually(t, 20*time.Second, func() error {
				got, err := getTier(want.Name)
				if err != nil {
					return err
				}
				if got.Spec.Priority != want.Spec.Priority || got.Labels[tier.LabelBuiltin] != "true" {
					return fmt.Errorf("tier %s: priority %d labels %v", got.Name, got.Spec.Priority, got.Labels)
				}
				if got.Status.ObservedGeneration != got.Generation {
					return fmt.Errorf("tier %s not observed yet", got.Name)
				}
				return errors.Join(testenv.CheckCondition(got.Status.Conditions, "Ready", metav1.ConditionTrue, ""),
					testenv.CheckHealth(env.Client, got, kstatus.CurrentStatus))
			})
		}
	})

	t.Run("a deleted built-in tier comes back", func(t *testing.T) {
		old, err := getTier("platform")
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Delete(ctx, old); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			got, err := getTier("platform")
			if err != nil {
				return err
			}
			if got.UID == old.UID {
				return errors.New("still the old object")
			}
			return nil
		})
	})

	t.Run("the webhook certificate is managed by the operator", func(t *testing.T) {
		secret := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-webhook-cert"}, secret); err != nil {
			t.Fatalf("no certificate Secret: %v", err)
		}
		cfg := &admissionv1.ValidatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: webhookConfig}, cfg); err != nil {
			t.Fatal(err)
		}
		if got := string(cfg.Webhooks[0].ClientConfig.CABundle); got != string(secret.Data["ca.crt"]) || got == "" {
			t.Errorf("caBundle (%d bytes) is not the Secret's CA (%d bytes)", len(got), len(secret.Data["ca.crt"]))
		}
	})

	t.Run("a duplicate priority is refused at admission, naming the holder", func(t *testing.T) {
		err := env.Client.Create(ctx, newTier("shadow-app", 250))
		if err == nil {
			t.Fatal("a second tier with priority 250 was admitted")
		}
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `already held by tier "application"`) {
			t.Fatalf("rejection = %v; want Invalid naming tier \"application\"", err)
		}
		if err := env.Client.Create(ctx, newTier("team-a", 120)); err != nil {
			t.Fatalf("a free priority was refused: %v", err)
		}
	})

	t.Run("a tier that policies use is refused at deletion, naming them", func(t *testing.T) {
		p := &fabricv1.FabricPolicy{ObjectMeta: metav1.ObjectMeta{Name: "uses-team-a"}, Spec: fabricv1.FabricPolicySpec{
			Tier: "team-a", Priority: 1, AppliedTo: []fabricv1.PolicyTarget{{PodSelector: &metav1.LabelSelector{}}}}}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		team, err := getTier("team-a")
		if err != nil {
			t.Fatal(err)
		}
		err = env.Client.Delete(ctx, team)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `tier "team-a" is used by FabricPolicies uses-team-a`) {
			t.Fatalf("deleting a tier in use: %v; want Forbidden naming the policy", err)
		}
		if err := env.Client.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() error { // the in-use finalizer goes with the policy
			return env.Client.Delete(ctx, team)
		})
	})

	t.Run("a duplicate that slipped past admission is Stalled until the holder goes", func(t *testing.T) {
		// Remove the webhook, as if the tier had been created before the operator was installed.
		cfg := &admissionv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhookConfig}}
		if err := env.Client.Delete(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		holder := newTier("first", 77)
		if err := env.Client.Create(ctx, holder); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second resolution
		if err := env.Client.Create(ctx, newTier("second", 77)); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			got, err := getTier("second")
			if err != nil {
				return err
			}
			if err := errors.Join(testenv.CheckCondition(got.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonDuplicatePriority),
				testenv.CheckHealth(env.Client, got, kstatus.FailedStatus)); err != nil {
				return err
			}
			if !strings.Contains(got.Status.Conditions[0].Message+got.Status.Conditions[1].Message, `tier "first"`) {
				return fmt.Errorf("message does not name the holder: %s", testenv.Describe(got.Status.Conditions))
			}
			return nil
		})
		first, _ := getTier("first")
		if err := testenv.CheckCondition(first.Status.Conditions, "Ready", metav1.ConditionTrue, ""); err != nil {
			t.Errorf("the holder: %v", err)
		}
		if err := env.Client.Delete(ctx, holder); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() error {
			got, err := getTier("second")
			if err != nil {
				return err
			}
			return errors.Join(
				testenv.CheckCondition(got.Status.Conditions, "Ready", metav1.ConditionTrue, ""),
				testenv.CheckAbsent(got.Status.Conditions, "Stalled"))
		})
	})
}
