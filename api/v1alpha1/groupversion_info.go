// Package v1alpha1 is the fabric.weft.dev/v1alpha1 API: the objects users write to describe
// this cluster's fabric (ClusterNetwork), its peers (ClusterPeer), policy tiers (Tier) and the
// policies in them (FabricPolicy); and the records weft keeps itself (ExportRecord: a Service
// this cluster exports, as its peers read it).
//
// The kinds users write are cluster-scoped, and the operator writes only their status, never
// their spec, so GitOps tools see no drift. ExportRecords live in the operator's namespace.
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
