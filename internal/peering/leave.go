package peering

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Leave undoes Join: in each cluster, the ClusterPeer naming the other and its kubeconfig
// Secret go, and the other's identity goes (ServiceAccount — which revokes its tokens — and
// bindings); the shared reader roles go with the last peer bound to them. It is idempotent,
// and needs both ClusterNetworks (for the cluster IDs): leave before deleting them.
func Leave(ctx context.Context, a, b Cluster, opts Options) error {
	if opts.Namespace == "" {
		opts.Namespace = "weft-system"
	}
	idA, err := clusterID(ctx, a)
	if err != nil {
		return err
	}
	idB, err := clusterID(ctx, b)
	if err != nil {
		return err
	}
	return errors.Join(revoke(ctx, a, b, idA, idB, opts.Namespace), revoke(ctx, b, a, idB, idA, opts.Namespace))
}

// revoke takes back what grant gave reader in target.
func revoke(ctx context.Context, reader, target Cluster, readerID, targetID, ns string) error {
	var errs []error
	del := func(c Cluster, o client.Object) {
		if err := c.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: deleting %T %s: %w", c.Name, o, o.GetName(), err))
		}
	}
	del(reader, &fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: targetID}})
	del(reader, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "peer-" + targetID, Namespace: ns}})
	del(target, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "weft:peer:" + readerID}})
	del(target, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "weft:peer-records:" + readerID, Namespace: ns}})
	del(target, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "peer-" + readerID, Namespace: ns}})

	// The reader roles are shared by every peer of target: they go with the last binding.
	crbs := &rbacv1.ClusterRoleBindingList{}
	if err := target.Client.List(ctx, crbs, client.MatchingLabels{"app.kubernetes.io/managed-by": "weftctl"}); err != nil {
		errs = append(errs, err)
	} else if !anyBinds(crbs.Items, func(b rbacv1.ClusterRoleBinding) rbacv1.RoleRef { return b.RoleRef }, ReaderRole) {
		del(target, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ReaderRole}})
	}
	rbs := &rbacv1.RoleBindingList{}
	if err := target.Client.List(ctx, rbs, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/managed-by": "weftctl"}); err != nil {
		errs = append(errs, err)
	} else if !anyBinds(rbs.Items, func(b rbacv1.RoleBinding) rbacv1.RoleRef { return b.RoleRef }, RecordReaderRole) {
		del(target, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: RecordReaderRole, Namespace: ns}})
	}
	return errors.Join(errs...)
}

func anyBinds[T any](bindings []T, ref func(T) rbacv1.RoleRef, role string) bool {
	for _, b := range bindings {
		if ref(b).Name == role {
			return true
		}
	}
	return false
}
