package v1alpha1

import (
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterNetworkName is the only name a ClusterNetwork may have: there is one per cluster.
const ClusterNetworkName = "default"

// CIDR is an IPv4 or IPv6 network in CIDR notation with its host bits zero, such as
// 10.244.0.0/16 or fd00:10:244::/56.
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.244.0.0/16 or fd00:10:244::/56"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="must be a network address: its host bits must be zero"
type CIDR string

// CIDRPrefixes parses cidrs, each with its host bits cleared, skipping any that is not a
// CIDR (the API refuses those; objects built in code may still carry one).
func CIDRPrefixes(cidrs ...CIDR) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(string(c)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// IPAddress is an IPv4 or IPv6 address, such as 10.96.0.10 or fd00:10:96::a.
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IP address such as 10.96.0.10"
type IPAddress string

// DatapathBackend selects the driver that programs each node's datapath.
// +kubebuilder:validation:Enum=ovs;ebpf
type DatapathBackend string

const (
	DatapathOVS  DatapathBackend = "ovs"
	DatapathEBPF DatapathBackend = "ebpf"
)

// Encapsulation is how pod traffic crosses between the nodes of one cluster.
// +kubebuilder:validation:Enum=geneve;vxlan;none
type Encapsulation string

const (
	EncapsulationGeneve Encapsulation = "geneve"
	EncapsulationVXLAN  Encapsulation = "vxlan"
	// EncapsulationNone routes pod traffic natively (the underlay, or BGP, knows the pod blocks).
	EncapsulationNone Encapsulation = "none"
)

// TunnelType is how traffic crosses between gateways of different clusters.
// +kubebuilder:validation:Enum=wireguard;geneve;vxlan
type TunnelType string

const (
	TunnelWireGuard TunnelType = "wireguard"
	TunnelGeneve    TunnelType = "geneve"
	TunnelVXLAN     TunnelType = "vxlan"
)

// TunnelOverhead is what a tunnel between clusters adds to a packet, over IPv6 (the larger):
// WireGuard 80 bytes (IPv6, UDP, its header and tag), Geneve 60, VXLAN 70 (it carries an
// Ethernet header too). A gateway's tunnel device has its uplink's MTU less this.
func TunnelOverhead(t TunnelType) int {
	switch t {
	case TunnelGeneve:
		return 60
	case TunnelVXLAN:
		return 70
	}
	return MaxTunnelOverhead
}

// MaxTunnelOverhead is the largest TunnelOverhead (WireGuard's). Pods' MTU leaves room for
// it, so that a pod's packet crosses to any peer cluster whole, whatever the tunnel.
const MaxTunnelOverhead = 80

// ClusterNetworkSpec is this cluster's fabric.
type ClusterNetworkSpec struct {
	// ClusterID names this cluster in the clusterset. It is a DNS label, used in DNS names such
	// as <hostname>.<clusterID>.<svc>.<ns>.svc.clusterset.local, and cannot change.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterID is immutable"
	ClusterID string `json:"clusterID"`

	// ClusterSetID names the clusterset this cluster belongs to: the clusters it peers with
	// share it. weft publishes it, with the clusterID, as the ClusterProperties
	// clusterset.k8s.io and cluster.clusterset.k8s.io (KEP-2149) for multi-cluster tools.
	// +optional
	// +kubebuilder:default="default"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ClusterSetID string `json:"clusterSetID,omitempty"`

	// PodCIDRs are the pod address ranges of this cluster: one per IP family (IPv4, IPv6 or
	// both). Each node receives a block from them. They cannot change: every node's block and
	// every pod address comes from them.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="podCIDRs are immutable: nodes' blocks and pods' addresses come from them"
	// +kubebuilder:validation:XValidation:rule="self.filter(c, isCIDR(c) && cidr(c).ip().family() == 4).size() <= 1 && self.filter(c, isCIDR(c) && cidr(c).ip().family() == 6).size() <= 1",message="at most one CIDR per IP family"
	PodCIDRs []CIDR `json:"podCIDRs"`

	// ServiceCIDRs are the ClusterIP ranges of this cluster (as given to kube-apiserver's
	// --service-cluster-ip-range): one per IP family.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.filter(c, isCIDR(c) && cidr(c).ip().family() == 4).size() <= 1 && self.filter(c, isCIDR(c) && cidr(c).ip().family() == 6).size() <= 1",message="at most one CIDR per IP family"
	ServiceCIDRs []CIDR `json:"serviceCIDRs"`

	// IPAM sizes the pod blocks nodes receive.
	// +optional
	// +kubebuilder:default={}
	IPAM IPAMSpec `json:"ipam,omitzero"`

	// Datapath selects how each node forwards pod traffic.
	// +optional
	// +kubebuilder:default={}
	Datapath DatapathSpec `json:"datapath,omitzero"`

	// Gateways selects the nodes that carry traffic to peer clusters, and how.
	// +optional
	// +kubebuilder:default={}
	Gateways GatewaysSpec `json:"gateways,omitzero"`

	// DNS configures the multi-cluster service names.
	// +optional
	// +kubebuilder:default={}
	DNS DNSSpec `json:"dns,omitzero"`

	// Overlap says what becomes of a peer whose pod or service ranges overlap this
	// cluster's or an earlier peer's: by default it is given aliases (how this cluster sees
	// it, one address per address) from spec.overlap.aliasPool.
	// +optional
	// +kubebuilder:default={}
	Overlap OverlapSpec `json:"overlap,omitzero"`

	// Egress says what becomes of pods' traffic leaving the cluster: by default it leaves
	// with the address of the node it leaves from (SNAT), as with most CNIs.
	// +optional
	// +kubebuilder:default={}
	Egress EgressSpec `json:"egress,omitzero"`

	// BGP makes nodes announce pod blocks (and, if asked, Service ranges and addresses) to
	// routers with an embedded BGP speaker. With encapsulation none the routers carry pod
	// traffic between nodes and from outside the cluster.
	// +optional
	BGP *BGPSpec `json:"bgp,omitempty"`
}

// EgressSpec configures pods' traffic to destinations outside the cluster.
type EgressSpec struct {
	// Masquerade gives pods' traffic to any destination but this cluster's pod and Service
	// ranges, its peers' ranges (as advertised and as seen here), the overlap alias pool and
	// exceptCIDRs the address of the node it leaves from (SNAT); replies come back to that
	// node and on to the pod. False: pods' addresses leave as they are, for networks that
	// route the pod ranges back (spec.bgp with advertise.podBlocks, for instance).
	// +optional
	// +kubebuilder:default=true
	Masquerade *bool `json:"masquerade,omitempty"`

	// ExceptCIDRs are destinations pods reach with their own addresses while Masquerade is
	// on: networks that route the pod ranges back and want to see pods as themselves.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	ExceptCIDRs []CIDR `json:"exceptCIDRs,omitempty"`
}

// MasqueradeEnabled says whether pods' traffic leaving the cluster gets its node's address
// (spec.egress.masquerade, true unless set to false).
func (e *EgressSpec) MasqueradeEnabled() bool { return e.Masquerade == nil || *e.Masquerade }

// IPAMSpec sizes node pod blocks.
type IPAMSpec struct {
	// NodeMaskSizeIPv4 is the prefix length of each node's IPv4 pod block (24: 254 pods per
	// node). Immutable.
	// +optional
	// +kubebuilder:default=24
	// +kubebuilder:validation:Minimum=16
	// +kubebuilder:validation:Maximum=30
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeMaskSizeIPv4 is immutable"
	NodeMaskSizeIPv4 int32 `json:"nodeMaskSizeIPv4,omitempty"`
	// NodeMaskSizeIPv6 is the prefix length of each node's IPv6 pod block. Immutable.
	// +optional
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=64
	// +kubebuilder:validation:Maximum=120
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeMaskSizeIPv6 is immutable"
	NodeMaskSizeIPv6 int32 `json:"nodeMaskSizeIPv6,omitempty"`
}

// DatapathSpec selects the per-node datapath.
type DatapathSpec struct {
	// Backend is the datapath driver on every node.
	// +optional
	// +kubebuilder:default=ovs
	Backend DatapathBackend `json:"backend,omitempty"`

	// Encapsulation is how pod traffic crosses between nodes of this cluster.
	// +optional
	// +kubebuilder:default=geneve
	Encapsulation Encapsulation `json:"encapsulation,omitempty"`

	// MTU of pod interfaces. When omitted the agent derives it from the node's uplink MTU:
	// less the encapsulation overhead or the largest tunnel overhead between clusters (80
	// bytes, WireGuard over IPv6), whichever is larger: 1420 on a 1500 uplink.
	// +optional
	// +kubebuilder:validation:Minimum=1280
	// +kubebuilder:validation:Maximum=9216
	MTU int32 `json:"mtu,omitempty"`
}

// GatewaysSpec selects gateway nodes and their tunnels to peer clusters.
type GatewaysSpec struct {
	// NodeSelector picks the nodes that run a gateway.
	// +optional
	// +kubebuilder:default={"fabric.weft.dev/gateway":"true"}
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// MaxActive caps how many healthy gateways carry traffic at once. Every active gateway
	// carries a share of the flows (active-active); the others stand by.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	MaxActive int32 `json:"maxActive,omitempty"`

	// Tunnel is the encapsulation between gateways of different clusters.
	// +optional
	// +kubebuilder:default=wireguard
	Tunnel TunnelType `json:"tunnel,omitempty"`

	// Port is the UDP port gateways listen on. When omitted: 51820 for WireGuard, 6082 for
	// Geneve and 4800 for VXLAN (apart from the in-cluster overlay's 6081 and 4789).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
}

// OverlapPolicy is what becomes of a peer's range that overlaps a range already taken.
// +kubebuilder:validation:Enum=Alias;Refuse
type OverlapPolicy string

const (
	// OverlapAlias gives the range an alias of the same size from the alias pool: this
	// cluster reaches the peer's address i at the alias's address i, and the peer's gateways
	// translate both ways, so every remote pod keeps one address of its own here.
	OverlapAlias OverlapPolicy = "Alias"
	// OverlapRefuse holds the peer back (Stalled, OverlappingCIDR), as before aliases.
	OverlapRefuse OverlapPolicy = "Refuse"
)

// DefaultAliasPool is where aliases come from unless spec.overlap.aliasPool says otherwise:
// RFC 6598's shared address space, which no cluster made with common defaults uses for pods
// or Services. Carrier-grade NAT, some VPN meshes (Tailscale) and some clouds' secondary
// ranges use it too: a cluster whose nodes or peers live there names another pool.
const DefaultAliasPool = "100.64.0.0/10"

// OverlapSpec configures overlapping peers.
type OverlapSpec struct {
	// Policy: Alias (the default) joins an overlapping peer through aliases; Refuse holds it
	// back with reason OverlappingCIDR.
	// +optional
	// +kubebuilder:default=Alias
	Policy OverlapPolicy `json:"policy,omitempty"`

	// AliasPool are the ranges aliases are taken from, at most one per IP family; each
	// alias is a block of the aliased range's size. They must not overlap this cluster's
	// pod or service ranges; a peer range inside them is aliased too. Empty: 100.64.0.0/10
	// (IPv4 only: an overlapping IPv6 range needs an IPv6 pool).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.filter(c, isCIDR(c) && cidr(c).ip().family() == 4).size() <= 1 && self.filter(c, isCIDR(c) && cidr(c).ip().family() == 6).size() <= 1",message="at most one CIDR per IP family"
	AliasPool []CIDR `json:"aliasPool,omitempty"`
}

// Pool is the alias pool in force (spec, or DefaultAliasPool).
func (o OverlapSpec) Pool() []netip.Prefix {
	if len(o.AliasPool) == 0 {
		return CIDRPrefixes(DefaultAliasPool)
	}
	return CIDRPrefixes(o.AliasPool...)
}

// CIDRAlias is one range as its own cluster numbers it and as another cluster sees it:
// address i of CIDR is address i of Alias. It is only ever written by operators (status),
// and read back through Prefixes, which checks it: no CEL rules (their cost in nested
// status lists exceeds the API server's budget).
type CIDRAlias struct {
	// CIDR is the range as its cluster numbers it.
	// +required
	// +kubebuilder:validation:MaxLength=43
	CIDR string `json:"cidr"`
	// Alias is the range as the other cluster sees it: a range of the same size.
	// +required
	// +kubebuilder:validation:MaxLength=43
	Alias string `json:"alias"`
}

// Prefixes parses the pair; ok is false unless both are CIDRs of one family and size.
func (a CIDRAlias) Prefixes() (from, to netip.Prefix, ok bool) {
	from, err1 := netip.ParsePrefix(a.CIDR)
	to, err2 := netip.ParsePrefix(a.Alias)
	if err1 != nil || err2 != nil || from.Bits() != to.Bits() || from.Addr().Is4() != to.Addr().Is4() {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	return from.Masked(), to.Masked(), true
}

// PeerAliases is how this cluster sees one peer whose ranges it aliases.
type PeerAliases struct {
	// ClusterID is the peer's.
	// +required
	// +kubebuilder:validation:MaxLength=63
	ClusterID string `json:"clusterID"`
	// Aliases: each of the peer's aliased ranges and its alias here.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Aliases []CIDRAlias `json:"aliases,omitempty"`
}

// DNSSpec configures multi-cluster service discovery.
type DNSSpec struct {
	// Domain is the zone that multi-cluster services are published in.
	// +optional
	// +kubebuilder:default="clusterset.local"
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Domain string `json:"domain,omitempty"`

	// Resolvers are the DNS servers whose answers FQDN policy rules learn from: the
	// addresses pods send their queries to. An answer counts only if it comes from one of
	// them and answers a query the pod sent it; anything else from port 53 is policed like
	// any packet and teaches nothing. Empty: the cluster DNS Service's cluster IPs (Service
	// kube-dns in kube-system, as kubeadm and most distributions name it).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	Resolvers []IPAddress `json:"resolvers,omitempty"`
}

// ClusterDNSNamespace and ClusterDNSService name the cluster DNS Service whose cluster IPs are
// the trusted resolvers unless spec.dns.resolvers names others.
const (
	ClusterDNSNamespace = "kube-system"
	ClusterDNSService   = "kube-dns"
)

// ClusterNetworkStatus is what the operator observed and realized.
type ClusterNetworkStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Reconciling, Stalled (kstatus conventions).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// OperatorVersion is the weft release of the operator that last reconciled it: peers
	// record it (ClusterPeer status.weftVersion) and `weftctl diagnose` compares the two.
	// +optional
	OperatorVersion string `json:"operatorVersion,omitempty"`

	// Nodes counts the cluster's nodes, those with a pod block, and the ready agents.
	// +optional
	Nodes *NodeCounts `json:"nodes,omitempty"`

	// DNSResolvers are the resolvers FQDN policy rules learn from, as the agents use them:
	// spec.dns.resolvers, or the cluster DNS Service's cluster IPs (none until it has one:
	// FQDN rules then allow nothing).
	// +optional
	// +listType=atomic
	DNSResolvers []string `json:"dnsResolvers,omitempty"`

	// PeerAliases is how this cluster sees each peer it gives aliases to (from the
	// ClusterPeers' status.aliases): peers read it to learn how this cluster sees them, and
	// their gateways translate what they send here into that view.
	// +optional
	// +listType=map
	// +listMapKey=clusterID
	// +kubebuilder:validation:MaxItems=1024
	PeerAliases []PeerAliases `json:"peerAliases,omitempty"`

	// Gateways are this cluster's gateways as they announce themselves (each renews a Lease);
	// peers read them from here.
	// +optional
	// +listType=map
	// +listMapKey=node
	Gateways []GatewayStatus `json:"gateways,omitempty"`
}

// GatewayStatus is one gateway: where peers reach it and whether it is alive.
type GatewayStatus struct {
	// Node the gateway runs on.
	Node string `json:"node"`
	// Endpoint is the address and UDP port peers send tunnel traffic to (host:port).
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// Tunnel is the gateway's tunnel driver.
	// +optional
	Tunnel TunnelType `json:"tunnel,omitempty"`
	// PublicKey is the gateway's WireGuard public key (the private key never leaves the node).
	// +optional
	PublicKey string `json:"publicKey,omitempty"`
	// NextPublicKey is, while a key rotation is under way, the public key the gateway
	// switches to at KeySwitchTime; its peers switch to it at the same moment.
	// +optional
	NextPublicKey string `json:"nextPublicKey,omitempty"`
	// KeySwitchTime is when the gateway and its peers switch to NextPublicKey.
	// +optional
	KeySwitchTime *metav1.MicroTime `json:"keySwitchTime,omitempty"`
	// PeerPorts is, for tunnels with a device per peer (WireGuard), the UDP port on Endpoint's
	// address each peer gateway ("<cluster ID>/<node>") sends to.
	// +optional
	PeerPorts map[string]int32 `json:"peerPorts,omitempty"`
	// Healthy is true while the gateway keeps renewing its Lease. Readers do not take a
	// lapsed Lease for a failure: see Probed.
	Healthy bool `json:"healthy"`
	// LastRenewTime is when the gateway last renewed its Lease.
	// +optional
	LastRenewTime *metav1.MicroTime `json:"lastRenewTime,omitempty"`
	// Tunnels are the gateway's tunnels to peer clusters' gateways, as it last reported
	// them (every few seconds).
	// +optional
	// +listType=map
	// +listMapKey=peer
	Tunnels []GatewayTunnel `json:"tunnels,omitempty"`
}

// GatewayProbeGrace is how long after its Lease lapsed a gateway is still probed, and used
// while it answers. Liveness is the health probes' call: a Lease renewed late because this
// cluster's API server is slow, stopped or just back is no reason to move traffic.
const GatewayProbeGrace = 10 * time.Minute

// Probed says whether the gateway is a candidate to carry traffic at now: healthy, or its
// Lease lapsed less than GatewayProbeGrace ago. Of the candidates, those that answer health
// probes carry traffic.
func (g *GatewayStatus) Probed(now time.Time) bool {
	return g.Healthy || (g.LastRenewTime != nil && now.Sub(g.LastRenewTime.Time) < GatewayProbeGrace)
}

// GatewayTunnelState says whether a tunnel carries traffic.
// +kubebuilder:validation:Enum=Active;Standby
type GatewayTunnelState string

const (
	// TunnelActive: traffic to the peer's ranges is spread over this and the other active
	// tunnels to that peer.
	TunnelActive GatewayTunnelState = "Active"
	// TunnelStandby: configured, no traffic routed into it (the peer caps its active
	// gateways with maxActive); it takes over when an active one fails.
	TunnelStandby GatewayTunnelState = "Standby"
)

// GatewayTunnel is one gateway's tunnel to one peer gateway.
type GatewayTunnel struct {
	// Peer names the peer gateway: "<cluster ID>/<node>".
	Peer string `json:"peer"`
	// Device is the tunnel's network device on the gateway node.
	// +optional
	Device string `json:"device,omitempty"`
	// Endpoint is where this gateway sends to the peer (host:port).
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// State is Active or Standby.
	State GatewayTunnelState `json:"state"`
	// Answering is whether the peer gateway answers health probes.
	Answering bool `json:"answering"`
	// LastHandshakeTime is a completed handshake of the tunnel (WireGuard); unset before the
	// first or for drivers without handshakes. WireGuard handshakes anew every two minutes
	// while traffic flows; to keep the status still at rest the gateway publishes the first
	// handshake, the first after it switched keys, and otherwise one every few minutes
	// (gateway.HandshakeRefresh).
	// +optional
	LastHandshakeTime *metav1.Time `json:"lastHandshakeTime,omitempty"`
}

// NodeCounts summarizes the nodes of the fabric.
type NodeCounts struct {
	// Total nodes in the cluster.
	Total int32 `json:"total"`
	// WithPodBlock is how many have been given a pod block.
	WithPodBlock int32 `json:"withPodBlock"`
	// AgentsDesired and AgentsReady count weft-agent pods.
	AgentsDesired int32 `json:"agentsDesired"`
	AgentsReady   int32 `json:"agentsReady"`
}

// ClusterNetwork is this cluster's fabric: its identity in the clusterset, address ranges,
// datapath, gateways and DNS. There is exactly one, named "default".
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cn,categories=weft
// +kubebuilder:printcolumn:name="Cluster ID",type=string,JSONPath=`.spec.clusterID`
// +kubebuilder:printcolumn:name="Backend",type=string,JSONPath=`.spec.datapath.backend`
// +kubebuilder:printcolumn:name="Encap",type=string,JSONPath=`.spec.datapath.encapsulation`
// +kubebuilder:printcolumn:name="Tunnel",type=string,JSONPath=`.spec.gateways.tunnel`
// +kubebuilder:printcolumn:name="Agents",type=string,JSONPath=`.status.nodes.agentsReady`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="there is one ClusterNetwork per cluster and its name must be 'default'"
type ClusterNetwork struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ClusterNetworkSpec `json:"spec"`
	// +optional
	Status ClusterNetworkStatus `json:"status,omitzero"`
}

// ClusterNetworkList is a list of ClusterNetworks.
// +kubebuilder:object:root=true
type ClusterNetworkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterNetwork `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterNetwork{}, &ClusterNetworkList{})
}
