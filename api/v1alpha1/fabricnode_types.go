package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FabricNodeSpec is what the operator gives a node. Only the operator writes it (the node's
// agent may write only the status of its own node's FabricNode: an admission policy bound to
// the node-name claim of its token holds it to that).
type FabricNodeSpec struct {
	// PodCIDRs are the node's pod blocks, at most one per IP family, from the ClusterNetwork's
	// podCIDRs and of its nodeMaskSize. Agents check every other node's blocks against both,
	// and against each other, before routing to them.
	// +optional
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.filter(c, isCIDR(c) && cidr(c).ip().family() == 4).size() <= 1 && self.filter(c, isCIDR(c) && cidr(c).ip().family() == 6).size() <= 1",message="at most one CIDR per IP family"
	// +listType=atomic
	PodCIDRs []CIDR `json:"podCIDRs,omitempty"`
}

// DatapathCapability is what one datapath backend can do on a node.
type DatapathCapability struct {
	// Backend is the datapath driver.
	Backend DatapathBackend `json:"backend"`
	// Encapsulations the backend can use between this cluster's nodes here.
	// +optional
	// +listType=atomic
	Encapsulations []Encapsulation `json:"encapsulations,omitempty"`
}

// RealizedPolicy is a FabricPolicy generation a node's datapath enforces.
type RealizedPolicy struct {
	// Name of the FabricPolicy.
	Name string `json:"name"`
	// Generation of the FabricPolicy the datapath enforces.
	Generation int64 `json:"generation"`
}

// RefusedBlock is another node's pod block this node's agent refused to route to.
type RefusedBlock struct {
	// Node that claims the block.
	Node string `json:"node"`
	// CIDR claimed.
	CIDR string `json:"cidr"`
	// Reason names the check it failed: OutsidePodCIDRs, WrongSize, Overlaps, Invalid.
	Reason string `json:"reason"`
	// Message says more.
	// +optional
	Message string `json:"message,omitempty"`
}

// Reasons of RefusedBlock.
const (
	BlockInvalid         = "Invalid"
	BlockOutsidePodCIDRs = "OutsidePodCIDRs"
	BlockWrongSize       = "WrongSize"
	BlockOverlaps        = "Overlaps"
)

// FabricNodeCleanup records that a node's agent removed weft's datapath from the node.
type FabricNodeCleanup struct {
	// ClusterNetworkUID is the ClusterNetwork whose deletion the agent cleaned up for.
	ClusterNetworkUID string `json:"clusterNetworkUID"`
	// Time the cleanup finished.
	Time metav1.Time `json:"time"`
}

// FabricNodeStatus is what a node's agent reports.
type FabricNodeStatus struct {
	// Conditions: Ready (the agent's datapath serves the node's blocks).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Datapath is the backend the agent runs.
	// +optional
	Datapath DatapathBackend `json:"datapath,omitempty"`
	// Capabilities are what each datapath backend can do on this node; the operator refuses
	// a ClusterNetwork whose backend cannot use its encapsulation on some node.
	// +optional
	// +listType=map
	// +listMapKey=backend
	Capabilities []DatapathCapability `json:"capabilities,omitempty"`
	// RealizedPolicies are the FabricPolicy generations the node's datapath enforces, by
	// name; the operator counts FabricPolicy.status.realizedNodes from them.
	// +optional
	// +listType=map
	// +listMapKey=name
	RealizedPolicies []RealizedPolicy `json:"realizedPolicies,omitempty"`
	// RefusedBlocks are other nodes' blocks this node's agent does not route to: outside the
	// cluster's podCIDRs, of the wrong size, or overlapping a block another node holds.
	// +optional
	// +listType=atomic
	RefusedBlocks []RefusedBlock `json:"refusedBlocks,omitempty"`
	// Cleanup is set once the agent removed weft's datapath from the node (uninstall).
	// +optional
	Cleanup *FabricNodeCleanup `json:"cleanup,omitempty"`
}

// FabricNode is what weft says about one node: its pod blocks, which the operator gives it
// (spec), and what its agent reports (status). It is named after its Node and goes with it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=fnode,categories=weft
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec) || !has(oldSelf.spec.podCIDRs) || (has(self.spec) && has(self.spec.podCIDRs) && oldSelf.spec.podCIDRs.all(c, c in self.spec.podCIDRs))",message="spec.podCIDRs cannot change once given (a missing IP family may be added): delete the FabricNode and the operator gives the node new blocks"
// +kubebuilder:printcolumn:name="Blocks",type=string,JSONPath=`.spec.podCIDRs`
// +kubebuilder:printcolumn:name="Datapath",type=string,JSONPath=`.status.datapath`
// +kubebuilder:printcolumn:name="Refused",type=string,JSONPath=`.status.refusedBlocks[*].cidr`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FabricNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec FabricNodeSpec `json:"spec,omitzero"`
	// +optional
	Status FabricNodeStatus `json:"status,omitzero"`
}

// FabricNodeList is a list of FabricNodes.
// +kubebuilder:object:root=true
type FabricNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FabricNode `json:"items"`
}

// FabricGatewaySpec is what an administrator asks of a gateway.
type FabricGatewaySpec struct {
	// RotateKeyAt asks the gateway to switch to a new WireGuard key pair at this time (RFC
	// 3339; `weftctl gateway rotate-key` writes it). Each distinct value is carried out once;
	// status.lastKeyRotation says which was.
	// +optional
	RotateKeyAt string `json:"rotateKeyAt,omitempty"`
}

// FabricGatewayStatus is what a gateway reports about itself. Whether it is alive is its
// Lease's business (it renews it every half second, and the operator publishes each
// gateway's health in ClusterNetwork.status.gateways).
type FabricGatewayStatus struct {
	// Conditions: Ready (the tunnel is up and carries traffic to a peer, or there is none).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Endpoint is the address and UDP port peers send tunnel traffic to (host:port).
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// Tunnel is the gateway's tunnel driver.
	// +optional
	Tunnel TunnelType `json:"tunnel,omitempty"`
	// PublicKey is the gateway's WireGuard public key (the private key never leaves the node).
	// +optional
	PublicKey string `json:"publicKey,omitempty"`
	// NextPublicKey is, while a key rotation is under way, the key the gateway switches to at
	// KeySwitchTime.
	// +optional
	NextPublicKey string `json:"nextPublicKey,omitempty"`
	// KeySwitchTime is when the gateway and its peers switch to NextPublicKey.
	// +optional
	KeySwitchTime *metav1.MicroTime `json:"keySwitchTime,omitempty"`
	// LastKeyRotation is the last spec.rotateKeyAt the gateway carried out (or dropped, with
	// a Warning event saying why).
	// +optional
	LastKeyRotation string `json:"lastKeyRotation,omitempty"`
	// PeerPorts is, for tunnels with a device per peer (WireGuard), the UDP port on Endpoint's
	// address each peer gateway ("<cluster ID>/<node>") sends to.
	// +optional
	PeerPorts map[string]int32 `json:"peerPorts,omitempty"`
	// Tunnels are the gateway's tunnels to peer clusters' gateways.
	// +optional
	// +listType=map
	// +listMapKey=peer
	Tunnels []GatewayTunnel `json:"tunnels,omitempty"`
	// ActiveTunnels and StandbyTunnels count Tunnels by state.
	// +optional
	ActiveTunnels int32 `json:"activeTunnels,omitempty"`
	// +optional
	StandbyTunnels int32 `json:"standbyTunnels,omitempty"`
}

// FabricGateway is one gateway as it reports itself: endpoint, keys, per-peer ports and
// tunnels. The gateway creates it, named after its node; it goes with the node.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=fgw,categories=weft
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Tunnel",type=string,JSONPath=`.status.tunnel`
// +kubebuilder:printcolumn:name="Public Key",type=string,JSONPath=`.status.publicKey`
// +kubebuilder:printcolumn:name="Next Key",type=string,JSONPath=`.status.nextPublicKey`,priority=1
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.activeTunnels`
// +kubebuilder:printcolumn:name="Standby",type=integer,JSONPath=`.status.standbyTunnels`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FabricGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec FabricGatewaySpec `json:"spec,omitzero"`
	// +optional
	Status FabricGatewayStatus `json:"status,omitzero"`
}

// FabricGatewayList is a list of FabricGateways.
// +kubebuilder:object:root=true
type FabricGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FabricGateway `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FabricNode{}, &FabricNodeList{}, &FabricGateway{}, &FabricGatewayList{})
}
