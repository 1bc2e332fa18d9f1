package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// ExportRecordSpec is one cluster's export of one Service, as its peers need it to build
// their ServiceImports: the Service's shape and its ready endpoints.
type ExportRecordSpec struct {
	// Cluster is the exporting cluster's ID.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster"`

	// Service names the exported Service.
	// +required
	Service ServiceRef `json:"service"`

	// ExportCreated is when the ServiceExport was made: of several clusters' exports of one
	// Service, the oldest decides what the others must agree with.
	// +required
	ExportCreated metav1.Time `json:"exportCreated"`

	// Type is ClusterSetIP, or Headless for a headless Service.
	// +required
	Type mcsv1.ServiceImportType `json:"type"`

	// Ports of the Service.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Ports []mcsv1.ServicePort `json:"ports,omitempty"`

	// SessionAffinity, SessionAffinityConfig, InternalTrafficPolicy, TrafficDistribution
	// and IPFamilies are the Service's.
	// +optional
	SessionAffinity corev1.ServiceAffinity `json:"sessionAffinity,omitempty"`
	// +optional
	SessionAffinityConfig *corev1.SessionAffinityConfig `json:"sessionAffinityConfig,omitempty"`
	// +optional
	InternalTrafficPolicy *corev1.ServiceInternalTrafficPolicy `json:"internalTrafficPolicy,omitempty"`
	// +optional
	TrafficDistribution *string `json:"trafficDistribution,omitempty"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	IPFamilies []corev1.IPFamily `json:"ipFamilies,omitempty"`

	// ExportedLabels and ExportedAnnotations are the ServiceExport's, for the ServiceImport.
	// +optional
	ExportedLabels map[string]string `json:"exportedLabels,omitempty"`
	// +optional
	ExportedAnnotations map[string]string `json:"exportedAnnotations,omitempty"`

	// Endpoints are the Service's ready endpoints, one entry per address type.
	// +optional
	// +listType=map
	// +listMapKey=addressType
	// +kubebuilder:validation:MaxItems=2
	Endpoints []RecordEndpoints `json:"endpoints,omitempty"`
}

// ServiceRef names a Service.
type ServiceRef struct {
	// +required
	Namespace string `json:"namespace"`
	// +required
	Name string `json:"name"`
}

// RecordEndpoints are a Service's ready endpoints of one address type, as EndpointSlices
// carry them.
type RecordEndpoints struct {
	// AddressType is IPv4 or IPv6.
	// +required
	// +kubebuilder:validation:Enum=IPv4;IPv6
	AddressType discoveryv1.AddressType `json:"addressType"`
	// Endpoints, sorted by address.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10000
	Endpoints []discoveryv1.Endpoint `json:"endpoints,omitempty"`
	// Ports the endpoints serve, named as the Service's ports.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Ports []discoveryv1.EndpointPort `json:"ports,omitempty"`
}

// ExportRecord is what a cluster publishes of one ServiceExport for its peers, in weft's
// namespace, where the peers' read-only identities may read it: the exported Service's
// shape and ready endpoints. The exporting cluster's operator writes it (named
// "<namespace>.<name>" of the Service) and removes it when the export goes; every cluster
// merges its own and its peers' records into its ServiceImports, derived Services and
// EndpointSlices.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=weft,shortName=erec
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.service.namespace`
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service.name`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ExportRecord struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ExportRecordSpec `json:"spec"`
}

// ExportRecordList is a list of ExportRecords.
// +kubebuilder:object:root=true
type ExportRecordList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ExportRecord `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ExportRecord{}, &ExportRecordList{})
}
