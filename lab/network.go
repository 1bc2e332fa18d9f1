package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/weft-net/weft/internal/statefile"
	"github.com/weft-net/weft/lab/netlab"
)

// referenceNetwork plays the network provider for the reference CNI plugins: for every node
// with a pod CIDR it writes the node's CNI configuration (ptp + host-local on that block) and
// routes the block to the node from every other node and the control plane.
func (l *Lab) referenceNetwork(ctx context.Context, c ClusterLayout, cs kubernetes.Interface) {
	hosts := map[string]Host{}
	for _, n := range c.Nodes {
		hosts[n.Name] = n
	}
	routed := map[string]string{} // node -> CIDR routed everywhere
	for {
		if nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
			for _, n := range nodes.Items {
				h, ok := hosts[n.Name]
				cidr := n.Spec.PodCIDR
				if !ok || cidr == "" || routed[n.Name] == cidr {
					continue
				}
				if err := l.referenceConf(c, h, cidr); err != nil {
					l.log.Error(err, "writing CNI configuration", "node", n.Name)
					continue
				}
				ok = true
				for _, other := range append([]Host{c.ControlPlane}, c.Nodes...) {
					if other.Name == h.Name {
						continue
					}
					if err := netlab.IP("-n", other.Netns, "route", "replace", cidr, "via", h.IP.String()); err != nil {
						l.log.Error(err, "routing a pod block", "node", n.Name, "from", other.Name)
						ok = false
					}
				}
				if ok {
					routed[n.Name] = cidr
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// egressNAT gives pods of a node a way out of their cluster's pod network (to other
// clusters' API servers, say), as a cloud's node NAT does: traffic from the pod range to
// anywhere outside it leaves with the node's address.
func egressNAT(c ClusterLayout, n Host) error {
	return netlab.Nft(n.Netns, fmt.Sprintf(`table ip weft-lab-egress {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr %s ip daddr != %s oifname "eth0" masquerade
  }
}
`, c.PodCIDR, c.PodCIDR))
}

func (l *Lab) referenceConf(c ClusterLayout, h Host, cidr string) error {
	root := filepath.Join(c.NodeDir(h.Name), "root")
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "weft-lab",
		"plugins": []any{map[string]any{
			"type": "ptp", "mtu": 1500, "ipMasq": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": cidr}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(root, "var", "lib", "cni", "networks"),
			},
		}},
	}
	data, _ := json.MarshalIndent(conf, "", "  ")
	return statefile.Write(filepath.Join(root, "etc", "cni", "net.d", "10-weft-lab.conflist"), data, 0o644, 0o755)
}

// installWeft installs weft from its kustomization, as a user would, and gives the cluster
// its ClusterNetwork: from then on weft's agents wire the pods.
func (l *Lab) installWeft(ctx context.Context, c ClusterLayout, p *clusterPKI) error {
	out, err := exec.CommandContext(ctx, filepath.Join(l.opts.KubeBin, "kubectl"), "--kubeconfig", p.hostKubeconfig,
		"apply", "--server-side", "-k", l.opts.WeftManifests).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply -k %s: %w: %s", l.opts.WeftManifests, err, out)
	}
	withRouter := l.opts.Router(c.Index) != ""
	spec := "" // the default: ovs, geneve
	if d := l.opts.Datapath(c.Index); d == "ebpf" && withRouter {
		// The router and the underlay carry pod traffic: no encapsulation.
		spec = "  datapath: {backend: ebpf, encapsulation: none}\n"
	} else if d == "ebpf" {
		spec = "  datapath: {backend: ebpf, encapsulation: vxlan}\n"
	}
	if withRouter {
		spec += c.bgpSpec()
		if err := ApplyYAML(ctx, p.hostKubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: weft-system}
stringData: {password: %s}
`, BGPSecret, BGPPassword)); err != nil {
			return err
		}
	}
	return ApplyYAML(ctx, p.hostKubeconfig, fmt.Sprintf(`apiVersion: fabric.weft.dev/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterID: %s
  podCIDRs: [%s]
  serviceCIDRs: [%s]
%s`, c.Name, c.PodCIDR, c.ServiceCIDR, spec))
}

// weftNetwork routes each node's weft pod block from the control-plane namespace (which runs
// no agent) to that node, so the API servers reach pods (webhooks, exec through pods). It
// follows the FabricNodes through a watch: the lab sends its API servers nothing at rest.
func (l *Lab) weftNetwork(ctx context.Context, c ClusterLayout, dyn dynamic.Interface) {
	hosts := map[string]Host{}
	for _, n := range c.Nodes {
		hosts[n.Name] = n
	}
	changed := make(chan struct{}, 1)
	kick := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	fabricNodes := factory.ForResource(fabricNodesGVR)
	if _, err := fabricNodes.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { kick() }, UpdateFunc: func(any, any) { kick() }}); err != nil {
		l.log.Error(err, "watching FabricNodes")
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	routed := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		list, err := fabricNodes.Lister().List(labels.Everything())
		if err != nil {
			continue
		}
		for _, o := range list {
			n, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			h, ok := hosts[n.GetName()]
			blocks := fabricNodeBlocks(n)
			if !ok || blocks == "" || routed[n.GetName()] == blocks {
				continue
			}
			ok = true
			for _, b := range strings.Split(blocks, ",") {
				if strings.Contains(b, ":") {
					continue // IPv4 underlay only
				}
				if err := netlab.IP("-n", c.ControlPlane.Netns, "route", "replace", b, "via", h.IP.String()); err != nil {
					l.log.Error(err, "routing a weft pod block", "node", n.GetName())
					ok = false
				}
			}
			if ok {
				routed[n.GetName()] = blocks
			} else {
				go func() { time.Sleep(time.Second); kick() }() // try again
			}
		}
	}
}

// fabricNodesGVR names weft's FabricNodes, which carry each node's pod blocks; the lab reads
// them as unstructured objects rather than import the API (it installs weft as a user would).
var fabricNodesGVR = schema.GroupVersionResource{Group: "fabric.weft.dev", Version: "v1alpha1", Resource: "fabricnodes"}

// fabricNodeBlocks is a FabricNode's spec.podCIDRs, comma-separated ("" for none).
func fabricNodeBlocks(n *unstructured.Unstructured) string {
	blocks, _, _ := unstructured.NestedStringSlice(n.Object, "spec", "podCIDRs")
	return strings.Join(blocks, ",")
}
