// Package policysync keeps a node's datapath enforcing the cluster's policy: it reads
// Tiers, FabricPolicies, NetworkPolicies, pods, namespaces and peer clusters, compiles the
// policy of the node's pods (agent/policy) and hands it to the datapath; then it tells the
// operator which policy generations the node enforces.
package policysync

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy/oracle"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Inputs are the API objects the policy is computed from.
type Inputs struct {
	Tiers           []fabricv1.Tier
	Policies        []fabricv1.FabricPolicy
	NetworkPolicies []networkingv1.NetworkPolicy
	Pods            []corev1.Pod
	Namespaces      []corev1.Namespace
	Peers           []fabricv1.ClusterPeer
	// Local are the pods wired on this node, as the datapath holds them: their addresses
	// are known before the API shows them.
	Local []datapath.Pod
}

// World builds the evaluator's snapshot and returns it with the node's pods. Pods on the
// host's network, pods that are done, and pods without an address are no policy's
// endpoints. Tiers and policies being deleted still count until they are gone. What the
// pods learnt from DNS answers (Resolved) is the syncer's to add: it depends on the pods.
func World(in Inputs) (*oracle.World, []oracle.Pod) {
	w := &oracle.World{Tiers: in.Tiers, Policies: in.Policies, NetworkPolicies: in.NetworkPolicies,
		Namespaces: map[string]map[string]string{}, Clusters: map[string][]netip.Prefix{}}
	for _, ns := range in.Namespaces {
		w.Namespaces[ns.Name] = ns.Labels
	}
	byName := map[string]*corev1.Pod{}
	for i := range in.Pods {
		p := &in.Pods[i]
		byName[p.Namespace+"/"+p.Name] = p
	}
	localIPs := map[netip.Addr]bool{}
	var local []oracle.Pod
	for _, lp := range in.Local {
		api := byName[lp.Namespace+"/"+lp.Name]
		for _, ip := range lp.IPs {
			op := oracle.Pod{Namespace: lp.Namespace, Name: lp.Name, IP: ip.Addr()}
			if api != nil && string(api.UID) == lp.UID || api != nil && lp.UID == "" {
				op.Labels, op.Ports = api.Labels, namedPorts(api)
			}
			local = append(local, op)
			localIPs[op.IP] = true
		}
	}
	w.Pods = append(w.Pods, local...)
	for i := range in.Pods {
		p := &in.Pods[i]
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, pip := range p.Status.PodIPs {
			ip, err := netip.ParseAddr(pip.IP)
			if err != nil || localIPs[ip] {
				continue
			}
			w.Pods = append(w.Pods, oracle.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, IP: ip, Ports: namedPorts(p)})
		}
	}
	for _, peer := range in.Peers {
		// As this cluster sees the peer: its aliases where it has some (what its pods'
		// packets carry here once its gateways translated them).
		w.Clusters[peer.Spec.ClusterID] = append(w.Clusters[peer.Spec.ClusterID], peer.Status.Prefixes()...)
	}
	return w, local
}

func namedPorts(p *corev1.Pod) []oracle.NamedPort {
	var out []oracle.NamedPort
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for _, port := range c.Ports {
				if port.Name == "" {
					continue
				}
				proto := port.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				out = append(out, oracle.NamedPort{Name: port.Name, Protocol: proto, Port: port.ContainerPort})
			}
		}
	}
	return out
}
