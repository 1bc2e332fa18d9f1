package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/testenv"
)

// These tests prove that the API server itself, through the generated CRD schema and its CEL
// rules, refuses bad objects and fills in defaults. No controller runs.

var k8s client.Client

func TestMain(m *testing.M) {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	k8s = env.Client
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func network(name, clusterID string, pods ...string) *fabricv1.ClusterNetwork {
	return &fabricv1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: clusterID, PodCIDRs: cidrs(pods...),
			ServiceCIDRs: cidrs("10.96.0.0/16")},
	}
}

func cidrs(s ...string) []fabricv1.CIDR {
	out := make([]fabricv1.CIDR, len(s))
	for i, c := range s {
		out[i] = fabricv1.CIDR(c)
	}
	return out
}

func expectRejected(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted the object; want a rejection containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("rejection = %q\nwant it to contain %q", err, want)
	}
}

func TestClusterNetworkCreateIsValidated(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		obj  *fabricv1.ClusterNetwork
		want string
	}{
		{"name other than default", network("mine", "c1", "10.244.0.0/16"),
			"its name must be 'default'"},
		{"cluster ID not a DNS label", network("default", "Cluster_1", "10.244.0.0/16"),
			"spec.clusterID: Invalid value"},
		{"not a CIDR", withSvc(network("default", "c1", "10.244.0.0/33"), "10.96.0.0/16"),
			"must be a CIDR such as"},
		{"host bits set", withSvc(network("default", "c1", "10.244.7.0/16"), "10.96.0.0/16"),
			"its host bits must be zero"},
		{"two IPv4 pod ranges", withSvc(network("default", "c1", "10.244.0.0/16", "10.245.0.0/16"), "10.96.0.0/16"),
			"at most one CIDR per IP family"},
		{"two IPv6 service ranges", withSvc(network("default", "c1", "10.244.0.0/16"), "fd00:1::/112", "fd00:2::/112"),
			"at most one CIDR per IP family"},
		{"no pod ranges", withSvc(network("default", "c1"), "10.96.0.0/16"),
			"spec.podCIDRs"},
		{"unknown backend", func() *fabricv1.ClusterNetwork {
			cn := withSvc(network("default", "c1", "10.244.0.0/16"), "10.96.0.0/16")
			cn.Spec.Datapath.Backend = "calico"
			return cn
		}(), `spec.datapath.backend: Unsupported value: "calico"`},
		{"MTU too small", func() *fabricv1.ClusterNetwork {
			cn := withSvc(network("default", "c1", "10.244.0.0/16"), "10.96.0.0/16")
			cn.Spec.Datapath.MTU = 576
			return cn
		}(), "spec.datapath.mtu: Invalid value: 576"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectRejected(t, k8s.Create(ctx, c.obj), c.want)
		})
	}
}

func withSvc(cn *fabricv1.ClusterNetwork, svcs ...string) *fabricv1.ClusterNetwork {
	cn.Spec.ServiceCIDRs = cidrs(svcs...)
	return cn
}

func TestClusterNetworkDefaultsAndImmutableClusterID(t *testing.T) {
	ctx := context.Background()
	cn := withSvc(network("default", "c1", "10.244.0.0/16", "fd00:10:244::/56"), "10.96.0.0/16", "fd00:10:96::/112")
	if err := k8s.Create(ctx, cn); err != nil {
		t.Fatalf("creating a valid dual-stack ClusterNetwork: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, cn) })

	got := &fabricv1.ClusterNetwork{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(cn), got); err != nil {
		t.Fatal(err)
	}
	s := got.Spec
	if s.Datapath.Backend != "ovs" || s.Datapath.Encapsulation != "geneve" || s.Gateways.Tunnel != "wireguard" ||
		s.Gateways.MaxActive != 2 || s.Gateways.NodeSelector["fabric.weft.dev/gateway"] != "true" ||
		s.DNS.Domain != "clusterset.local" {
		t.Errorf("defaults not applied: %+v", s)
	}

	got.Spec.ClusterID = "c2"
	expectRejected(t, k8s.Update(ctx, got), "clusterID is immutable")

	// Other fields stay editable.
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(cn), got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Datapath.MTU = 1400
	if err := k8s.Update(ctx, got); err != nil {
		t.Errorf("changing the MTU was refused: %v", err)
	}
}

func TestTierPriorityRangeAndImmutability(t *testing.T) {
	ctx := context.Background()
	tier := func(name string, p int32) *fabricv1.Tier {
		return &fabricv1.Tier{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.TierSpec{Priority: p}}
	}
	expectRejected(t, k8s.Create(ctx, tier("too-high", 256)), "spec.priority: Invalid value: 256")
	expectRejected(t, k8s.Create(ctx, tier("negative", -1)), "spec.priority: Invalid value: -1")

	ok := tier("team-a", 120)
	if err := k8s.Create(ctx, ok); err != nil {
		t.Fatalf("creating tier: %v", err)
	}
	ok.Spec.Priority = 121
	expectRejected(t, k8s.Update(ctx, ok), "priority is immutable")
}

func TestClusterPeerValidation(t *testing.T) {
	ctx := context.Background()
	peer := &fabricv1.ClusterPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "c2"},
		Spec: fabricv1.ClusterPeerSpec{ClusterID: "c2",
			KubeconfigSecretRef: fabricv1.SecretKeyRef{Namespace: "weft-system", Name: "peer-c2"}},
	}
	if err := k8s.Create(ctx, peer); err != nil {
		t.Fatalf("creating peer: %v", err)
	}
	if peer.Spec.KubeconfigSecretRef.Key != "kubeconfig" {
		t.Errorf("secret key default = %q, want kubeconfig", peer.Spec.KubeconfigSecretRef.Key)
	}
	peer.Spec.ClusterID = "c3"
	expectRejected(t, k8s.Update(ctx, peer), "clusterID is immutable")

	noRef := &fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: "c4"}, Spec: fabricv1.ClusterPeerSpec{ClusterID: "c4"}}
	expectRejected(t, k8s.Create(ctx, noRef), "spec.kubeconfigSecretRef.name")
}

func TestBGPValidationAndDefaults(t *testing.T) {
	ctx := context.Background()
	withBGP := func(mut func(*fabricv1.BGPSpec)) *fabricv1.ClusterNetwork {
		cn := withSvc(network("default", "c1", "10.244.0.0/16"), "10.96.0.0/16")
		cn.Spec.BGP = &fabricv1.BGPSpec{ASN: 64512, Peers: []fabricv1.BGPPeer{{Name: "tor", Address: "172.30.0.254", ASN: 65000}}}
		mut(cn.Spec.BGP)
		return cn
	}
	cases := []struct {
		name string
		mut  func(*fabricv1.BGPSpec)
		want string
	}{
		{"no ASN", func(b *fabricv1.BGPSpec) { b.ASN = 0 }, "spec.bgp.asn: Invalid value: 0"},
		{"peer without address or node selector", func(b *fabricv1.BGPSpec) { b.Peers[0].Address = "" },
			"set exactly one of address and nodeSelector"},
		{"peer with both", func(b *fabricv1.BGPSpec) { b.Peers[0].NodeSelector = &metav1.LabelSelector{} },
			"set exactly one of address and nodeSelector"},
		{"peer address not an IP", func(b *fabricv1.BGPSpec) { b.Peers[0].Address = "tor.example" }, "must be an IP address"},
		{"keepalive not under hold time", func(b *fabricv1.BGPSpec) {
			b.Peers[0].HoldTimeSeconds, b.Peers[0].KeepaliveSeconds = 9, 9
		}, "keepaliveSeconds must be less than holdTimeSeconds"},
		{"hold time under 3 s", func(b *fabricv1.BGPSpec) { b.Peers[0].HoldTimeSeconds = 2 }, "holdTimeSeconds: Invalid value: 2"},
		{"community not ASN:value", func(b *fabricv1.BGPSpec) { b.Communities = []string{"no-export"} }, "spec.bgp.communities[0]"},
		{"BFD interval too short", func(b *fabricv1.BGPSpec) { b.Peers[0].BFD = &fabricv1.BGPBFD{MinIntervalMilliseconds: 10} },
			"minIntervalMilliseconds: Invalid value: 10"},
		{"peer name not a label", func(b *fabricv1.BGPSpec) { b.Peers[0].Name = "Top Of Rack" }, "spec.bgp.peers[0].name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectRejected(t, k8s.Create(ctx, withBGP(c.mut)), c.want)
		})
	}

	cn := withBGP(func(b *fabricv1.BGPSpec) { b.Peers[0].BFD = &fabricv1.BGPBFD{} })
	if err := k8s.Create(ctx, cn); err != nil {
		t.Fatalf("creating a valid BGP configuration: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, cn) })
	b := cn.Spec.BGP
	p := b.Peers[0]
	if b.ListenPort != 179 || b.RouterIDSource != "NodeIP" || !b.Advertise.PodBlocks || b.Advertise.ServiceCIDRs ||
		!b.GracefulRestart.Enabled || b.GracefulRestart.RestartTimeSeconds != 120 ||
		p.Port != 179 || p.HoldTimeSeconds != 90 || p.KeepaliveSeconds != 30 || p.BFD.MinIntervalMilliseconds != 300 || p.BFD.Multiplier != 3 {
		t.Errorf("defaults not applied: %+v", *b)
	}
}
