// Package lab runs weft's multi-cluster lab on one machine without containers: per cluster a
// real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) in a
// network namespace, and nodes that are network namespaces running the lab kubelet and
// kube-proxy, all plugged into one underlay switch. The host reaches the API servers only
// through loopback forwards. `weftctl lab` drives it.
package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
)

// NetnsPrefix starts the name of every network namespace any lab creates; a lab named N
// uses NetnsPrefix+N+"-", so two labs on one machine never touch each other's.
const NetnsPrefix = "weftlab-"

// Prefix of the namespaces of the lab named name.
func NamespacePrefix(name string) string { return NetnsPrefix + name + "-" }

// Layout is every name and address of a lab, derived from its options.
type Layout struct {
	Clusters []ClusterLayout
	Underlay string // underlay namespace
	Prefix   string // of every namespace of this lab
}

// ClusterLayout is one cluster.
type ClusterLayout struct {
	Name         string // context name and cluster ID: weft-1, weft-2, ...
	Index        int
	Dir          string
	ControlPlane Host
	Nodes        []Host
	PodCIDR      netip.Prefix
	ServiceCIDR  netip.Prefix
	APIPort      int // on the host's 127.0.0.1
}

// Host is a network namespace on the underlay.
type Host struct {
	Name  string // node name (or "<cluster>-cp")
	Netns string
	Port  string // its port on the underlay switch
	IP    netip.Addr
}

// UnderlayCIDR is the lab's one underlay segment.
var UnderlayCIDR = netip.MustParsePrefix("172.30.0.0/16")

// UnderlayGateway is the nodes' default gateway: an address no lab host holds.
var UnderlayGateway = netip.MustParseAddr("172.30.0.1")

// NewLayout plans a lab of clusters × nodes under stateDir. Cluster i (from 1) gets pods in
// 10.(243+i).0.0/16, services in 10.(95+i).0.0/16, underlay addresses 172.30.i.0/24, and its
// API server on 127.0.0.1:(apiPortBase+i-1).
func NewLayout(name, stateDir string, clusters, nodes, apiPortBase int) (*Layout, error) {
	if clusters < 1 || clusters > 9 {
		return nil, fmt.Errorf("--clusters %d: between 1 and 9", clusters)
	}
	if nodes < 1 || nodes > 9 {
		return nil, fmt.Errorf("--nodes %d: between 1 and 9", nodes)
	}
	prefix := NamespacePrefix(name)
	l := &Layout{Underlay: prefix + "underlay", Prefix: prefix}
	for i := 1; i <= clusters; i++ {
		name := fmt.Sprintf("weft-%d", i)
		c := ClusterLayout{
			Name: name, Index: i, Dir: filepath.Join(stateDir, name),
			PodCIDR:     netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 243+i)),
			ServiceCIDR: netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 95+i)),
			APIPort:     apiPortBase + i - 1,
			ControlPlane: Host{Name: name + "-cp", Netns: prefix + name + "-cp", Port: fmt.Sprintf("c%dcp", i),
				IP: netip.MustParseAddr(fmt.Sprintf("172.30.%d.2", i))},
		}
		for j := 1; j <= nodes; j++ {
			n := fmt.Sprintf("%s-node-%d", name, j)
			c.Nodes = append(c.Nodes, Host{Name: n, Netns: prefix + n, Port: fmt.Sprintf("c%dn%d", i, j),
				IP: netip.MustParseAddr(fmt.Sprintf("172.30.%d.%d", i, 10+j))})
		}
		l.Clusters = append(l.Clusters, c)
	}
	return l, nil
}

// OverlapLast gives the last cluster the first one's pod and service ranges (lab up
// --overlap), as two clusters made with the same installer defaults have.
func (l *Layout) OverlapLast() {
	if n := len(l.Clusters); n > 1 {
		l.Clusters[n-1].PodCIDR, l.Clusters[n-1].ServiceCIDR = l.Clusters[0].PodCIDR, l.Clusters[0].ServiceCIDR
	}
}

// ServiceIP returns the n-th address of the service range (1: the kubernetes Service,
// 10: cluster DNS).
func (c ClusterLayout) ServiceIP(n int) netip.Addr {
	a := c.ServiceCIDR.Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// NodeDir is where a node keeps its root ("host filesystem") and kubelet state.
func (c ClusterLayout) NodeDir(node string) string { return filepath.Join(c.Dir, "nodes", node) }

// PodNetnsPrefix starts the names of the pod namespaces of this lab's kubelets.
func (l *Layout) PodNetnsPrefix() string { return l.Prefix + "pod-" }

// WithLength returns an address with the underlay's prefix length, for `ip addr add`.
func WithLength(a netip.Addr) string { return netip.PrefixFrom(a, UnderlayCIDR.Bits()).String() }

// LogDir keeps a cluster's process logs; it survives `lab down`.
func LogDir(stateDir, cluster string) string { return filepath.Join(stateDir, "logs", cluster) }
