package render_test

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/render"
)

var images = render.Images{Agent: "a:1", OVS: "o:1", Gateway: "g:1", DNS: "d:1"}

func daemonSet(t *testing.T, objs []client.Object) *appsv1.DaemonSet {
	t.Helper()
	for _, o := range objs {
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			return ds
		}
	}
	t.Fatal("no DaemonSet rendered")
	return nil
}

func containerNames(ds *appsv1.DaemonSet) []string {
	var names []string
	for _, c := range ds.Spec.Template.Spec.Containers {
		names = append(names, c.Name+"="+c.Image)
	}
	return names
}

// The agent runs beside Open vSwitch on an ovs cluster and alone, with the node's bpffs, on
// an ebpf one; changing the datapath changes the pod template (the agents roll).
func TestAgentFollowsTheDatapath(t *testing.T) {
	cn := &fabricv1.ClusterNetwork{Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1"}}
	ovs := daemonSet(t, render.Agent("weft-system", images, cn))
	if got := containerNames(ovs); len(got) != 2 || got[0] != "ovs=o:1" || got[1] != "agent=a:1" {
		t.Errorf("ovs cluster's agent pod: %v", got)
	}
	ebpfCN := cn.DeepCopy()
	ebpfCN.Spec.Datapath.Backend = fabricv1.DatapathEBPF
	ebpf := daemonSet(t, render.Agent("weft-system", images, ebpfCN))
	if got := containerNames(ebpf); len(got) != 1 || got[0] != "agent=a:1" {
		t.Errorf("ebpf cluster's agent pod: %v", got)
	}
	bpffs := false
	for _, m := range ebpf.Spec.Template.Spec.Containers[0].VolumeMounts {
		bpffs = bpffs || m.MountPath == "/sys/fs/bpf" && *m.MountPropagation == corev1.MountPropagationBidirectional
	}
	if !bpffs {
		t.Error("the ebpf agent does not mount the node's bpffs")
	}
	h := "fabric.weft.dev/datapath-hash"
	if ovs.Spec.Template.Annotations[h] == ebpf.Spec.Template.Annotations[h] {
		t.Error("another datapath gives the same pod template hash: the agents would not roll")
	}
	if again := daemonSet(t, render.Agent("weft-system", images, cn)); again.Spec.Template.Annotations[h] != ovs.Spec.Template.Annotations[h] {
		t.Error("the same ClusterNetwork renders another hash")
	}
}

// The agent may read the BGP password Secrets its peers name, and no other.
func TestAgentReadsOnlyTheNamedPasswordSecrets(t *testing.T) {
	cn := &fabricv1.ClusterNetwork{Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1", BGP: &fabricv1.BGPSpec{ASN: 64512,
		Peers: []fabricv1.BGPPeer{{Name: "a", PasswordSecretRef: &fabricv1.LocalSecretKeyRef{Name: "tor-b"}},
			{Name: "b", PasswordSecretRef: &fabricv1.LocalSecretKeyRef{Name: "tor-a"}}, {Name: "c"}}}}}
	for _, o := range render.Agent("weft-system", images, cn) {
		if r, ok := o.(*rbacv1.Role); ok {
			if len(r.Rules) != 1 || len(r.Rules[0].ResourceNames) != 2 || r.Rules[0].ResourceNames[0] != "tor-a" || r.Rules[0].ResourceNames[1] != "tor-b" {
				t.Errorf("the agent's Secret role: %+v", r.Rules)
			}
			// It watches each by name (a list or watch with a field selector on the name).
			if !slices.Equal(r.Rules[0].Verbs, []string{"get", "list", "watch"}) {
				t.Errorf("the agent's Secret role allows %v; want get, list and watch", r.Rules[0].Verbs)
			}
			return
		}
	}
	t.Error("no Role rendered")
}

// Gateways run where spec.gateways.nodeSelector says.
func TestGatewaysRunOnTheSelectedNodes(t *testing.T) {
	cn := &fabricv1.ClusterNetwork{Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1",
		Gateways: fabricv1.GatewaysSpec{NodeSelector: map[string]string{"edge": "yes"}, Tunnel: fabricv1.TunnelWireGuard}}}
	ds := daemonSet(t, render.Gateway("weft-system", images, cn))
	if ds.Name != render.GatewayName || ds.Spec.Template.Spec.NodeSelector["edge"] != "yes" {
		t.Errorf("gateway DaemonSet %s with node selector %v", ds.Name, ds.Spec.Template.Spec.NodeSelector)
	}
}
