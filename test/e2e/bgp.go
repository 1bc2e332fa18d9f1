package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/lab"
)

// BGPInput is the input of BGP.
type BGPInput struct {
	Lab       *Lab
	Cluster   string // a cluster with a lab router (weftctl lab up --router)
	Namespace string
	// ExportFrom, when set, is a peered cluster that exports a Service to Cluster: its
	// ServiceImport's address must be announced.
	ExportFrom string
	Nodes      int
}

// BGP checks a cluster whose nodes speak BGP with the lab's router (BIRD or FRR): sessions
// Established and reported; every node's pod block in the router's table through its node;
// the external host behind the router reaching pods; a ServiceImport's address announced;
// a frozen node's routes gone within a second (BFD); an agent restart unseen by the router
// (graceful restart); a node leaving BGP withdrawing its block; a bad peer reported without
// disturbing the others.
func BGP(t *testing.T, in BGPInput) {
	ctx := context.Background()
	l := in.Lab
	rc, err := lab.LoadRouter(filepath.Join(l.State, in.Cluster))
	if err != nil {
		t.Fatalf("the cluster's lab router: %v (lab up --router)", err)
	}
	cs := l.Client(t, in.Cluster)
	c := l.CRClient(t, in.Cluster)
	type nodeInfo struct {
		name  string
		ip    netip.Addr
		block netip.Prefix
	}
	var nodes []nodeInfo
	Eventually(t, time.Minute, func() error {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		fns := &fabricv1.FabricNodeList{}
		if err := c.List(ctx, fns); err != nil {
			return err
		}
		blocksOf := map[string][]fabricv1.CIDR{}
		for _, fn := range fns.Items {
			blocksOf[fn.Name] = fn.Spec.PodCIDRs
		}
		nodes = nil
		for _, n := range list.Items {
			var blocks []netip.Prefix
			for _, b := range blocksOf[n.Name] {
				if p, err := netip.ParsePrefix(string(b)); err == nil {
					blocks = append(blocks, p)
				}
			}
			var ip netip.Addr
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					ip, _ = netip.ParseAddr(a.Address)
				}
			}
			if len(blocks) == 0 || !ip.IsValid() {
				return fmt.Errorf("node %s has no block or address yet", n.Name)
			}
			nodes = append(nodes, nodeInfo{n.Name, ip, blocks[0]})
		}
		if len(nodes) != in.Nodes {
			return fmt.Errorf("%d nodes, want %d", len(nodes), in.Nodes)
		}
		return nil
	})
	ips := func(ns []nodeInfo) []netip.Addr {
		var out []netip.Addr
		for _, n := range ns {
			out = append(out, n.ip)
		}
		return out
	}
	bgpNode := func(name string) (*fabricv1.BGPNode, error) {
		b := &fabricv1.BGPNode{}
		return b, c.Get(ctx, client.ObjectKey{Name: name}, b)
	}
	// peerUp waits until the node's BGPNode reports the router's session Established (with
	// BFD up or off as wanted) and Ready.
	peerUp := func(t *testing.T, name string, bfd string, since time.Time) {
		t.Helper()
		Eventually(t, time.Minute, func() error {
			b, err := bgpNode(name)
			if err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(b.Status.Conditions, fabricv1.ConditionReady) {
				return fmt.Errorf("BGPNode %s not Ready: %+v", name, b.Status)
			}
			for _, p := range b.Status.Peers {
				if p.Name == "tor" && p.State == fabricv1.BGPStateEstablished && p.BFD == bfd && p.PrefixesSent >= 2 &&
					p.Since != nil && !p.Since.Time.Before(since.Truncate(time.Second)) {
					return nil
				}
			}
			return fmt.Errorf("BGPNode %s: %+v; want tor Established since %v, BFD %q, 2+ prefixes sent", name, b.Status.Peers, since, bfd)
		})
	}

	// setBGP changes spec.bgp.
	setBGP := func(t *testing.T, mut func(*fabricv1.BGPSpec)) {
		t.Helper()
		Eventually(t, 30*time.Second, func() error {
			cn := &fabricv1.ClusterNetwork{}
			if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
				return err
			}
			mut(cn.Spec.BGP)
			return c.Update(ctx, cn)
		})
	}
	withBFD := func(on bool) func(*fabricv1.BGPSpec) {
		return func(b *fabricv1.BGPSpec) {
			for i := range b.Peers {
				if b.Peers[i].Name == "tor" {
					b.Peers[i].BFD = nil
					if on {
						b.Peers[i].BFD = &fabricv1.BGPBFD{MinIntervalMilliseconds: 100, Multiplier: 3}
					}
				}
			}
		}
	}

	// The lab's settings: BFD on the router's sessions (an earlier run may have left them off).
	setBGP(t, withBFD(true))

	t.Run(rc.Kind+": every node's session is Established and its pod block at the router through the node", func(t *testing.T) {
		for _, n := range nodes {
			peerUp(t, n.name, "Up", time.Time{})
		}
		if err := rc.WaitEstablished(ctx, ips(nodes), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if err := rc.WaitRoute(ctx, n.block, []netip.Addr{n.ip}, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		cn := &fabricv1.ClusterNetwork{}
		if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
			t.Fatal(err)
		}
		svc := netip.MustParsePrefix(string(cn.Spec.ServiceCIDRs[0]))
		if err := rc.WaitRoute(ctx, svc, ips(nodes), 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	namespace(t, cs, in.Namespace)
	t.Run(rc.Kind+": the external host behind the router reaches pods on every node", func(t *testing.T) {
		ext := &netnstest.Netns{Name: lab.NamespacePrefix(l.Name) + in.Cluster + "-ext"}
		for _, n := range nodes {
			name := "web-" + n.name[len(n.name)-1:]
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: in.Namespace},
				Spec: corev1.PodSpec{NodeName: n.name, TerminationGracePeriodSeconds: ptr.To(int64(1)),
					Containers: []corev1.Container{{Name: "web", Image: agnhost, Args: []string{"netexec", "--http-port=8080"},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}}}}}
			if _, err := cs.CoreV1().Pods(in.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes {
			name := "web-" + n.name[len(n.name)-1:]
			ip := netip.MustParseAddr(WaitPodReady(t, cs, in.Namespace, name, 2*time.Minute).Status.PodIP)
			Eventually(t, 30*time.Second, func() error {
				if o := ext.Probe("tcp", netip.AddrPortFrom(ip, 8080), 2*time.Second); o != netnstest.Connected {
					return fmt.Errorf("external host → %s (%s on %s): %s", ip, name, n.name, o)
				}
				return nil
			})
		}
	})

	t.Run(rc.Kind+": pods leave the cluster with their node's address, or their own for spec.egress.exceptCIDRs", func(t *testing.T) {
		// The external host routes the pod blocks back (the router learns them), so a pod's
		// own address would answer too: what it sees says whether the node translated.
		running, err := lab.Open(l.State)
		if err != nil {
			t.Fatal(err)
		}
		host, err := running.Host(in.Cluster + "-ext")
		if err != nil {
			t.Fatal(err)
		}
		ext, extIP := &netnstest.Netns{Name: host.Netns}, host.IP
		seen := func(n nodeInfo) (netip.Addr, error) {
			pod, err := cs.CoreV1().Pods(in.Namespace).Get(ctx, "web-"+n.name[len(n.name)-1:], metav1.GetOptions{})
			if err != nil {
				return netip.Addr{}, err
			}
			return sourceSeenBy(ext, l.podNetns(t, pod.Status.PodIP), netip.AddrPortFrom(extIP, 8090))
		}
		expect := func(what string, want func(n nodeInfo, pod netip.Addr) bool) {
			t.Helper()
			for _, n := range nodes {
				Eventually(t, 30*time.Second, func() error {
					got, err := seen(n)
					if err != nil {
						return err
					}
					if !want(n, got) {
						return fmt.Errorf("a pod on %s (address %s) reaches the external host as %s, want %s", n.name, n.ip, got, what)
					}
					return nil
				})
			}
		}
		expect("the node's address", func(n nodeInfo, got netip.Addr) bool { return got == n.ip })
		patch := func(except string) {
			t.Helper()
			if err := c.Patch(ctx, &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: fabricv1.ClusterNetworkName}},
				client.RawPatch(types.MergePatchType, []byte(`{"spec":{"egress":{"exceptCIDRs":`+except+`}}}`))); err != nil {
				t.Fatal(err)
			}
		}
		patch(`["` + netip.PrefixFrom(extIP, 24).Masked().String() + `"]`)
		defer patch(`null`)
		expect("the pod's own address", func(n nodeInfo, got netip.Addr) bool { return n.block.Contains(got) })
		patch(`null`)
		expect("the node's address again", func(n nodeInfo, got netip.Addr) bool { return got == n.ip })
	})

	if in.ExportFrom != "" {
		t.Run(rc.Kind+": a ServiceImport's address is announced by every node", func(t *testing.T) {
			from := l.Client(t, in.ExportFrom)
			namespace(t, from, in.Namespace)
			if _, err := from.CoreV1().Services(in.Namespace).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: in.Namespace},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "shop"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
				metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			l.MustKubectl(t, in.ExportFrom, "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: shop, namespace: "+in.Namespace+"}\n",
				"apply", "-f", "-")
			var vip netip.Addr
			Eventually(t, time.Minute, func() error {
				out, _ := l.KubectlRun(in.Cluster, "", "-n", in.Namespace, "get", "serviceimport", "shop", "-o", "jsonpath={.spec.ips[0]}")
				a, err := netip.ParseAddr(strings.TrimSpace(out))
				if err != nil {
					return fmt.Errorf("ServiceImport shop in %s: no address yet (%q)", in.Cluster, out)
				}
				vip = a
				return nil
			})
			if err := rc.WaitRoute(ctx, netip.PrefixFrom(vip, 32), ips(nodes), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("ServiceImport address %s announced by %d nodes", vip, len(nodes))
		})
	}

	victim := nodes[len(nodes)-1]
	t.Run(rc.Kind+": a frozen node's routes leave the router within a second (BFD)", func(t *testing.T) {
		pid := l.nodeProcess(t, victim.name, "weft-agent")
		if pid == 0 {
			t.Fatalf("no weft-agent on %s", victim.name)
		}
		start := time.Now()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		err := rc.WaitRoute(ctx, victim.block, nil, 5*time.Second)
		gone := time.Since(start)
		_ = syscall.Kill(pid, syscall.SIGCONT)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s dropped %s %v after %s's agent froze (BFD 100 ms × 3)", rc.Kind, victim.block, gone.Round(time.Millisecond), victim.name)
		if gone >= time.Second {
			t.Errorf("the route went after %v, want < 1 s", gone)
		}
		if err := rc.WaitRoute(ctx, victim.block, []netip.Addr{victim.ip}, time.Minute); err != nil {
			t.Fatalf("after the agent thawed: %v", err)
		}
	})

	t.Run(rc.Kind+": an agent restart is not seen by the router (graceful restart)", func(t *testing.T) {
		// BFD would tell the router the speaker is gone: this is graceful restart alone.
		setBGP(t, withBFD(false))
		t.Cleanup(func() {
			// BFD back on resets the sessions; the next spec's node leaving must not find
			// its session down with the router holding its routes as a graceful restart's
			// (they would stay for the restart time: the leave spec failed so in CI).
			setBGP(t, withBFD(true))
			for _, n := range nodes {
				peerUp(t, n.name, "Up", time.Time{})
			}
			if err := rc.WaitEstablished(ctx, ips(nodes), 30*time.Second); err != nil {
				t.Error(err)
			}
			time.Sleep(2 * time.Second) // End-of-RIB: stale routes swept
		})
		changed := time.Now()
		for _, n := range nodes {
			peerUp(t, n.name, "", changed)
		}
		if err := rc.WaitRoute(ctx, victim.block, []netip.Addr{victim.ip}, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		stop := rc.WatchRoute(ctx, victim.block, []netip.Addr{victim.ip}, 20*time.Millisecond)
		pid := l.nodeProcess(t, victim.name, "weft-agent")
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		Eventually(t, time.Minute, func() error {
			if p := l.nodeProcess(t, victim.name, "weft-agent"); p == 0 || p == pid {
				return fmt.Errorf("weft-agent not restarted on %s yet", victim.name)
			}
			return nil
		})
		peerUp(t, victim.name, "", killed)
		time.Sleep(2 * time.Second) // the router has the new session's End-of-RIB: stale routes swept
		lost, polls := stop()
		if lost != "" {
			t.Fatalf("the router lost %s during the agent's restart at %s", victim.block, lost)
		}
		t.Logf("%s kept %s through the agent's restart (%d polls of its table, every 20 ms)", rc.Kind, victim.block, polls)
	})

	t.Run(rc.Kind+": a node that leaves BGP withdraws its block; one that joins announces it", func(t *testing.T) {
		for _, n := range nodes {
			if err := rc.WaitRoute(ctx, n.block, []netip.Addr{n.ip}, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes[:len(nodes)-1] {
			l.MustKubectl(t, in.Cluster, "", "label", "node", n.name, "e2e.weft.dev/bgp=on", "--overwrite")
		}
		t.Cleanup(func() {
			// Every node back in BGP even when the spec failed half-way: the next specs
			// need their sessions (a selector left on would select no node at all).
			setBGP(t, func(b *fabricv1.BGPSpec) { b.NodeSelector = nil })
			for _, n := range nodes {
				l.KubectlRun(in.Cluster, "", "label", "node", n.name, "e2e.weft.dev/bgp-")
			}
		})
		setBGP(t, func(b *fabricv1.BGPSpec) { b.NodeSelector = map[string]string{"e2e.weft.dev/bgp": "on"} })
		start := time.Now()
		if err := rc.WaitRoute(ctx, victim.block, nil, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s withdrawn %v after the node left", victim.block, time.Since(start).Round(time.Millisecond))
		Eventually(t, 30*time.Second, func() error {
			if _, err := bgpNode(victim.name); !apierrors.IsNotFound(err) {
				return fmt.Errorf("BGPNode %s still there (%w)", victim.name, err)
			}
			return nil
		})
		for _, n := range nodes[:len(nodes)-1] {
			if err := rc.WaitRoute(ctx, n.block, []netip.Addr{n.ip}, time.Second); err != nil {
				t.Errorf("a node that stays: %v", err)
			}
		}
		setBGP(t, func(b *fabricv1.BGPSpec) { b.NodeSelector = nil })
		if err := rc.WaitRoute(ctx, victim.block, []netip.Addr{victim.ip}, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run(rc.Kind+": an unreachable peer is reported per node and the router's sessions stay up", func(t *testing.T) {
		gone := "172.30.0.253"
		setBGP(t, func(b *fabricv1.BGPSpec) {
			b.Peers = append(b.Peers, fabricv1.BGPPeer{Name: "gone", Address: gone, ASN: 65099, Port: 179, HoldTimeSeconds: 9, KeepaliveSeconds: 3})
		})
		t.Cleanup(func() {
			setBGP(t, func(b *fabricv1.BGPSpec) {
				var keep []fabricv1.BGPPeer
				for _, p := range b.Peers {
					if p.Name != "gone" {
						keep = append(keep, p)
					}
				}
				b.Peers = keep
			})
		})
		for _, n := range nodes {
			Eventually(t, 30*time.Second, func() error {
				b, err := bgpNode(n.name)
				if err != nil {
					return err
				}
				ready := meta.FindStatusCondition(b.Status.Conditions, fabricv1.ConditionReady)
				if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != fabricv1.ReasonPeersNotEstablished {
					return fmt.Errorf("BGPNode %s Ready: %+v, want False/PeersNotEstablished", n.name, ready)
				}
				for _, p := range b.Status.Peers {
					if p.Name == "gone" && (p.State == fabricv1.BGPStateEstablished || p.LastError == "") {
						return fmt.Errorf("peer gone: %+v, want not Established with a last error", p)
					}
					if p.Name == "tor" && p.State != fabricv1.BGPStateEstablished {
						return fmt.Errorf("peer tor: %+v, want Established", p)
					}
				}
				return nil
			})
		}
		for _, n := range nodes {
			if err := rc.WaitRoute(ctx, n.block, []netip.Addr{n.ip}, time.Second); err != nil {
				t.Error(err)
			}
		}
	})
}

// sourceSeenBy opens a TCP connection from client to server (a listener made for it in the
// server's namespace) and returns the source address the server sees.
func sourceSeenBy(server, client *netnstest.Netns, addr netip.AddrPort) (netip.Addr, error) {
	ln, err := server.Listen(addr.String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer ln.Close()
	from := make(chan netip.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
			from <- ap.Addr().Unmap()
		}
	}()
	c, err := client.Dial(addr.String(), 3*time.Second)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	select {
	case a := <-from:
		return a, nil
	case <-time.After(3 * time.Second):
		return netip.Addr{}, fmt.Errorf("%s accepted nothing", addr)
	}
}
