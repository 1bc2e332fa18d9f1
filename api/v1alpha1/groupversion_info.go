// Package v1alpha1 is the fabric.weft.dev/v1alpha1 API: the objects users write to describe
// this cluster's fabric (ClusterNetwork), its peers (ClusterPeer) and policy tiers (Tier).
//
// All kinds are cluster-scoped. The operator writes only their status, never their spec, so
// GitOps tools see no drift.
//
// +kubebuilder:object:generate=true
// +groupName=fabric.weft.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "fabric.weft.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
