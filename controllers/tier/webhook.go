package tier

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/fabricpolicy"
)

// +kubebuilder:webhook:path=/validate-fabric-weft-dev-v1alpha1-tier,mutating=false,failurePolicy=fail,sideEffects=None,groups=fabric.weft.dev,resources=tiers,verbs=create;delete,versions=v1alpha1,name=vtier.fabric.weft.dev,admissionReviewVersions=v1,timeoutSeconds=5

// Validator refuses a Tier whose priority another tier already holds (priority is immutable,
// a CEL rule on the CRD, so only creation needs the check), and the deletion of a tier that
// FabricPolicies use (the finalizer of package fabricpolicy holds such a tier anyway; this
// says so at once).
type Validator struct {
	// Reader lists tiers. Use the manager's API reader, not the cache: a tier created a moment
	// ago must already count.
	Reader client.Reader
}

var _ admission.Validator[*fabricv1.Tier] = &Validator{}

// ValidateCreate refuses a duplicate priority, naming the tier that holds it.
func (v *Validator) ValidateCreate(ctx context.Context, t *fabricv1.Tier) (admission.Warnings, error) {
	tiers := &fabricv1.TierList{}
	if err := v.Reader.List(ctx, tiers); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing tiers: %w", err))
	}
	for _, other := range tiers.Items {
		if other.Name != t.Name && other.Spec.Priority == t.Spec.Priority && other.DeletionTimestamp == nil {
			return nil, apierrors.NewInvalid(fabricv1.GroupVersion.WithKind("Tier").GroupKind(), t.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "priority"), t.Spec.Priority,
					fmt.Sprintf("already held by tier %q; priorities are unique", other.Name)),
			})
		}
	}
	return nil, nil
}

// ValidateUpdate allows every update: priority cannot change (CEL), the rest is free.
func (v *Validator) ValidateUpdate(context.Context, *fabricv1.Tier, *fabricv1.Tier) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete refuses to delete a tier that policies use, naming them.
func (v *Validator) ValidateDelete(ctx context.Context, t *fabricv1.Tier) (admission.Warnings, error) {
	users, err := fabricpolicy.UsersOf(ctx, v.Reader, t.Name)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if len(users) > 0 {
		return nil, apierrors.NewForbidden(fabricv1.GroupVersion.WithResource("tiers").GroupResource(), t.Name,
			errors.New(fabricpolicy.InUseMessage(t.Name, users)))
	}
	return nil, nil
}

// SetupWebhookWithManager registers the validating webhook on the manager's webhook server.
func SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &fabricv1.Tier{}).
		WithValidator(&Validator{Reader: mgr.GetAPIReader()}).
		Complete()
}
