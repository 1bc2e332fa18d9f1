package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PolicyAction is what a matching rule does with a connection.
// +kubebuilder:validation:Enum=Allow;Drop;Reject;Pass
type PolicyAction string

const (
	// ActionAllow lets the connection through; no later rule or tier is consulted.
	ActionAllow PolicyAction = "Allow"
	// ActionDrop discards the connection's packets silently.
	ActionDrop PolicyAction = "Drop"
	// ActionReject refuses it: a TCP RST, or ICMP unreachable for other protocols.
	ActionReject PolicyAction = "Reject"
	// ActionPass skips the rest of this tier: the next tier (or Kubernetes NetworkPolicy)
	// decides.
	ActionPass PolicyAction = "Pass"
)

// NetworkPolicyTierPriority is where Kubernetes NetworkPolicy sits among the tiers: tiers
// with a lower priority are evaluated before it, tiers with this priority or higher after it
// and only for pods no NetworkPolicy isolates in that direction (the built-in Baseline tier,
// 253, is one).
const NetworkPolicyTierPriority = 251

// FabricPolicySpec is a policy of a tier: which pods it applies to and its ordered rules.
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || self.ingress.all(r, !has(r.to))",message="ingress rules name peers in from, not to"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || self.egress.all(r, !has(r.from))",message="egress rules name peers in to, not from"
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || self.ingress.all(r, !has(r.from) || r.from.all(p, !has(p.fqdn)))",message="fqdn peers are for egress rules only"
type FabricPolicySpec struct {
	// Tier names the Tier the policy belongs to. A policy naming a tier that does not exist
	// is Stalled, and enforces nothing, until the tier exists.
	// +optional
	// +kubebuilder:default=application
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Tier string `json:"tier,omitempty"`

	// Priority orders the policies of a tier: lower is evaluated first (ties by name).
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	Priority int32 `json:"priority"`

	// AppliedTo selects the pods the policy is about: a pod matches when any entry matches
	// it (an entry's selectors AND-ed; an absent selector matches everything).
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	AppliedTo []PolicyTarget `json:"appliedTo"`

	// Ingress rules, in order, for connections to the selected pods. (Bounded so the API
	// server can afford the validation rules; more rules go into more policies.)
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Ingress []PolicyRule `json:"ingress,omitempty"`

	// Egress rules, in order, for connections from the selected pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Egress []PolicyRule `json:"egress,omitempty"`
}

// PolicyTarget selects pods by their labels and their namespace's labels.
type PolicyTarget struct {
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// PolicyRule matches connections by peer and port and acts on the first match.
type PolicyRule struct {
	// Name identifies the rule in logs and status (unique within the policy's list).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`

	// Action on a matching connection.
	// +required
	Action PolicyAction `json:"action"`

	// From are the peers an ingress rule matches (empty: any peer).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	From []PolicyPeer `json:"from,omitempty"`

	// To are the peers an egress rule matches (empty: any peer).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	To []PolicyPeer `json:"to,omitempty"`

	// Ports the rule matches (empty: every port and protocol).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Ports []PolicyPort `json:"ports,omitempty"`

	// EnableLogging writes one line per matched connection, naming the policy and rule.
	// +optional
	EnableLogging bool `json:"enableLogging,omitempty"`
}

// PolicyPeer is one kind of peer: pods (by pod and namespace selectors), an address block,
// a DNS name pattern (egress only), or a peer cluster.
// +kubebuilder:validation:XValidation:rule="[has(self.podSelector) || has(self.namespaceSelector), has(self.ipBlock), has(self.fqdn), has(self.cluster)].filter(x, x).size() == 1",message="a peer is exactly one of: pod/namespace selectors, ipBlock, fqdn, cluster"
type PolicyPeer struct {
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// +optional
	IPBlock *IPBlock `json:"ipBlock,omitempty"`
	// FQDN is a DNS name ("api.example.com") or a pattern of subdomains ("*.example.com");
	// it matches the addresses the selected pods received for it in DNS answers.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	FQDN string `json:"fqdn,omitempty"`
	// Cluster is a peer cluster's ID: its pod and service ranges.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Cluster string `json:"cluster,omitempty"`
}

// IPBlock is a CIDR with exceptions inside it, checked as upstream NetworkPolicy's.
// +kubebuilder:validation:XValidation:rule="isCIDR(self.cidr)",message="cidr must be a CIDR"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || cidr(self.cidr) == cidr(self.cidr).masked()",message="cidr must be a network address such as 10.0.0.0/8: its host bits must be zero"
// +kubebuilder:validation:XValidation:rule="!has(self.except) || self.except.all(e, isCIDR(e))",message="except entries must be CIDRs"
// +kubebuilder:validation:XValidation:rule="!has(self.except) || self.except.all(e, !isCIDR(e) || cidr(e) == cidr(e).masked())",message="except entries must be network addresses: their host bits must be zero"
// +kubebuilder:validation:XValidation:rule="!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, !isCIDR(e) || (cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength()))",message="except entries must lie inside cidr and be narrower than it"
type IPBlock struct {
	// +required
	// +kubebuilder:validation:MaxLength=43
	CIDR string `json:"cidr"`
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	Except []string `json:"except,omitempty"`
}

// PolicyPort is a protocol and a port, a named port or a range.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || (has(self.port) && type(self.port) == int && self.endPort >= self.port)",message="endPort needs a numeric port not above it"
type PolicyPort struct {
	// +optional
	// +kubebuilder:default=TCP
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	Protocol corev1.Protocol `json:"protocol,omitempty"`
	// Port is a number or the name of a container port of the destination pod (absent: every
	// port of the protocol).
	// +optional
	// +kubebuilder:validation:XIntOrString
	Port *intstr.IntOrString `json:"port,omitempty"`
	// EndPort makes Port..EndPort a range.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort *int32 `json:"endPort,omitempty"`
}

// FabricPolicyStatus is what the operator and the agents realized.
type FabricPolicyStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Reconciling, Stalled (reason TierNotFound).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// RealizedNodes counts the nodes whose datapath enforces this generation.
	// +optional
	RealizedNodes int32 `json:"realizedNodes,omitempty"`
	// DesiredNodes counts the nodes that should.
	// +optional
	DesiredNodes int32 `json:"desiredNodes,omitempty"`
}

// FabricPolicy is a cluster-wide network policy in a Tier, evaluated tier by tier, then by
// priority, then rule by rule; Kubernetes NetworkPolicy sits between the Application and
// Baseline tiers.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=weft,shortName=fp
// +kubebuilder:printcolumn:name="Tier",type=string,JSONPath=`.spec.tier`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Realized",type=integer,JSONPath=`.status.realizedNodes`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredNodes`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FabricPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec FabricPolicySpec `json:"spec"`
	// +optional
	Status FabricPolicyStatus `json:"status,omitzero"`
}

// FabricPolicyList is a list of FabricPolicies.
// +kubebuilder:object:root=true
type FabricPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FabricPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FabricPolicy{}, &FabricPolicyList{})
}
