// Package render builds, from a ClusterNetwork, the objects the operator installs for it —
// the node agents' DaemonSet (with Open vSwitch for the ovs datapath), the gateways' DaemonSet,
// weft-dns's Deployment and Service, their ServiceAccounts and RBAC — and the cluster DNS's
// server block for the clusterset zone. It is pure: the same ClusterNetwork gives the same
// objects, and the clusternetwork controller applies them (as tigera/operator's pkg/render
// is apart from its controllers).
package render
