// Package conformance runs the same datapath tests over every driver: each simulated node is
// a network namespace on one underlay switch, running the driver under test.
package conformance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/agent/datapath"
	ebpfdp "github.com/weft-net/weft/agent/datapath/ebpf"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/ovsrun"
)

// driver is a datapath driver as the suite runs it.
type driver struct {
	name  string
	encap string
	// open prepares a node for the driver and returns a factory of drivers for it (called
	// again to restart the driver), given the options every driver takes.
	open func(t testing.TB, ns *netnstest.Netns, dir string) func(datapath.Options) datapath.Datapath
}

var drivers = []driver{
	{name: "ovs", encap: "geneve", open: func(t testing.TB, ns *netnstest.Netns, dir string) func(datapath.Options) datapath.Datapath {
		opts := ovsrun.Options{RunDir: filepath.Join(dir, "run"), DBDir: filepath.Join(dir, "db"), LogDir: filepath.Join(dir, "log"),
			Netns: ns.Path(), UserspaceTSO: true, PacketSocketBuffer: ovsrun.DefaultPacketSocketBuffer}
		inst, err := ovsrun.Start(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(inst.Stop)
		return func(o datapath.Options) datapath.Datapath {
			o.OVSDB, o.OVSRunDir, o.StateDir = opts.DBSocket(), opts.RunDir, filepath.Join(dir, "state")
			return ovs.New(o)
		}
	}},
	{name: "ebpf", encap: "vxlan", open: openEBPF("")},
	// The fallback for kernels without TCX (before 6.6), forced: clsact filters.
	{name: "ebpf-tc", encap: "vxlan", open: openEBPF("tc")},
	// No encapsulation: other nodes' blocks routed natively on the underlay (with BGP, or
	// nodes on one segment).
	{name: "ebpf-native", encap: "none", open: openEBPF("")},
}

func openEBPF(attach string) func(t testing.TB, ns *netnstest.Netns, dir string) func(datapath.Options) datapath.Datapath {
	return func(t testing.TB, ns *netnstest.Netns, dir string) func(datapath.Options) datapath.Datapath {
		bpffs := filepath.Join(dir, "bpffs")
		t.Cleanup(func() { _ = unix.Unmount(bpffs, unix.MNT_DETACH) })
		return func(o datapath.Options) datapath.Datapath {
			o.StateDir, o.BPFFS, o.EBPFAttach = filepath.Join(dir, "state"), bpffs, attach
			return ebpfdp.New(o)
		}
	}
}

type node struct {
	bpffs string // the ebpf driver's bpffs (ebpf only)
	dir   string // the node's files: state, bpffs, OVS's
	name  string
	ns    *netnstest.Netns
	ip    netip.Addr
	spec  datapath.Node
	dp    datapath.Datapath
	make  func(datapath.Options) datapath.Datapath
	// opts are the options of the next restart (event callbacks).
	opts datapath.Options
	sw   *netnstest.Switch // the underlay it is plugged into
}

func newNode(t testing.TB, d driver, sw *netnstest.Switch, name, ip, block string) *node {
	t.Helper()
	n := bareNode(t, d, sw, name, ip, block)
	n.restart(t)
	return n
}

// bareNode is a node whose driver has not been initialized yet.
func bareNode(t testing.TB, d driver, sw *netnstest.Switch, name, ip, block string) *node {
	t.Helper()
	n := &node{name: name, ns: netnstest.New(t, name), ip: netip.MustParseAddr(ip), dir: t.TempDir(), sw: sw}
	sw.Plug(t, n.ns, "p"+name, ip+"/24")
	n.make = d.open(t, n.ns, n.dir)
	n.bpffs = filepath.Join(n.dir, "bpffs")
	n.spec = datapath.Node{Name: name, IP: n.ip, PodCIDRs: []netip.Prefix{netip.MustParsePrefix(block)}, Encapsulation: d.encap}
	return n
}

// restart replaces the driver with a new one and initializes it, as a restarted agent does.
func (n *node) restart(t testing.TB) {
	t.Helper()
	if n.dp != nil {
		_ = n.dp.Close()
	}
	dp := n.make(n.opts)
	t.Cleanup(func() { _ = dp.Close() })
	n.dp = dp
	n.do(t, func() error { return dp.Init(context.Background(), n.spec) })
}

// twoNodes makes nodes n1 (10.99.1.0/24) and n2 (10.99.2.0/24) on one underlay, each
// knowing the other.
func twoNodes(t testing.TB, d driver) (n1, n2 *node) {
	t.Helper()
	sw := netnstest.NewSwitch(t)
	n1 = newNode(t, d, sw, "n1", "172.29.0.11", "10.99.1.0/24")
	n2 = newNode(t, d, sw, "n2", "172.29.0.12", "10.99.2.0/24")
	for _, n := range []*node{n1, n2} {
		n.do(t, func() error {
			return n.dp.SetRemoteNodes(context.Background(), []datapath.RemoteNode{n1.remote(), n2.remote()})
		})
	}
	return n1, n2
}

// probeStream sends a UDP echo probe from a pod to each target every 20 ms until the
// returned stop is called, which says how many were sent and how many got no answer.
func probeStream(from *netnstest.Netns, targets ...string) (stop func() (sent, lost int64)) {
	var nSent, nLost atomic.Int64
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, to := range targets {
				nSent.Add(1)
				if from.Probe("udp", netip.MustParseAddrPort(to), 400*time.Millisecond) != netnstest.Connected {
					nLost.Add(1)
				}
			}
		}
	}()
	return func() (int64, int64) {
		close(quit)
		<-done
		return nSent.Load(), nLost.Load()
	}
}

func (n *node) do(t testing.TB, fn func() error) {
	t.Helper()
	if err := n.ns.Do(fn); err != nil {
		n.diagnose(t)
		t.Fatalf("%s: %v", n.name, err)
	}
}

func (n *node) remote() datapath.RemoteNode {
	return datapath.RemoteNode{Name: n.name, IP: n.ip, PodCIDRs: n.spec.PodCIDRs}
}

func (n *node) addPod(t testing.TB, name, ip string) (*netnstest.Netns, datapath.Pod) {
	t.Helper()
	pns := netnstest.New(t, name)
	pod := datapath.Pod{Key: datapath.PodKey{ContainerID: "cid-" + name, IfName: "eth0"}, Namespace: "default", Name: name,
		UID: "uid-" + name, Netns: pns.Path(), IPs: []netip.Prefix{netip.MustParsePrefix(ip)}}
	n.do(t, func() error {
		res, err := n.dp.AddPod(context.Background(), pod)
		// 1500 less the larger of the encapsulation (50, or none) and the largest tunnel
		// between clusters (80): pods' packets cross to peer clusters whole.
		mtu := 1420
		if err == nil && (res.MTU != mtu || res.Gateways[0] != datapath.Gateway(n.spec.PodCIDRs[0])) {
			t.Errorf("AddPod result %+v: want MTU %d (room on a 1500 uplink for the largest tunnel between clusters) and the block's gateway", res, mtu)
		}
		return err
	})
	return pns, pod
}

func (n *node) diagnose(t testing.TB) {
	for _, args := range [][]string{{"ip", "-br", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"bridge", "fdb", "show", "dev", "weft-vxlan0"}} {
		out, _ := exec.Command("nsenter", append([]string{"--net=" + n.ns.Path()}, args...)...).CombinedOutput()
		t.Logf("%s: %s\n%s", n.name, strings.Join(args, " "), out)
	}
}

// TestForwarding: pods on one node and across nodes reach each other (ICMP, TCP, UDP), the
// node reaches its pods and other nodes' pods, a Service translated by the node's kernel
// reaches pods on both nodes, a removed pod is gone.
func TestForwarding(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			n1, n2 := twoNodes(t, d)
			p1, _ := n1.addPod(t, "p1", "10.99.1.5/24")
			p2, pod2 := n2.addPod(t, "p2", "10.99.2.5/24")
			p3, _ := n1.addPod(t, "p3", "10.99.1.6/24")
			nat := `table ip svc {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.50 tcp dport 80 dnat to 10.99.2.5:7010
    ip daddr 10.96.0.51 tcp dport 80 dnat to 10.99.1.6:7011
  }
}
`
			if out, err := n1.ns.RunStdin(nat, "nft", "-f", "-"); err != nil {
				t.Fatalf("nft: %v: %s", err, out)
			}
			p2.ServeEcho(t, netip.MustParseAddr("10.99.2.5"), nil, []int{53})
			checks := []struct {
				name string
				fn   func() error
			}{
				{"ping pod on n1 → pod on n2", func() error { return p1.PingUntil("10.99.2.5", 5*time.Second) }},
				{"ping pod on n2 → pod on n1", func() error { return p2.Ping("10.99.1.5", 3) }},
				{"ping between pods on one node", func() error { return p1.PingUntil("10.99.1.6", 5*time.Second) }},
				{"ping node n1 → its pod", func() error { return n1.ns.Ping("10.99.1.5", 2) }},
				{"ping node n1 → pod on n2", func() error { return n1.ns.Ping("10.99.2.5", 2) }},
				{"ping pod → its own node", func() error { return p1.Ping("10.99.1.1", 2) }},
				{"UDP n1 → n2", func() error {
					if got := p1.Probe("udp", netip.MustParseAddrPort("10.99.2.5:53"), time.Second); got != netnstest.Connected {
						return fmt.Errorf("UDP echo: %s", got)
					}
					return nil
				}},
				{"TCP 8 MiB n1 → n2", func() error { return netnstest.TransferTCP(p2, p1, "10.99.2.5:7001", 8<<20) }},
				{"TCP 8 MiB n2 → n1", func() error { return netnstest.TransferTCP(p1, p2, "10.99.1.5:7002", 8<<20) }},
				{"TCP same node", func() error { return netnstest.TransferTCP(p3, p1, "10.99.1.6:7003", 1<<20) }},
				{"TCP through a Service to a pod on another node", func() error { return netnstest.TransferTCPVia(p2, p1, "10.99.2.5:7010", "10.96.0.50:80", 1<<20) }},
				{"TCP through a Service to a pod on the same node", func() error { return netnstest.TransferTCPVia(p3, p1, "10.99.1.6:7011", "10.96.0.51:80", 1<<20) }},
			}
			for _, c := range checks {
				if err := c.fn(); err != nil {
					n1.diagnose(t)
					n2.diagnose(t)
					t.Fatalf("%s: %v", c.name, err)
				}
			}
			if d.name == "ebpf-tc" {
				// The programs are clsact filters, not TCX links.
				out, _ := exec.Command("nsenter", "--net="+n1.ns.Path(), "tc", "filter", "show", "dev", ebpfdp.TunnelDevice, "ingress").CombinedOutput()
				if !strings.Contains(string(out), "weft") || n1.dp.Capabilities().Mode != "ebpf/tc" {
					t.Errorf("ebpf-tc: no clsact filter on %s (mode %s): %s", ebpfdp.TunnelDevice, n1.dp.Capabilities().Mode, out)
				}
			}
			if e, ok := n1.dp.(*ebpfdp.Driver); ok {
				// Pod to pod on one node goes straight from veth to veth, both ways.
				redirected, toKernel := transferCounts(t, e, p3, p1, "10.99.1.6:7004", 4<<20)
				t.Logf("a 4 MiB transfer between pods of n1: %d packets redirected veth to veth, %d through the kernel", redirected, toKernel)
				if redirected < 10 || toKernel > redirected/4 {
					t.Errorf("the same-node transfer should go veth to veth: %d redirected, %d through the kernel", redirected, toKernel)
				}
			}
			t.Run("Pods and CheckPod report the wiring", func(t *testing.T) {
				var pods []datapath.Pod
				n1.do(t, func() (err error) { pods, err = n1.dp.Pods(ctx); return err })
				if len(pods) != 2 {
					t.Errorf("Pods() = %d pods, want 2", len(pods))
				}
				n2.do(t, func() error { return n2.dp.CheckPod(ctx, pod2) })
			})
			t.Run("a deleted pod is gone", func(t *testing.T) {
				n2.do(t, func() error { return n2.dp.DelPod(ctx, pod2.Key) })
				n2.do(t, func() error { return n2.dp.DelPod(ctx, pod2.Key) }) // idempotent
				if err := p1.Ping("10.99.2.5", 1); err == nil {
					t.Error("a deleted pod still answers")
				}
			})
		})
	}
}

// TestRestartKeepsForwarding: a new driver (a restarted agent) takes over a running datapath
// while a probe stream runs between pods on two nodes: no probe is lost.
func TestRestartKeepsForwarding(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			n1, n2 := twoNodes(t, d)
			p1, _ := n1.addPod(t, "p1", "10.99.1.5/24")
			p2, _ := n2.addPod(t, "p2", "10.99.2.5/24")
			p2.ServeEcho(t, netip.MustParseAddr("10.99.2.5"), nil, []int{53})
			if err := p1.PingUntil("10.99.2.5", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			stop := probeStream(p1, "10.99.2.5:53")
			time.Sleep(300 * time.Millisecond)
			for range 3 {
				n1.restart(t)
				n2.restart(t)
			}
			time.Sleep(300 * time.Millisecond)
			sent, lost := stop()
			t.Logf("%d probes during three restarts of both drivers, %d lost", sent, lost)
			if lost > 0 {
				t.Errorf("%d of %d probes lost while the drivers restarted", lost, sent)
			}
		})
	}
}

// TestRestartAfterAMapLayoutChange: an upgraded agent whose programs want a map of another
// layout than the one pinned (here the endpoints and counters maps of an older build) takes
// over without a lost probe: the old maps go, the endpoints are refilled from its state.
func TestRestartAfterAMapLayoutChange(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		if !strings.HasPrefix(d.name, "ebpf") {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			n1, n2 := twoNodes(t, d)
			p1, _ := n1.addPod(t, "p1", "10.99.1.5/24")
			p2, _ := n2.addPod(t, "p2", "10.99.2.5/24")
			p3, _ := n1.addPod(t, "p3", "10.99.1.6/24")
			p2.ServeEcho(t, netip.MustParseAddr("10.99.2.5"), nil, []int{53})
			p3.ServeEcho(t, netip.MustParseAddr("10.99.1.6"), nil, []int{53})
			for _, ip := range []string{"10.99.2.5", "10.99.1.6"} {
				if err := p1.PingUntil(ip, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			// An older build's maps: fewer counters, a smaller endpoint table.
			for _, n := range []*node{n1, n2} {
				for _, m := range []struct {
					name string
					spec ebpf.MapSpec
				}{
					{"stats", ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 3}},
					{"endpoints", ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 1024}},
				} {
					path := filepath.Join(n.bpffs, "weft", n.name, m.name)
					old, err := ebpf.NewMap(&m.spec)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
					if err := old.Pin(path); err != nil {
						t.Fatal(err)
					}
					old.Close()
				}
			}
			stop := probeStream(p1, "10.99.2.5:53", "10.99.1.6:53")
			time.Sleep(200 * time.Millisecond)
			n1.restart(t)
			n2.restart(t)
			time.Sleep(300 * time.Millisecond)
			sent, lost := stop()
			t.Logf("%d probes across the upgrade, %d lost", sent, lost)
			if lost > 0 {
				t.Errorf("%d of %d probes lost while the maps were replaced", lost, sent)
			}
			// The same-node path is the programs' again: the endpoints were refilled.
			e := n1.dp.(*ebpfdp.Driver)
			if redirected, _ := transferCounts(t, e, p3, p1, "10.99.1.6:7005", 1<<20); redirected < 10 {
				t.Errorf("after the upgrade a same-node transfer was not redirected veth to veth (%d packets)", redirected)
			}
		})
	}
}

// transferCounts moves size bytes over TCP from client to server (listening at addr) and
// says how many of the ebpf driver's packets went straight veth to veth and how many to
// the kernel meanwhile.
func transferCounts(t *testing.T, e *ebpfdp.Driver, server, client *netnstest.Netns, addr string, size int) (redirected, toKernel uint64) {
	t.Helper()
	before, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if err := netnstest.TransferTCP(server, client, addr, size); err != nil {
		t.Fatal(err)
	}
	after, err := e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return after.Redirected - before.Redirected, after.ToKernel - before.ToKernel
}

// TestPeerRoutesLeaveAGatewaysTunnelRoutesAlone: on a gateway node the gateway routes peer
// clusters' ranges into its tunnels; whatever the datapath is told (this node is not a
// gateway yet — a restarted agent before its first health probe — then that it is), those
// routes must stay. (Both drivers once replaced them, cutting the gateway off.)
func TestPeerRoutesLeaveAGatewaysTunnelRoutesAlone(t *testing.T) {
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			n1, n2 := twoNodes(t, d)
			peer := netip.MustParsePrefix("10.200.0.0/16")
			// The gateway's tunnel: a device with the range routed into it, as weft-gateway
			// installs it (tunnel.RouteProtocol).
			n1.ns.MustIP(t, "link", "add", "wgsim0", "type", "veth", "peer", "name", "wgsim1")
			n1.ns.MustIP(t, "link", "set", "wgsim0", "up")
			n1.ns.MustIP(t, "link", "set", "wgsim1", "up")
			n1.ns.MustIP(t, "route", "add", peer.String(), "dev", "wgsim0", "proto", "87")
			check := func(when string) {
				t.Helper()
				out, err := n1.ns.Run("ip", "route", "show", peer.String(), "dev", "wgsim0")
				if err != nil || !strings.Contains(out, peer.String()) {
					all, _ := n1.ns.Run("ip", "route")
					t.Fatalf("%s: the gateway's route into its tunnel is gone (%v); routes:\n%s", when, err, all)
				}
			}
			for _, r := range []struct {
				when   string
				routes datapath.PeerRoutes
			}{
				{"not a gateway, no gateway known", datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}}},
				{"not a gateway, the other node is", datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}, Gateways: []netip.Addr{n2.ip}}},
				{"a gateway", datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}, Gateways: []netip.Addr{n1.ip, n2.ip}, LocalGateway: true}},
				{"no peers", datapath.PeerRoutes{}},
			} {
				n1.do(t, func() error { return n1.dp.SetPeerRoutes(context.Background(), r.routes) })
				check(r.when)
			}
			n1.restart(t)
			check("after a restart")
		})
	}
}

// A gateway node picks its next hop into the tunnels to peer clusters from the connection
// alone, not from a hash the packet arrives with (a NIC's receive hash; here the sending
// socket's, which crosses a veth): one 5-tuple sent from 32 sockets — 32 random socket
// hashes — leaves by one tunnel device. Otherwise a connection's packets and its replies
// take different gateways, or one connection is spread over several. For the ebpf drivers:
// from_uplink (no encapsulation) and from_tunnel (VXLAN) drop the hash.
func TestAGatewaysNextHopIgnoresTheHashAPacketBrings(t *testing.T) {
	for _, d := range drivers {
		if !strings.HasPrefix(d.name, "ebpf") {
			continue // OVS chooses a gateway by its own hash of the flow
		}
		t.Run(d.name, func(t *testing.T) {
			gw, n2 := twoNodes(t, d)
			peer := netip.MustParsePrefix("10.200.0.0/16")
			dst := netip.MustParseAddrPort("10.200.0.5:5000")
			// Two tunnels with the range routed over both, as weft-gateway has them.
			devs := []string{"wgsima0", "wgsimb0"}
			for i, dev := range devs {
				peerDev := fmt.Sprintf("wgsimp%d", i)
				gw.ns.MustIP(t, "link", "add", dev, "type", "veth", "peer", "name", peerDev)
				for _, l := range []string{dev, peerDev} {
					if out, err := gw.ns.Run("sysctl", "-qw", "net.ipv6.conf."+l+".disable_ipv6=1"); err != nil {
						t.Fatalf("%v: %s", err, out)
					}
					gw.ns.MustIP(t, "link", "set", l, "up")
				}
				gw.ns.MustIP(t, "neigh", "add", dst.Addr().String(), "lladdr", "02:00:00:00:00:05", "dev", dev, "nud", "permanent")
			}
			gw.ns.MustIP(t, "route", "add", peer.String(), "proto", "87", "nexthop", "dev", devs[0], "nexthop", "dev", devs[1])
			if out, err := gw.ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			gw.do(t, func() error {
				return gw.dp.SetPeerRoutes(context.Background(), datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}, Gateways: []netip.Addr{gw.ip}, LocalGateway: true})
			})
			n2.do(t, func() error {
				return n2.dp.SetPeerRoutes(context.Background(), datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}, Gateways: []netip.Addr{gw.ip}})
			})
			sent := func() []int {
				var out []int
				for _, dev := range devs {
					s, err := gw.ns.Run("ip", "-j", "-s", "link", "show", "dev", dev)
					var links []struct {
						Stats struct {
							TX struct {
								Packets int `json:"packets"`
							} `json:"tx"`
						} `json:"stats64"`
					}
					if err == nil {
						err = json.Unmarshal([]byte(s), &links)
					}
					if err != nil || len(links) != 1 {
						t.Fatalf("%s's counters: %v: %s", dev, err, s)
					}
					out = append(out, links[0].Stats.TX.Packets)
				}
				return out
			}
			before := sent()
			const sockets = 32
			// Connected sockets: connecting gives a socket its random hash.
			dialer := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(n2.ip, 40000)),
				Control: func(_, _ string, c syscall.RawConn) error {
					var serr error
					err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
					return errors.Join(err, serr)
				}}
			n2.do(t, func() error {
				for range sockets {
					c, err := dialer.Dial("udp4", dst.String())
					if err != nil {
						return err
					}
					_, err = c.Write([]byte("one connection"))
					c.Close()
					if err != nil {
						return err
					}
				}
				return nil
			})
			var got []int
			deadline := time.Now().Add(5 * time.Second)
			for {
				after := sent()
				got = []int{after[0] - before[0], after[1] - before[1]}
				if got[0]+got[1] >= sockets || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("one 5-tuple from %d sockets: %d packets by %s, %d by %s", sockets, got[0], devs[0], got[1], devs[1])
			if got[0]+got[1] != sockets || (got[0] != 0 && got[1] != 0) {
				t.Errorf("one 5-tuple from %d sockets left by %s %d times and by %s %d times; want all by one", sockets, devs[0], got[0], devs[1], got[1])
			}
		})
	}
}

// A peer cluster's packet may enter through one gateway node and its pod's reply leave
// through another (the peer's gateways hash on their own); the next packet of the flow then
// crosses the overlay from the gateway it entered by to the pod's node, whose kernel routes
// the peer's range into its own tunnels. Reverse-path filtering, in the loose mode the
// gateway sets, must let it in: here a peer pod sends into n2's tunnel and gets its answers
// out of n1's, as both nodes are gateways.
func TestAPeersPacketReachesAPodThroughTheOtherGateway(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			n1, n2 := twoNodes(t, d)
			p1, _ := n1.addPod(t, "p1", "10.99.1.5/24")
			peerRange := netip.MustParsePrefix("10.200.0.0/16")
			peer := netnstest.New(t, "peer")
			peer.MustIP(t, "link", "set", "lo", "up")
			for i, n := range []*node{n1, n2} {
				// The gateway's tunnel, simulated by a veth whose far end is in the peer.
				dev, far := fmt.Sprintf("wgsim%d", i), fmt.Sprintf("wgpeer%d", i)
				n.ns.MustIP(t, "link", "add", dev, "type", "veth", "peer", "name", far)
				n.ns.MustIP(t, "link", "set", far, "netns", peer.Name)
				n.ns.MustIP(t, "link", "set", dev, "up")
				n.ns.MustIP(t, "addr", "add", n.ip.String()+"/32", "dev", dev) // as weft-gateway's devices have
				n.ns.MustIP(t, "route", "add", peerRange.String(), "dev", dev, "proto", "87")
				peer.MustIP(t, "link", "set", far, "up")
				if out, err := n.ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2"); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				n.do(t, func() error {
					return n.dp.SetPeerRoutes(context.Background(), datapath.PeerRoutes{Prefixes: []netip.Prefix{peerRange},
						Gateways: []netip.Addr{n1.ip, n2.ip}, LocalGateway: true})
				})
			}
			// The peer pod sends through n2's tunnel and receives on either.
			peer.MustIP(t, "addr", "add", "10.200.0.5/32", "dev", "lo")
			peer.MustIP(t, "route", "add", "10.99.0.0/16", "dev", "wgpeer1", "src", "10.200.0.5")
			// A tunnel has no ARP: n2 takes the peer's packets for the pod as its tunnel would.
			link, err := n2.ns.Run("ip", "-br", "link", "show", "dev", "wgsim1")
			if f := strings.Fields(link); err != nil || len(f) < 3 {
				t.Fatalf("wgsim1 of n2: %v: %s", err, link)
			}
			peer.MustIP(t, "neigh", "add", "10.99.1.5", "lladdr", strings.Fields(link)[2], "dev", "wgpeer1", "nud", "permanent")
			if out, err := peer.Run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			for _, dev := range []string{"wgpeer0", "wgpeer1"} {
				_, _ = peer.Run("sysctl", "-qw", "net.ipv4.conf."+dev+".rp_filter=0")
			}
			if err := peer.PingUntil("10.99.1.5", 5*time.Second); err != nil {
				out, _ := n1.ns.Run("nstat", "-az", "TcpExtIPReversePathFilter")
				n1.diagnose(t)
				t.Fatalf("the peer pod's ping through n2 to a pod of n1 (answered through n1): %v\nn1: %s", err, out)
			}
			// And the pod's own ping the other way round: out through n1's tunnel, the replies
			// in through n2's and across the overlay.
			if err := p1.PingUntil("10.200.0.5", 5*time.Second); err != nil {
				t.Errorf("the pod's ping to the peer pod (out through n1, answered through n2): %v", err)
			}
		})
	}
}
