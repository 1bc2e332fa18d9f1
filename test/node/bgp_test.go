package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/testenv"
	"github.com/weft-net/weft/lab/router"
)

// TestBGPWithdrawsWhenTheBlockOrTheNodeGoes runs the real agent with spec.bgp against BIRD
// and FRR: the node's block reaches the router through the node; when the operator takes the
// block back (drained) the agent withdraws it, and when the Node is deleted the agent
// withdraws everything at once — not leaving it to the router's graceful-restart timer.
func TestBGPWithdrawsWhenTheBlockOrTheNodeGoes(t *testing.T) {
	netnstest.RequireRoot(t)
	for i, kind := range router.Kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			sw := netnstest.NewSwitch(t)
			rns := netnstest.New(t, "rtr")
			routerIP := netip.MustParseAddr(fmt.Sprintf("172.29.%d.254", 6+i))
			nodeIP := netip.MustParseAddr(fmt.Sprintf("172.29.%d.11", 6+i))
			block := netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", 6+i))
			sw.Plug(t, rns, "r", routerIP.String()+"/24")
			rc := router.Config{Kind: kind, Dir: filepath.Join(t.TempDir(), kind), Netns: rns.Name, ASN: 65000, RouterID: routerIP,
				Neighbors: netip.PrefixFrom(routerIP, 24).Masked(), NeighborASN: 64512, Peers: []netip.Addr{nodeIP}}
			stop, err := rc.Start(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			setCN(t, func(s *fabricv1.ClusterNetworkSpec) {
				s.BGP = &fabricv1.BGPSpec{ASN: 64512, ListenPort: 179, Advertise: fabricv1.BGPAdvertise{PodBlocks: true},
					GracefulRestart: fabricv1.BGPGracefulRestart{Enabled: true, RestartTimeSeconds: 120},
					Peers:           []fabricv1.BGPPeer{{Name: "tor", Address: routerIP.String(), ASN: 65000, Port: 179, HoldTimeSeconds: 9, KeepaliveSeconds: 3}}}
			})

			name := fmt.Sprintf("bgp-%d", i)
			newNode(t, sw, name, nodeIP.String(), block.String())
			if err := rc.WaitRoute(ctx, block, []netip.Addr{nodeIP}, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 30*time.Second, func() error {
				b := &fabricv1.BGPNode{}
				if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, b); err != nil {
					return err
				}
				if !meta.IsStatusConditionTrue(b.Status.Conditions, fabricv1.ConditionReady) || len(b.Status.Advertised) != 1 {
					return fmt.Errorf("BGPNode %s: %+v", name, b.Status)
				}
				return nil
			})

			// The block is taken back: withdrawn; given again: announced.
			setBlock(t, name, "")
			if err := rc.WaitRoute(ctx, block, nil, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			setBlock(t, name, block.String())
			if err := rc.WaitRoute(ctx, block, []netip.Addr{nodeIP}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			// The Node is deleted (its agent still running, as while a node drains away).
			start := time.Now()
			if err := env.Client.Delete(ctx, nodeObj(name)); err != nil {
				t.Fatal(err)
			}
			if err := rc.WaitRoute(ctx, block, nil, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: the route went %v after the Node was deleted", kind, time.Since(start).Round(time.Millisecond))
		})
	}
}

// setBlock gives the node its FabricNode with block, or takes it away ("").
func setBlock(t *testing.T, node, block string) {
	t.Helper()
	fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node}}
	if err := env.Client.Delete(context.Background(), fn); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if block == "" {
		return
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node},
			Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{fabricv1.CIDR(block)}}}
		return env.Client.Create(context.Background(), fn) // until the deletion is through
	})
}

func nodeObj(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// TestBGPExternalHostReachesPodsWithoutEncapsulation runs two real agents on the ebpf
// datapath with encapsulation none, announcing their blocks to BIRD and to FRR: a host
// behind the router reaches the pods of both nodes, and the pods answer through the route
// the router announced (imported into the nodes' tables).
func TestBGPExternalHostReachesPodsWithoutEncapsulation(t *testing.T) {
	netnstest.RequireRoot(t)
	for i, kind := range router.Kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			sw := netnstest.NewSwitch(t)
			rns, ext := netnstest.New(t, "rtr"), netnstest.New(t, "ext")
			routerIP := netip.MustParseAddr(fmt.Sprintf("172.29.%d.254", 8+i))
			extNet := netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/24", 208+i))
			extGW, extIP := extNet.Addr().Next(), netip.AddrFrom4([4]byte{192, 168, byte(208 + i), 10})
			sw.Plug(t, rns, "r", routerIP.String()+"/24")
			rns.MustIP(t, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext.Name)
			rns.MustIP(t, "addr", "add", netip.PrefixFrom(extGW, 24).String(), "dev", "ext0")
			rns.MustIP(t, "link", "set", "ext0", "up")
			ext.MustIP(t, "addr", "add", netip.PrefixFrom(extIP, 24).String(), "dev", "eth0")
			ext.MustIP(t, "link", "set", "eth0", "up")
			ext.MustIP(t, "route", "add", "default", "via", extGW.String())
			if _, err := rns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
				t.Fatal(err)
			}
			var ips []netip.Addr
			for j := 1; j <= 2; j++ {
				ips = append(ips, netip.MustParseAddr(fmt.Sprintf("172.29.%d.%d", 8+i, 10+j)))
			}
			rc := router.Config{Kind: kind, Dir: filepath.Join(t.TempDir(), kind), Netns: rns.Name, ASN: 65000, RouterID: routerIP,
				Neighbors: netip.PrefixFrom(routerIP, 24).Masked(), NeighborASN: 64512, Peers: ips, Announce: []netip.Prefix{extNet}}
			stop, err := rc.Start(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			setCN(t, func(s *fabricv1.ClusterNetworkSpec) {
				s.Datapath = fabricv1.DatapathSpec{Backend: fabricv1.DatapathEBPF, Encapsulation: fabricv1.EncapsulationNone}
				s.BGP = &fabricv1.BGPSpec{ASN: 64512, ListenPort: 179, Import: true, Advertise: fabricv1.BGPAdvertise{PodBlocks: true},
					GracefulRestart: fabricv1.BGPGracefulRestart{Enabled: true, RestartTimeSeconds: 120},
					Peers:           []fabricv1.BGPPeer{{Name: "tor", Address: routerIP.String(), ASN: 65000, Port: 179, HoldTimeSeconds: 9, KeepaliveSeconds: 3}}}
			})
			for j, ip := range ips {
				name := fmt.Sprintf("bgpx-%d-%d", i, j)
				block := netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", 20+2*i+j))
				bpffs := filepath.Join(t.TempDir(), "bpffs")
				t.Cleanup(func() { _ = syscall.Unmount(bpffs, syscall.MNT_DETACH) })
				n := newNode(t, sw, name, ip.String(), block.String(), "--bpffs="+bpffs)
				if err := rc.WaitRoute(ctx, block, []netip.Addr{ip}, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				p, sandbox := n.pod(name + "-web")
				r := n.cni("ADD", name+"-web-1", p, sandbox)
				if err := r.err(); err != nil {
					t.Fatal(err)
				}
				podIP := podIP(r)
				sandbox.ServeEcho(t, podIP, []int{8080}, nil)
				testenv.Eventually(t, 30*time.Second, func() error {
					if o := ext.Probe("tcp", netip.AddrPortFrom(podIP, 8080), 2*time.Second); o != netnstest.Connected {
						return fmt.Errorf("external host → pod %s on %s: %s", podIP, name, o)
					}
					return nil
				})
			}
		})
	}
}

// setCN changes the shared ClusterNetwork's spec for one test.
func setCN(t *testing.T, mut func(*fabricv1.ClusterNetworkSpec)) {
	t.Helper()
	cn := &fabricv1.ClusterNetwork{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		t.Fatal(err)
	}
	before := *cn.Spec.DeepCopy()
	mut(&cn.Spec)
	if err := env.Client.Update(context.Background(), cn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cn := &fabricv1.ClusterNetwork{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err == nil {
			cn.Spec = before
			_ = env.Client.Update(context.Background(), cn)
		}
	})
}
