// Package nodeipam gives every node a pod block per IP family from the ClusterNetwork's
// podCIDRs and records it in the node's FabricNode (spec.podCIDRs), which it creates owned by
// the Node. The FabricNodes are the only record: a restarted operator rebuilds what is taken
// from them, and a deleted node's FabricNode goes with it, freeing its block. Addresses
// inside a block are the node agent's.
package nodeipam
