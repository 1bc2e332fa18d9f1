// Package nodeipam gives every node a pod block per IP family from the ClusterNetwork's
// podCIDRs and records it on the Node (annotation fabric.weft.dev/pod-cidrs). The annotation
// is the only record: a restarted operator rebuilds what is taken from the nodes, and a
// deleted node's block is free again. Addresses inside a block are the node agent's.
package nodeipam
