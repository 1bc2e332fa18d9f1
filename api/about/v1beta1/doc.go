// Package v1beta1 is the ClusterProperty API of KEP-2149 (about.k8s.io/v1beta1, the schema
// of sigs.k8s.io/about-api, which the Go module proxy does not serve): cluster-scoped
// name/value pairs through which multi-cluster tools learn a cluster's identity. weft writes
// cluster.clusterset.k8s.io (the ClusterNetwork's clusterID) and clusterset.k8s.io (its
// clusterSetID).
// +kubebuilder:object:generate=true
// +groupName=about.k8s.io
package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is about.k8s.io/v1beta1.
	GroupVersion = schema.GroupVersion{Group: "about.k8s.io", Version: "v1beta1"}
	// SchemeBuilder registers the types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// The well-known properties (KEP-2149).
const (
	// ClusterIDProperty holds the cluster's ID, unique in its clusterset.
	ClusterIDProperty = "cluster.clusterset.k8s.io"
	// ClusterSetProperty holds the ID of the clusterset the cluster belongs to.
	ClusterSetProperty = "clusterset.k8s.io"
)
