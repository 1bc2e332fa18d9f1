package peering

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/operator"
)

// A controller writing the ClusterPeer between upsert's read and write must not fail a join.
func TestUpsertRetriesOnConflict(t *testing.T) {
	existing := &fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: "west"},
		Spec: fabricv1.ClusterPeerSpec{ClusterID: "west", KubeconfigSecretRef: fabricv1.SecretKeyRef{Namespace: "ns", Name: "old", Key: "kubeconfig"}}}
	updates := 0
	c := interceptor.NewClient(fake.NewClientBuilder().WithScheme(operator.NewScheme()).WithObjects(existing).Build(),
		interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			updates++
			if updates == 1 {
				return apierrors.NewConflict(schema.GroupResource{Group: "fabric.weft.dev", Resource: "clusterpeers"}, obj.GetName(), nil)
			}
			return c.Update(ctx, obj, opts...)
		}})
	desired := existing.DeepCopy()
	desired.ResourceVersion = ""
	desired.Spec.KubeconfigSecretRef.Name = "peer-west"
	if err := upsert(context.Background(), c, desired); err != nil {
		t.Fatalf("upsert after a conflict: %v", err)
	}
	got := &fabricv1.ClusterPeer{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "west"}, got); err != nil {
		t.Fatal(err)
	}
	if updates != 2 || got.Spec.KubeconfigSecretRef.Name != "peer-west" {
		t.Errorf("updates %d, secret ref %q; want a retried update to peer-west", updates, got.Spec.KubeconfigSecretRef.Name)
	}
}
