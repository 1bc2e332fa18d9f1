package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPSpec makes the agents announce the cluster's ranges to routers over BGP: every node
// that runs a speaker advertises its own pod block (next hop: the node), and, if asked, the
// Service ranges, ServiceImport addresses and LoadBalancer addresses it can serve.
type BGPSpec struct {
	// ASN is the autonomous system number of every node's speaker.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASN int64 `json:"asn"`

	// RouterIDSource says where each speaker's router ID comes from: NodeIP (the node's
	// IPv4 InternalIP) or PodGateway (the node's address in its IPv4 pod block, for nodes
	// whose InternalIP is IPv6).
	// +optional
	// +kubebuilder:default=NodeIP
	// +kubebuilder:validation:Enum=NodeIP;PodGateway
	RouterIDSource string `json:"routerIDSource,omitempty"`

	// NodeSelector picks the nodes that run a speaker; empty: every node.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// ListenPort is the TCP port speakers accept sessions on (from peers that dial them).
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ListenPort int32 `json:"listenPort,omitempty"`

	// Peers are the routers (or other speakers) each node's speaker has a session with.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Peers []BGPPeer `json:"peers,omitempty"`

	// Advertise says which ranges the speakers announce.
	// +optional
	// +kubebuilder:default={}
	Advertise BGPAdvertise `json:"advertise,omitzero"`

	// Communities are attached to every advertised route: standard communities as
	// "ASN:value" (each part 0–65535) or large ones as "ASN:value:value".
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Pattern=`^[0-9]{1,10}:[0-9]{1,10}(:[0-9]{1,10})?$`
	Communities []string `json:"communities,omitempty"`

	// Import installs the routes peers announce into each speaker's node routing table.
	// Never imported: prefixes inside this cluster's pod ranges; unless ImportAllow lets
	// them in: a default route, prefixes covering the pod ranges, overlapping the service
	// ranges, covering a node's address, loopback, link-local (the cloud metadata address),
	// multicast or reserved addresses. A peer announcing more than its maxPrefixes has none of its routes
	// imported (its status says why).
	// +optional
	Import bool `json:"import,omitempty"`

	// ImportAllow lets in received prefixes that are equal to or inside one of these though a
	// built-in rule refuses them (a default route from the router, say). This cluster's pod
	// ranges are never imported.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	ImportAllow []CIDR `json:"importAllow,omitempty"`

	// GracefulRestart keeps a restarting agent's routes in the peers' tables (RFC 4724):
	// peers hold them as stale for RestartTimeSeconds while the speaker comes back.
	// +optional
	// +kubebuilder:default={enabled: true}
	GracefulRestart BGPGracefulRestart `json:"gracefulRestart,omitzero"`
}

// BGPGracefulRestart configures graceful restart.
type BGPGracefulRestart struct {
	// Enabled advertises the graceful-restart capability.
	// +optional
	// +kubebuilder:default=true
	Enabled bool `json:"enabled"`
	// RestartTimeSeconds is how long peers keep the routes of a speaker that went away.
	// +optional
	// +kubebuilder:default=120
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4095
	RestartTimeSeconds int32 `json:"restartTimeSeconds,omitempty"`
}

// BGPAdvertise selects what speakers announce.
type BGPAdvertise struct {
	// PodBlocks: each speaker announces its node's pod blocks, next hop the node.
	// +optional
	// +kubebuilder:default=true
	PodBlocks bool `json:"podBlocks"`
	// ServiceCIDRs: every speaker announces the cluster's Service ranges (ECMP over nodes;
	// kube-proxy on each node serves them).
	// +optional
	ServiceCIDRs bool `json:"serviceCIDRs,omitempty"`
	// ServiceImportVIPs: every speaker announces the ClusterSetIP of each ServiceImport as a
	// host route.
	// +optional
	ServiceImportVIPs bool `json:"serviceImportVIPs,omitempty"`
	// LoadBalancerIPs: every speaker announces the ingress addresses of LoadBalancer
	// Services as host routes.
	// +optional
	LoadBalancerIPs bool `json:"loadBalancerIPs,omitempty"`
}

// BGPPeer is one BGP neighbour of the speakers.
// +kubebuilder:validation:XValidation:rule="has(self.address) != has(self.nodeSelector)",message="set exactly one of address and nodeSelector"
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveSeconds) || !has(self.holdTimeSeconds) || self.keepaliveSeconds < self.holdTimeSeconds",message="keepaliveSeconds must be less than holdTimeSeconds"
type BGPPeer struct {
	// Name identifies the peer in status and metrics.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Address of the peer (IPv4 or IPv6).
	// +optional
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IP address"
	Address string `json:"address,omitempty"`
	// NodeSelector makes every other node it selects (its InternalIP) a peer: speakers
	// peering with each other, or with route reflectors that are nodes.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// ASN of the peer.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASN int64 `json:"asn"`
	// Port is the peer's BGP port.
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
	// Passive: the speaker waits for the peer to connect and never dials it.
	// +optional
	Passive bool `json:"passive,omitempty"`
	// PasswordSecretRef names a key of a Secret in the operator's namespace holding the
	// session's TCP MD5 password (RFC 2385).
	// +optional
	PasswordSecretRef *LocalSecretKeyRef `json:"passwordSecretRef,omitempty"`
	// MaxPrefixes bounds how many prefixes this peer may announce for import: beyond it none
	// of its routes are installed, and its session's status says why.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxPrefixes int32 `json:"maxPrefixes,omitempty"`
	// HoldTimeSeconds: the session fails after this long without a message (RFC 4271: 0,
	// never, or at least 3).
	// +optional
	// +kubebuilder:default=90
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=65535
	HoldTimeSeconds int32 `json:"holdTimeSeconds,omitempty"`
	// KeepaliveSeconds between keepalive messages.
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=21845
	KeepaliveSeconds int32 `json:"keepaliveSeconds,omitempty"`
	// BFD detects a dead peer (or a dead speaker, on the router's side) in under a second.
	// +optional
	BFD *BGPBFD `json:"bfd,omitempty"`
}

// LocalSecretKeyRef names one key of a Secret in the operator's namespace.
type LocalSecretKeyRef struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// BGPBFD configures BFD (RFC 5880/5881, single hop) for a peer.
type BGPBFD struct {
	// MinIntervalMilliseconds is the transmit and receive interval.
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=50
	// +kubebuilder:validation:Maximum=10000
	MinIntervalMilliseconds int32 `json:"minIntervalMilliseconds,omitempty"`
	// Multiplier: the session is down after this many intervals without a packet.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=50
	Multiplier int32 `json:"multiplier,omitempty"`
}

// BGPSessionState is a BGP session's finite-state-machine state (RFC 4271).
// +kubebuilder:validation:Enum=Idle;Connect;Active;OpenSent;OpenConfirm;Established;Unknown
type BGPSessionState string

const (
	BGPStateIdle        BGPSessionState = "Idle"
	BGPStateConnect     BGPSessionState = "Connect"
	BGPStateActive      BGPSessionState = "Active"
	BGPStateOpenSent    BGPSessionState = "OpenSent"
	BGPStateOpenConfirm BGPSessionState = "OpenConfirm"
	BGPStateEstablished BGPSessionState = "Established"
	BGPStateUnknown     BGPSessionState = "Unknown"
)

// BGPNodeStatus is what one node's speaker reports.
type BGPNodeStatus struct {
	// ObservedGeneration is the ClusterNetwork generation the speaker configured itself from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (every session Established), Stalled (bad configuration).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ASN and RouterID the speaker runs with.
	// +optional
	ASN int64 `json:"asn,omitempty"`
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// Advertised are the prefixes the speaker announces.
	// +optional
	Advertised []string `json:"advertised,omitempty"`
	// Peers are the speaker's sessions.
	// +optional
	// +listType=map
	// +listMapKey=address
	Peers []BGPPeerStatus `json:"peers,omitempty"`
}

// BGPPeerStatus is one session.
type BGPPeerStatus struct {
	// Name of the peer in the ClusterNetwork (for nodeSelector peers: "<name>/<node>").
	Name string `json:"name"`
	// Address of the peer.
	Address string `json:"address"`
	// ASN of the peer.
	ASN int64 `json:"asn"`
	// State of the session.
	State BGPSessionState `json:"state"`
	// Since is when the session entered its state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// BFD is the BFD session's state (Up, Down, Init, AdminDown), when BFD is on.
	// +optional
	BFD string `json:"bfd,omitempty"`
	// PrefixesSent and PrefixesReceived count routes in the session's tables.
	// +optional
	PrefixesSent int64 `json:"prefixesSent"`
	// +optional
	PrefixesReceived int64 `json:"prefixesReceived"`
	// LastError says why the session last failed (a refused OPEN, a wrong ASN, a
	// connection refused, a missing password Secret).
	// +optional
	LastError string `json:"lastError,omitempty"`
	// ImportRefused says which of the peer's routes are not imported and why (spec.bgp.import).
	// +optional
	ImportRefused string `json:"importRefused,omitempty"`
}

// BGPNode is one node's BGP speaker as the node's agent reports it. The agent creates it,
// named after the node; it goes with the node.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=weft
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.status.asn`
// +kubebuilder:printcolumn:name="Router ID",type=string,JSONPath=`.status.routerID`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Status BGPNodeStatus `json:"status,omitzero"`
}

// BGPNodeList is a list of BGPNodes.
// +kubebuilder:object:root=true
type BGPNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPNode `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPNode{}, &BGPNodeList{})
}
