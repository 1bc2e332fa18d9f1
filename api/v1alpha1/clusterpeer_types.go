package v1alpha1

import (
	"net/netip"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterPeerSpec names a peer cluster and the credential to read its API server.
type ClusterPeerSpec struct {
	// ClusterID is the peer's ClusterNetwork spec.clusterID. The operator checks that the API
	// server it reaches really is that cluster.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterID is immutable"
	ClusterID string `json:"clusterID"`

	// KubeconfigSecretRef points to a kubeconfig with a read-only identity in the peer cluster
	// (issued by `weftctl peer join`). Credentials must be inline: exec plugins, auth providers
	// and file references are refused.
	// +required
	KubeconfigSecretRef SecretKeyRef `json:"kubeconfigSecretRef"`

	// ServeStaleFor bounds how long the state last read from the peer (its ranges and
	// gateways, hence tunnels, routes and imports) keeps being served while its API server
	// cannot be read — stopped, restarting, partitioned from this cluster, its credential
	// expired. The data plane does not depend on the peer's control plane: its gateways'
	// health probes decide which paths carry traffic. After this long the peer is dropped
	// (Ready=False). A peer whose identity check fails, that no longer runs weft, or that is
	// deleted is dropped at once.
	// +optional
	// +kubebuilder:default="24h"
	ServeStaleFor *metav1.Duration `json:"serveStaleFor,omitempty"`

	// AllowedCIDRs caps what the peer may claim: each pod and service range it advertises
	// must lie within one of these, or it is refused (not routed, not tunnelled; the peer's
	// other ranges stay in force). Unset: any range that passes the built-in rules — never a
	// default route; never one covering loopback, link-local (the cloud metadata address),
	// multicast or reserved addresses, this cluster's node addresses or its API server's.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	AllowedCIDRs []CIDR `json:"allowedCIDRs,omitempty"`
}

// SecretKeyRef selects one key of a Secret.
type SecretKeyRef struct {
	// Namespace of the Secret: the operator's (weft-system unless installed elsewhere), the
	// only namespace where it reads Secrets; a Secret elsewhere is refused
	// (SecretNamespaceRefused).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key in the Secret's data that holds the kubeconfig.
	// +optional
	// +kubebuilder:default=kubeconfig
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// ClusterPeerStatus is what the operator last read from the peer.
type ClusterPeerStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Connected, Accepted, Ready, Degraded, Reconciling, Stalled. Connected: the
	// peer's API server is read. Accepted: its advertisement is in force (routed, tunnelled).
	// While the peer's API server cannot be read and its last state is served, Connected is
	// False (why), Accepted and Ready stay True with reason ServingLastKnownState and
	// Degraded is True.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastSyncTime is when the operator last read the peer successfully (refreshed every
	// few minutes while nothing read changes).
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`

	// StaleSince is when the peer's API server stopped answering while its last state is
	// served (unset while it answers).
	// +optional
	StaleSince *metav1.Time `json:"staleSince,omitempty"`

	// KubernetesVersion is the peer API server's version.
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`

	// WeftVersion is the weft release the peer's operator runs (its ClusterNetwork's
	// status.operatorVersion; empty while it publishes none).
	// +optional
	WeftVersion string `json:"weftVersion,omitempty"`

	// PodCIDRs the peer advertises in its ClusterNetwork.
	// +optional
	// +listType=atomic
	PodCIDRs []string `json:"podCIDRs,omitempty"`

	// ServiceCIDRs the peer advertises in its ClusterNetwork.
	// +optional
	// +listType=atomic
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`

	// Gateways the peer advertises in its ClusterNetwork status.
	// +optional
	// +listType=atomic
	Gateways []GatewayStatus `json:"gateways,omitempty"`

	// Aliases is how this cluster sees the peer where its ranges overlap this cluster's or
	// an earlier peer's (spec.overlap of the ClusterNetwork): each aliased range and its
	// alias here, one address per address. Routes, policy, imports and DNS use the alias;
	// the gateways translate. Kept for as long as the peer advertises the range.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Aliases []CIDRAlias `json:"aliases,omitempty"`

	// SeenAs is how the peer sees this cluster, as it publishes (its ClusterNetwork's
	// status.peerAliases): each of this cluster's ranges it aliases, and the alias there.
	// What this cluster's gateways send the peer from those ranges is translated into it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	SeenAs []CIDRAlias `json:"seenAs,omitempty"`

	// MaxActive is how many of its gateways the peer sends through (its
	// spec.gateways.maxActive); this cluster's gateways send to as many.
	// +optional
	MaxActive int32 `json:"maxActive,omitempty"`
}

// InForce says whether the peer's advertisement is to be routed, tunnelled and imported: its
// Accepted condition. A status without one was written by an operator from before Accepted
// existed, when Ready meant the same: it is read that way, so that agents and gateways
// upgraded before the operator has looked at the peer again keep their paths.
func (s *ClusterPeerStatus) InForce() bool {
	if c := meta.FindStatusCondition(s.Conditions, ConditionAccepted); c != nil {
		return c.Status == metav1.ConditionTrue
	}
	return meta.IsStatusConditionTrue(s.Conditions, ConditionReady)
}

// Prefixes are the peer's advertised pod and service ranges as this cluster sees them: each
// replaced by its alias where it has one (status.aliases). Entries that are not CIDRs are
// skipped.
func (s *ClusterPeerStatus) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, m := range s.Ranges() {
		out = append(out, m.Local)
	}
	return out
}

// Ranges are the peer's pod and service ranges, each with how this cluster sees it.
func (s *ClusterPeerStatus) Ranges() []RangeMap { return append(s.PodRanges(), s.ServiceRanges()...) }

// AliasedRanges are the peer's ranges that have an alias here.
func (s *ClusterPeerStatus) AliasedRanges() []RangeMap {
	var out []RangeMap
	for _, m := range s.Ranges() {
		if m.Aliased() {
			out = append(out, m)
		}
	}
	return out
}

// RangeMap is one of a peer's ranges as the peer numbers it (Remote) and as this cluster
// sees it (Local: its alias, or the same range when it has none).
// +kubebuilder:object:generate=false
type RangeMap struct {
	Remote, Local netip.Prefix
}

// Aliased says whether the range has an alias.
func (m RangeMap) Aliased() bool { return m.Remote != m.Local }

// Translate gives the address a of Remote as this cluster sees it; ok is false when a is
// not in Remote.
func (m RangeMap) Translate(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	if !m.Remote.Contains(a) {
		return netip.Addr{}, false
	}
	if !m.Aliased() {
		return a, true
	}
	return Rebase(a, m.Remote, m.Local), true
}

// Rebase gives the address of to at the offset a has in from (same size, same family).
func Rebase(a netip.Addr, from, to netip.Prefix) netip.Addr {
	src, base := a.AsSlice(), to.Masked().Addr().AsSlice()
	bits := from.Bits()
	for i := range src {
		keep := byte(0) // the bits of the network part come from to
		switch {
		case bits >= 8*(i+1):
		case bits <= 8*i:
			keep = 0xff
		default:
			keep = 0xff >> (bits - 8*i)
		}
		src[i] = base[i]&^keep | src[i]&keep
	}
	out, _ := netip.AddrFromSlice(src)
	return out
}

// PodRanges are the peer's pod ranges, each with how this cluster sees it.
func (s *ClusterPeerStatus) PodRanges() []RangeMap { return s.rangeMaps(s.PodCIDRs) }

// ServiceRanges are the peer's service ranges, each with how this cluster sees it.
func (s *ClusterPeerStatus) ServiceRanges() []RangeMap { return s.rangeMaps(s.ServiceCIDRs) }

func (s *ClusterPeerStatus) rangeMaps(cidrs []string) []RangeMap {
	var out []RangeMap
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			continue
		}
		m := RangeMap{Remote: p.Masked(), Local: p.Masked()}
		for _, a := range s.Aliases {
			if from, to, ok := a.Prefixes(); ok && from == m.Remote {
				m.Local = to
			}
		}
		out = append(out, m)
	}
	return out
}

// ClusterPeer is a peer cluster of the clusterset. There is no broker: each cluster's operator
// reads its peers' API servers directly with a read-only credential.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cpeer,categories=weft
// +kubebuilder:printcolumn:name="Cluster ID",type=string,JSONPath=`.spec.clusterID`
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.conditions[?(@.type=="Connected")].status`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Last Sync",type=date,JSONPath=`.status.lastSyncTime`
// +kubebuilder:printcolumn:name="Stale Since",type=date,JSONPath=`.status.staleSince`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ClusterPeerSpec `json:"spec"`
	// +optional
	Status ClusterPeerStatus `json:"status,omitzero"`
}

// ClusterPeerList is a list of ClusterPeers.
// +kubebuilder:object:root=true
type ClusterPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterPeer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterPeer{}, &ClusterPeerList{})
}
