// Package patch writes an object's status through the status subresource, only when it
// changed. It never touches spec or metadata.
package patch

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Status patches after's status against before (a deep copy taken when the object was read).
// statusOf returns the status field of an object, for the change check.
func Status[T client.Object](ctx context.Context, c client.Client, before, after T, statusOf func(T) any) error {
	if equality.Semantic.DeepEqual(statusOf(before), statusOf(after)) {
		return nil
	}
	// A phase may have written the object meanwhile (a finalizer) and kept its new version:
	// the patch must not carry the version change, or it would be refused as a conflict.
	base := before.DeepCopyObject().(T)
	base.SetResourceVersion(after.GetResourceVersion())
	return client.IgnoreNotFound(c.Status().Patch(ctx, after, client.MergeFrom(base)))
}
