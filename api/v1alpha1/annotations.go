package v1alpha1

import (
	"slices"
	"strconv"
	"strings"
)

// Annotations weft reads or writes on core objects.
const (
	// AnnotationPodCIDRs on a Node is the pod blocks weft allocated to it, comma-separated
	// (one per IP family). The operator writes it; the node's agent reads it.
	AnnotationPodCIDRs = "fabric.weft.dev/pod-cidrs"
	// AnnotationPodIP on a Pod asks for a fixed address; it must lie in its node's block.
	AnnotationPodIP = "fabric.weft.dev/ip"

	// LabelGateway marks a gateway's Lease (in the operator's namespace, named
	// "weft-gateway-<node>"): the gateway renews it to say it is alive.
	LabelGateway = "fabric.weft.dev/gateway"
	// AnnotationGatewayEndpoint on a gateway's Lease is where peers send tunnel traffic
	// (host:port).
	AnnotationGatewayEndpoint = "fabric.weft.dev/endpoint"
	// AnnotationGatewayPublicKey on a gateway's Lease is its WireGuard public key.
	AnnotationGatewayPublicKey = "fabric.weft.dev/public-key"
	// AnnotationGatewayTunnel on a gateway's Lease is its tunnel driver.
	AnnotationGatewayTunnel = "fabric.weft.dev/tunnel"
	// AnnotationGatewayPeerPorts on a gateway's Lease is the UDP port each peer gateway
	// must send to, as JSON ({"<cluster ID>/<node>": port}), for tunnels with a device per
	// peer (WireGuard).
	AnnotationGatewayPeerPorts = "fabric.weft.dev/peer-ports"
	// AnnotationGatewayTunnels on a gateway's Lease is its tunnels to peer gateways as a
	// JSON list of GatewayTunnel, refreshed every few seconds.
	AnnotationGatewayTunnels = "fabric.weft.dev/tunnels"
	// AnnotationGatewayNextPublicKey and AnnotationGatewayKeySwitchTime on a gateway's Lease
	// announce a key rotation: the public key it switches to, and when (RFC 3339).
	AnnotationGatewayNextPublicKey = "fabric.weft.dev/next-public-key"
	AnnotationGatewayKeySwitchTime = "fabric.weft.dev/key-switch-time"
	// AnnotationGatewayRotateKey on a gateway's Lease asks the gateway to rotate its key at
	// the time it holds (RFC 3339; `weftctl gateway rotate-key` writes it). Each distinct
	// value is carried out once.
	AnnotationGatewayRotateKey = "fabric.weft.dev/rotate-key"
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

// AnnotationNodeCleaned on a Node says its agent removed weft's datapath from it; the value
// is the UID of the ClusterNetwork whose deletion it cleaned up for.
const AnnotationNodeCleaned = "fabric.weft.dev/cleaned"

// AnnotationRealizedPolicies on a Node is what its agent's datapath enforces: each
// FabricPolicy's name and generation, "name=generation" comma-separated in name order. The
// agent writes it; the operator counts FabricPolicy.status.realizedNodes from it.
const AnnotationRealizedPolicies = "fabric.weft.dev/realized-policies"

// RealizedPolicies is the value of AnnotationRealizedPolicies for these policies.
func RealizedPolicies(policies []FabricPolicy) string {
	parts := make([]string, 0, len(policies))
	for _, p := range policies {
		parts = append(parts, p.Name+"="+strconv.FormatInt(p.Generation, 10))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// ParseRealizedPolicies reads AnnotationRealizedPolicies: generation by policy name.
func ParseRealizedPolicies(s string) map[string]int64 {
	out := map[string]int64{}
	for _, part := range strings.Split(s, ",") {
		name, gen, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		if g, err := strconv.ParseInt(gen, 10, 64); err == nil {
			out[name] = g
		}
	}
	return out
}

// AnnotationDatapathCapabilities on a Node is what each datapath backend can do there, as
// JSON ({"ovs": ["geneve", "vxlan"], "ebpf": ["vxlan"]}: encapsulations by backend). The
// node's agent writes it when it starts; the operator refuses a ClusterNetwork whose backend
// cannot use its encapsulation on some node.
const AnnotationDatapathCapabilities = "fabric.weft.dev/datapath-capabilities"
