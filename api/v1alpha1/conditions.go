package v1alpha1

// Condition types shared by every weft kind. They follow the kstatus conventions
// (sigs.k8s.io/cli-utils/pkg/kstatus), so Argo CD, Flux and `kubectl wait` read health:
// Reconciling and Stalled are "abnormal-true" and are removed once they no longer hold.
const (
	// ConditionReady is True when the object's desired state is realized.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is still working towards the desired state.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when progress needs a change from the user (bad input, conflict).
	ConditionStalled = "Stalled"

	// ConditionConnected is True when the operator can read the peer cluster's API server
	// (ClusterPeer only).
	ConditionConnected = "Connected"
	// ConditionAccepted is True while the peer's advertisement — its ranges and gateways,
	// as read now or, while its API server cannot be read, as last read — is in force:
	// nodes route its ranges and gateways tunnel to it (ClusterPeer only). This is the
	// condition agents, gateways and the MCS controllers follow.
	ConditionAccepted = "Accepted"
	// ConditionDegraded is True while a peer is served from its last known state: traffic
	// flows, but what the peer says now cannot be read.
	ConditionDegraded = "Degraded"
)

// Reasons used in conditions. Each is a CamelCase word that tells what to fix.
const (
	ReasonReconciled  = "Reconciled"
	ReasonProgressing = "Progressing"

	// ClusterNetwork
	ReasonOverlappingCIDR = "OverlappingCIDR"
	// ReasonAliasPoolExhausted: an overlapping peer range finds no free block of its size in
	// spec.overlap.aliasPool.
	ReasonAliasPoolExhausted = "AliasPoolExhausted"
	ReasonInvalidCIDR        = "InvalidCIDR"
	ReasonUnsupportedBackend = "UnsupportedBackend"
	// ReasonUnsupportedEncapsulation: the datapath backend cannot use the encapsulation on
	// some nodes (their agents say so).
	ReasonUnsupportedEncapsulation = "UnsupportedEncapsulation"
	ReasonUnsupported              = "Unsupported"
	ReasonAgentsRollingOut         = "AgentsRollingOut"
	// ReasonCleaningNodes: the ClusterNetwork is being deleted and waits for the agents to
	// remove weft's datapath from their nodes.
	ReasonCleaningNodes    = "CleaningNodes"
	ReasonPodCIDRExhausted = "PodCIDRExhausted"

	// BGPNode
	// ReasonPeersNotEstablished: some BGP sessions are not Established (each peer's
	// status says why).
	ReasonPeersNotEstablished = "PeersNotEstablished"
	// ReasonSpeakerFailed: the speaker could not start (the listen port taken, no router ID).
	ReasonSpeakerFailed = "SpeakerFailed"

	// Tier
	ReasonDuplicatePriority = "DuplicatePriority"

	// ClusterPeer
	ReasonConnected = "Connected"
	// ReasonServingLastKnownState: the peer's API server cannot be read; its last state is
	// served (ClusterPeer spec.serveStaleFor).
	ReasonServingLastKnownState = "ServingLastKnownState"
	// ReasonStaleTooLong: the peer's API server could not be read for longer than
	// spec.serveStaleFor; it is dropped.
	ReasonStaleTooLong = "StaleTooLong"
	// ReasonInvalidAdvertisement: what the peer advertises (gateways, ranges) is malformed or
	// beyond the per-peer limits; the peer is held back, the others keep working.
	ReasonInvalidAdvertisement = "InvalidAdvertisement"
	// ReasonRefusedRange: some of the ranges the peer advertises are beyond what it may
	// claim (the built-in rules, spec.allowedCIDRs); they are not routed, the peer's other
	// ranges are.
	ReasonRefusedRange   = "RefusedRange"
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonSecretNamespaceRefused: the kubeconfig Secret is outside the operator's
	// namespace, the only one where the operator reads Secrets.
	ReasonSecretNamespaceRefused = "SecretNamespaceRefused"
	ReasonSecretKeyNotFound      = "SecretKeyNotFound"
	ReasonInvalidKubeconfig      = "InvalidKubeconfig"
	ReasonUnreachable            = "Unreachable"
	ReasonUnauthorized           = "Unauthorized"
	ReasonForbidden              = "Forbidden"
	ReasonPeerNotConfigured      = "PeerNotConfigured"
	ReasonClusterIDMismatch      = "ClusterIDMismatch"
	ReasonPeerIsThisCluster      = "PeerIsThisCluster"
	ReasonUnexpectedResponse     = "UnexpectedResponse"
)
