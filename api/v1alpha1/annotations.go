package v1alpha1

import (
	"slices"
	"strings"
)

// Annotations and labels weft reads or writes on core objects.
const (
	// AnnotationPodIP on a Pod asks for a fixed address; it must lie in its node's block.
	AnnotationPodIP = "fabric.weft.dev/ip"

	// LabelGateway marks a gateway's Lease (in the operator's namespace, named
	// "weft-gateway-<node>"): the gateway renews it to say it is alive. The Lease carries no
	// data; what the gateway announces is in its FabricGateway.
	LabelGateway = "fabric.weft.dev/gateway"
)

// GatewayPeerName names a gateway across the clusterset: "<cluster ID>/<node>".
func GatewayPeerName(clusterID, node string) string { return clusterID + "/" + node }

// GatewayLeaseName is the name of the Lease a gateway on node renews.
func GatewayLeaseName(node string) string { return "weft-gateway-" + node }

// FinalizerClusterDNS is on a ClusterNetwork while the cluster DNS's Corefile carries the
// server block weft wrote for the clusterset zone; deleting the ClusterNetwork removes the
// block, then the finalizer.
const FinalizerClusterDNS = "fabric.weft.dev/cluster-dns"

// MultipathHashSeed is the seed of the kernel's multipath hash (sysctl
// net.ipv4.fib_multipath_hash_seed) on every node of every cluster, set by the agent and
// the gateway. The kernel's hash of a connection is the same both ways (addresses and ports
// ordered first); with the same seed everywhere, and next hops listed in the same order
// (by gateway node address), a connection's replies come back through the gateways that
// carried it — one gateway process per side does its work, not two.
const MultipathHashSeed = "2003199604"

// FinalizerNodeCleanup on the ClusterNetwork holds its deletion (weft's uninstall) until
// every node's agent has removed weft's datapath from its node — or a time limit passed —
// so that the agents still run, with their permissions, while they clean up.
const FinalizerNodeCleanup = "fabric.weft.dev/node-cleanup"

// RealizedPoliciesOf is what FabricNode.status.realizedPolicies says of these policies,
// sorted by name.
func RealizedPoliciesOf(policies []FabricPolicy) []RealizedPolicy {
	out := make([]RealizedPolicy, 0, len(policies))
	for _, p := range policies {
		out = append(out, RealizedPolicy{Name: p.Name, Generation: p.Generation})
	}
	slices.SortFunc(out, func(a, b RealizedPolicy) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RealizedGenerations reads status.realizedPolicies: generation by policy name.
func (s FabricNodeStatus) RealizedGenerations() map[string]int64 {
	out := make(map[string]int64, len(s.RealizedPolicies))
	for _, p := range s.RealizedPolicies {
		out[p.Name] = p.Generation
	}
	return out
}
