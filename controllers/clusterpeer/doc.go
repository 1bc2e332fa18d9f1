// Package clusterpeer connects to each peer cluster's API server with the read-only
// credential named in its ClusterPeer, checks that the server really is that cluster, and
// reports what the peer advertises. It is not a broker: every cluster reads its peers itself.
package clusterpeer
