package ovs_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/ovsrun"
)

// node is a simulated node: a namespace with its own Open vSwitch and the driver.
type node struct {
	name string
	ns   *netnstest.Netns
	ip   netip.Addr
	dp   *ovs.Driver
	run  string
	spec datapath.Node
	ovs  *ovsrun.Instance
	opts ovsrun.Options
	// dpOpts are the driver's options (restartDriver builds a new driver with them).
	dpOpts datapath.Options
}

// restartDriver replaces the driver with a new one, as a restarted agent does.
func (n *node) restartDriver(t testing.TB) {
	t.Helper()
	_ = n.dp.Close()
	n.dp = ovs.New(n.dpOpts)
	t.Cleanup(func() { _ = n.dp.Close() })
	n.do(t, func() error { return n.dp.Init(context.Background(), n.spec) })
}

func newNode(t testing.TB, sw *netnstest.Switch, name, ip, block, encap string, prepare ...func(*netnstest.Netns)) *node {
	t.Helper()
	n := &node{name: name, ns: netnstest.New(t, name), ip: netip.MustParseAddr(ip)}
	sw.Plug(t, n.ns, "p"+name, ip+"/24")
	for _, p := range prepare {
		p(n.ns)
	}
	dir := t.TempDir()
	n.run = filepath.Join(dir, "run")
	opts := ovsrun.Options{RunDir: n.run, DBDir: filepath.Join(dir, "db"), LogDir: filepath.Join(dir, "log"),
		Netns: n.ns.Path(), UserspaceTSO: true, PacketSocketBuffer: ovsrun.DefaultPacketSocketBuffer}
	inst, err := ovsrun.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Stop)
	n.ovs, n.opts = inst, opts
	n.dpOpts = datapath.Options{OVSDB: opts.DBSocket(), OVSRunDir: n.run, StateDir: filepath.Join(dir, "state")}
	n.dp = ovs.New(n.dpOpts)
	t.Cleanup(func() { _ = n.dp.Close() })
	n.spec = datapath.Node{Name: name, IP: n.ip, PodCIDRs: []netip.Prefix{netip.MustParsePrefix(block)}, Encapsulation: encap}
	n.do(t, func() error { return n.dp.Init(context.Background(), n.spec) })
	return n
}

// do runs fn inside the node's namespace, as the agent (host network) would.
func (n *node) do(t testing.TB, fn func() error) {
	t.Helper()
	if err := n.ns.Do(fn); err != nil {
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
		if err == nil && (res.MTU != 1420 || res.Gateways[0] != datapath.Gateway(n.spec.PodCIDRs[0])) {
			t.Errorf("AddPod result %+v: want MTU 1420 (1500 - 80, the largest tunnel between clusters) and the block's gateway", res)
		}
		return err
	})
	return pns, pod
}

// snapshot is what re-applying state must not change: ports and flows (with counters).
type snapshot struct {
	ports []string
	flows map[string]int // flow without stats -> packets
}

var statsRe = regexp.MustCompile(`(cookie|duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?`)

func (n *node) snapshot(t testing.TB) snapshot {
	t.Helper()
	out, err := exec.Command("ovs-vsctl", "--db=unix:"+n.run+"/db.sock", "list-ports", ovs.IntegrationBridge).Output()
	if err != nil {
		t.Fatal(err)
	}
	flowsOut, err := exec.Command("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "unix:"+n.run+"/"+ovs.IntegrationBridge+".mgmt").Output()
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{ports: strings.Fields(string(out)), flows: map[string]int{}}
	for _, l := range strings.Split(string(flowsOut), "\n") {
		if !strings.Contains(l, "actions=") {
			continue
		}
		m := regexp.MustCompile(`n_packets=(\d+)`).FindStringSubmatch(l)
		pk := 0
		if m != nil {
			pk, _ = strconv.Atoi(m[1])
		}
		s.flows[strings.TrimSpace(statsRe.ReplaceAllString(l, ""))] = pk
	}
	return s
}

func TestTwoNodesOverlay(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, encap := range []string{"geneve", "vxlan"} {
		t.Run(encap, func(t *testing.T) { twoNodes(t, encap) })
	}
}

func twoNodes(t *testing.T, encap string) {
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n1 := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", encap)
	n2 := newNode(t, sw, "n2", "172.29.0.12", "10.99.2.0/24", encap)
	n1.do(t, func() error { return n1.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n1.remote(), n2.remote()}) })
	n2.do(t, func() error { return n2.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n1.remote(), n2.remote()}) })
	p1, pod1 := n1.addPod(t, "p1", "10.99.1.5/24")
	p2, pod2 := n2.addPod(t, "p2", "10.99.2.5/24")
	p3, _ := n1.addPod(t, "p3", "10.99.1.6/24")

	// kube-proxy's part, reduced to two rules: Service addresses DNATed in n1's kernel to a
	// pod on n2 and to a pod on n1.
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
	checks := []struct {
		name string
		fn   func() error
	}{
		{"TCP through a Service to a pod on another node", func() error { return netnstest.TransferTCPVia(p2, p1, "10.99.2.5:7010", "10.96.0.50:80", 1<<20) }},
		{"TCP through a Service to a pod on the same node", func() error { return netnstest.TransferTCPVia(p3, p1, "10.99.1.6:7011", "10.96.0.51:80", 1<<20) }},
		{"ping pod on n1 → pod on n2", func() error { return p1.Ping("10.99.2.5", 3) }},
		{"ping pod on n2 → pod on n1", func() error { return p2.Ping("10.99.1.5", 3) }},
		{"ping between pods on one node", func() error { return p1.Ping("10.99.1.6", 2) }},
		{"ping node n1 → pod on n2", func() error { return n1.ns.Ping("10.99.2.5", 2) }},
		{"ping pod → its own node", func() error { return p1.Ping("10.99.1.1", 2) }},
		{"TCP 8 MiB n1 → n2", func() error { return netnstest.TransferTCP(p2, p1, "10.99.2.5:7001", 8<<20) }},
		{"TCP 8 MiB n2 → n1", func() error { return netnstest.TransferTCP(p1, p2, "10.99.1.5:7002", 8<<20) }},
		{"TCP same node", func() error { return netnstest.TransferTCP(p3, p1, "10.99.1.6:7003", 1<<20) }},
	}
	for _, c := range checks {
		if err := c.fn(); err != nil {
			for _, n := range []*node{n1, n2} {
				n.diagnose(t)
			}
			t.Fatalf("%s: %v", c.name, err)
		}
	}

	t.Run("re-applying the same state changes nothing", func(t *testing.T) {
		before := n1.snapshot(t)
		n1.do(t, func() error { return n1.dp.Init(ctx, n1.spec) })
		n1.do(t, func() error { return n1.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n2.remote()}) })
		n1.do(t, func() error { _, err := n1.dp.AddPod(ctx, pod1); return err })
		after := n1.snapshot(t)
		if strings.Join(before.ports, " ") != strings.Join(after.ports, " ") {
			t.Errorf("ports changed: %v -> %v", before.ports, after.ports)
		}
		if len(before.flows) != len(after.flows) {
			t.Errorf("flow count changed: %d -> %d", len(before.flows), len(after.flows))
		}
		for f, pk := range before.flows {
			got, ok := after.flows[f]
			switch {
			case !ok:
				t.Errorf("flow replaced: %s", f)
			case got < pk:
				t.Errorf("flow counters reset (%d -> %d): %s", pk, got, f)
			}
		}
		if err := p1.Ping("10.99.2.5", 1); err != nil {
			t.Error(err)
		}
	})

	t.Run("CheckPod and Pods report the wiring", func(t *testing.T) {
		n1.do(t, func() error { return n1.dp.CheckPod(ctx, pod1) })
		var pods []datapath.Pod
		n1.do(t, func() (err error) { pods, err = n1.dp.Pods(ctx); return err })
		if len(pods) != 2 {
			t.Errorf("Pods() = %d pods, want 2: %+v", len(pods), pods)
		}
		wrong := pod1
		wrong.IPs = []netip.Prefix{netip.MustParsePrefix("10.99.1.99/24")}
		if err := n1.ns.Do(func() error { return n1.dp.CheckPod(ctx, wrong) }); err == nil {
			t.Error("CheckPod accepted a pod with another address")
		}
	})

	t.Run("deleting pods and nodes removes their forwarding", func(t *testing.T) {
		before := len(n2.snapshot(t).ports)
		n2.do(t, func() error { return n2.dp.DelPod(ctx, pod2.Key) })
		n2.do(t, func() error { return n2.dp.DelPod(ctx, pod2.Key) }) // idempotent
		if got := len(n2.snapshot(t).ports); got != before-1 {
			t.Errorf("ports after DelPod: %d, want %d", got, before-1)
		}
		if out, _ := n2.ns.Run("ip", "-br", "link", "show"); regexp.MustCompile(`\bw[0-9a-f]{11}@`).MatchString(out) {
			t.Errorf("pod veth left on n2:\n%s", out)
		}
		if err := p1.Ping("10.99.2.5", 1); err == nil {
			t.Error("a deleted pod still answers")
		}
		n1.do(t, func() error { return n1.dp.SetRemoteNodes(ctx, nil) })
		if out, _ := n1.ns.Run("ip", "route", "show", "10.99.2.0/24"); strings.TrimSpace(out) != "" {
			t.Errorf("route to a forgotten node left: %s", out)
		}
	})
}

// The node's routes through gateways move with its address to the external bridge, and
// come back when the bridge's port goes down and up (the kernel drops them then).
func TestUplinkRoutesSurvive(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve", func(ns *netnstest.Netns) {
		ns.MustIP(t, "route", "add", "default", "via", "172.29.0.1")
		ns.MustIP(t, "route", "add", "192.0.2.0/24", "via", "172.29.0.254")
	})
	routes := func() string { out, _ := n.ns.Run("ip", "route", "show", "dev", ovs.ExternalBridge); return out }
	want := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := routes()
			if strings.Contains(got, "default via 172.29.0.1") && strings.Contains(got, "192.0.2.0/24 via 172.29.0.254") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: routes on %s:\n%s\nwant the default route and 192.0.2.0/24 through their gateways", what, ovs.ExternalBridge, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	want("after Init")
	n.ns.MustIP(t, "link", "set", ovs.ExternalBridge, "down")
	if got := routes(); strings.Contains(got, "default") {
		t.Fatalf("the kernel kept the default route of a device that went down:\n%s", got)
	}
	n.ns.MustIP(t, "link", "set", ovs.ExternalBridge, "up")
	want("after the port went down and up")

	// A new agent (a restart) finds the routes on record and keeps them too.
	_ = n.dp.Close()
	again := ovs.New(datapath.Options{OVSDB: n.opts.DBSocket(), OVSRunDir: n.run})
	t.Cleanup(func() { _ = again.Close() })
	n.do(t, func() error { return again.Init(context.Background(), n.spec) })
	n.ns.MustIP(t, "link", "set", ovs.ExternalBridge, "down")
	n.ns.MustIP(t, "link", "set", ovs.ExternalBridge, "up")
	want("after a restart and another flap")
}

func TestAddPodIsAllOrNothing(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	before := n.snapshot(t)
	pod := datapath.Pod{Key: datapath.PodKey{ContainerID: "gone", IfName: "eth0"}, Netns: "/run/netns/does-not-exist",
		IPs: []netip.Prefix{netip.MustParsePrefix("10.99.1.9/24")}}
	if err := n.ns.Do(func() error { _, err := n.dp.AddPod(ctx, pod); return err }); err == nil {
		t.Fatal("AddPod into a missing namespace succeeded")
	}
	outside := pod
	outside.Netns = netnstest.New(t, "p").Path()
	outside.IPs = []netip.Prefix{netip.MustParsePrefix("10.1.1.9/24")}
	if err := n.ns.Do(func() error { _, err := n.dp.AddPod(ctx, outside); return err }); err == nil || !strings.Contains(err.Error(), "not in this node's block") {
		t.Fatalf("AddPod outside the block: %v", err)
	}
	after := n.snapshot(t)
	if strings.Join(before.ports, " ") != strings.Join(after.ports, " ") || len(before.flows) != len(after.flows) {
		t.Errorf("a failed AddPod left something: ports %v -> %v, flows %d -> %d", before.ports, after.ports, len(before.flows), len(after.flows))
	}
}

// TestPodWithVanishedNamespace is a node that crashed: a pod's namespace (and so its veth)
// is gone but its port is still in OVSDB. Restarted Open vSwitch cannot attach it; a
// restarted agent must initialize, keep the other
// pods forwarding, list the orphan for garbage collection, and delete it.
func TestPodWithVanishedNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	keep, _ := n.addPod(t, "keep", "10.99.1.5/24")
	gone, orphan := n.addPod(t, "gone", "10.99.1.6/24")
	if out, err := exec.Command("ip", "netns", "del", gone.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	// The kernel destroys a namespace, and the veth pair with it, asynchronously.
	vethRe := regexp.MustCompile(`\bw[0-9a-f]{11}@`)
	for i := 0; ; i++ {
		out, _ := n.ns.Run("ip", "-br", "link", "show")
		if len(vethRe.FindAllString(out, -1)) == 1 {
			break
		}
		if i == 100 {
			t.Fatalf("the pod's veth outlived its namespace by 10s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The node comes back: Open vSwitch and the agent restart.
	_ = n.dp.Close()
	n.ovs.Stop()
	inst, err := ovsrun.Start(ctx, n.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Stop)
	restarted := ovs.New(datapath.Options{OVSDB: n.opts.DBSocket(), OVSRunDir: n.run})
	t.Cleanup(func() { _ = restarted.Close() })
	if err := n.ns.Do(func() error { return restarted.Init(ctx, n.spec) }); err != nil {
		n.diagnose(t)
		t.Fatalf("Init after the pod's namespace vanished: %v", err)
	}
	if err := keep.Ping("10.99.1.1", 1); err != nil {
		t.Errorf("the surviving pod lost its gateway: %v", err)
	}
	var pods []datapath.Pod
	n.do(t, func() (err error) { pods, err = restarted.Pods(ctx); return err })
	listed := false
	for _, p := range pods {
		listed = listed || p.Key == orphan.Key
	}
	if !listed {
		t.Errorf("Pods() = %+v does not list the orphan for garbage collection", pods)
	}
	n.do(t, func() error { return restarted.DelPod(ctx, orphan.Key) })
	if ports := n.snapshot(t).ports; len(ports) != 3 {
		t.Errorf("ports after deleting the orphan: %v, want the gateway, the tunnel and one pod", ports)
	}
}

// diagnose logs what a failing test needs to see: flows with counters, ports, addresses.
func (n *node) diagnose(t testing.TB) {
	for _, args := range [][]string{
		{"ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "unix:" + n.run + "/" + ovs.IntegrationBridge + ".mgmt"},
		{"ovs-vsctl", "--db=unix:" + n.run + "/db.sock", "show"},
		{"nsenter", "--net=" + n.ns.Path(), "ip", "-br", "addr"},
		{"nsenter", "--net=" + n.ns.Path(), "ip", "route"},
		{"nsenter", "--net=" + n.ns.Path(), "ip", "neigh"},
	} {
		out, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		t.Logf("%s: %s\n%s", n.name, strings.Join(args, " "), out)
	}
}

// TestPeerRoutesThroughGateways: a node that is not a gateway spreads connections to another
// cluster's range over the cluster's gateway nodes (symmetric hash per connection) through
// the overlay; a gateway node hands such traffic to its kernel (here a local address stands
// for the tunnel to the peer). Changing the gateways moves new connections at once.
func TestPeerRoutesThroughGateways(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n1 := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve")
	g1 := newNode(t, sw, "g1", "172.29.0.12", "10.99.2.0/24", "geneve")
	g2 := newNode(t, sw, "g2", "172.29.0.13", "10.99.3.0/24", "geneve")
	all := []*node{n1, g1, g2}
	for _, n := range all {
		var others []datapath.RemoteNode
		for _, o := range all {
			if o != n {
				others = append(others, o.remote())
			}
		}
		n.do(t, func() error { return n.dp.SetRemoteNodes(ctx, others) })
	}
	peer := netip.MustParsePrefix("10.250.0.0/16")
	const far = "10.250.0.1" // an address in the peer cluster; each gateway's kernel answers for it
	counts := map[string]*atomic.Int64{}
	for _, g := range []*node{g1, g2} {
		g.ns.MustIP(t, "addr", "add", far+"/32", "dev", "lo")
		g.do(t, func() error {
			return g.dp.SetPeerRoutes(ctx, datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}, LocalGateway: true})
		})
		l, err := g.ns.Listen(far + ":5500")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		c := new(atomic.Int64)
		counts[g.name] = c
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				c.Add(1)
				go func() { _, _ = io.Copy(conn, conn); _ = conn.Close() }()
			}
		}()
	}
	pod, _ := n1.addPod(t, "p1", "10.99.1.5/24")
	setGateways := func(gws ...*node) {
		var ips []netip.Addr
		for _, g := range gws {
			ips = append(ips, g.ip)
		}
		n1.do(t, func() error {
			return n1.dp.SetPeerRoutes(ctx, datapath.PeerRoutes{Prefixes: []netip.Prefix{peer}, Gateways: ips})
		})
	}
	// connect opens and echoes over count connections; it reports how many succeeded.
	connect := func(count int) int {
		ok := 0
		for i := 0; i < count; i++ {
			c, err := pod.Dial(far+":5500", 2*time.Second)
			if err != nil {
				t.Logf("connection %d: %v", i, err)
				continue
			}
			msg := []byte(fmt.Sprintf("hello %d", i))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, len(msg))
			if _, err := c.Write(msg); err == nil {
				if _, err := io.ReadFull(c, buf); err == nil && string(buf) == string(msg) {
					ok++
				} else {
					t.Logf("connection %d: echo: %v", i, err)
				}
			}
			_ = c.Close()
		}
		return ok
	}
	snapshot := func() (int, int) {
		time.Sleep(100 * time.Millisecond)
		return int(counts["g1"].Load()), int(counts["g2"].Load())
	}

	// Userspace Open vSwitch drops the first packets towards a tunnel endpoint it has not
	// resolved yet (it ARPs for it): warm each path up before counting connections.
	for _, g := range []*node{g1, g2} {
		setGateways(g)
		if err := pod.PingUntil(far, 15*time.Second); err != nil {
			n1.diagnose(t)
			t.Fatalf("the peer range is unreachable through %s: %v", g.name, err)
		}
	}
	// From here on a gateway failing or coming back spawns no process: the flows it changes
	// go through the driver's OpenFlow connection.
	ovs.WithoutOFCtl(n1.dp)
	setGateways(g1, g2)
	if got := connect(32); got != 32 {
		n1.diagnose(t)
		g1.diagnose(t)
		t.Fatalf("%d of 32 connections through the gateways worked", got)
	}
	a, b := snapshot()
	t.Logf("32 connections: %d through g1, %d through g2", a, b)
	if a == 0 || b == 0 {
		t.Errorf("connections were not spread over both gateways (g1 %d, g2 %d)", a, b)
	}

	t.Run("UDP flows are spread by their ports too", func(t *testing.T) {
		got := map[string]*int{}
		done := make(chan struct{}, 2)
		for _, g := range []*node{g1, g2} {
			c, err := g.ns.ListenUDP(far + ":5501")
			if err != nil {
				t.Fatal(err)
			}
			n := new(int)
			got[g.name] = n
			go func() {
				defer func() { done <- struct{}{} }()
				defer c.Close()
				*n = len(netnstest.ReceiveUDP(c, 32, 2*time.Second))
			}()
		}
		if err := pod.SendUDPFlows(netip.AddrPortFrom(netip.Addr{}, 43000), netip.MustParseAddrPort(far+":5501"), 32); err != nil {
			t.Fatal(err)
		}

		<-done
		<-done
		t.Logf("32 UDP flows: %d through g1, %d through g2", *got["g1"], *got["g2"])
		if *got["g1"] == 0 || *got["g2"] == 0 || *got["g1"]+*got["g2"] != 32 {
			t.Errorf("32 UDP flows: %d through g1, %d through g2; want all 32, spread over both", *got["g1"], *got["g2"])
		}
	})

	t.Run("the node's own connections (kube-proxy's translated ones) go through the gateways too", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			c, err := n1.ns.Dial(far+":5500", 2*time.Second)
			if err != nil {
				n1.diagnose(t)
				t.Fatalf("from n1's kernel to %s: %v", far, err)
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Errorf("echo from n1's kernel: %q %v", buf, err)
			}
			_ = c.Close()
		}
		if out, _ := n1.ns.Run("ip", "route", "show", peer.String()); !strings.Contains(out, "dev "+ovs.GatewayPort) {
			t.Errorf("n1 routes %s %q, want into %s", peer, out, ovs.GatewayPort)
		}
	})

	t.Run("only g2 healthy: every new connection goes through g2", func(t *testing.T) {
		setGateways(g2)
		a0, b0 := snapshot()
		if got := connect(8); got != 8 {
			t.Fatalf("%d of 8 connections worked", got)
		}
		a1, b1 := snapshot()
		if a1 != a0 || b1 != b0+8 {
			t.Errorf("g1 took %d and g2 %d of 8 connections, want 0 and 8", a1-a0, b1-b0)
		}
	})

	t.Run("no gateway: peer traffic is dropped at the source", func(t *testing.T) {
		setGateways()
		if got := connect(1); got != 0 {
			t.Error("a connection to the peer range worked without any gateway")
		}
	})

	t.Run("on a gateway node, pods reach the peer through the node's own kernel", func(t *testing.T) {
		gp, _ := g1.addPod(t, "gp", "10.99.2.5/24")
		a0, _ := snapshot()
		c, err := gp.Dial(far+":5500", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if a1, _ := snapshot(); a1 != a0+1 {
			t.Errorf("g1's listener saw %d new connections, want 1", a1-a0)
		}
	})

	t.Run("a peer range overlapping the node's block is refused", func(t *testing.T) {
		err := n1.ns.Do(func() error {
			return n1.dp.SetPeerRoutes(ctx, datapath.PeerRoutes{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}})
		})
		if err == nil || !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("SetPeerRoutes with an overlapping range: %v", err)
		}
	})
}

// weft-ovs gives the uplink back when it stops (ReleaseUplink): the node keeps its address
// and routes without Open vSwitch; the next agent adopts the uplink again.
func TestReleaseUplinkGivesTheNodeItsNetworkBack(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	n := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve", func(ns *netnstest.Netns) {
		ns.MustIP(t, "route", "add", "default", "via", "172.29.0.1")
	})
	on := func(dev string) string { out, _ := n.ns.Run("ip", "-4", "addr", "show", "dev", dev); return out }
	if !strings.Contains(on(ovs.ExternalBridge), "172.29.0.11/24") {
		t.Fatalf("after Init the node address should be on %s:\n%s", ovs.ExternalBridge, on(ovs.ExternalBridge))
	}
	_ = n.dp.Close()
	var uplink string
	n.do(t, func() (err error) {
		uplink, err = ovs.ReleaseUplink(context.Background(), n.opts.DBSocket())
		return err
	})
	if uplink != "eth0" {
		t.Fatalf("released %q, want the uplink eth0", uplink)
	}
	if got := on("eth0"); !strings.Contains(got, "172.29.0.11/24") {
		t.Errorf("the address did not come back to eth0:\n%s", got)
	}
	if got := on(ovs.ExternalBridge); strings.Contains(got, "172.29.0.11") {
		t.Errorf("the address is still on %s:\n%s", ovs.ExternalBridge, got)
	}
	if got, _ := n.ns.Run("ip", "route", "show", "dev", "eth0"); !strings.Contains(got, "default via 172.29.0.1") {
		t.Errorf("the default route did not come back to eth0:\n%s", got)
	}
	ports, err := exec.Command("ovs-vsctl", "--db="+n.opts.DBSocket(), "list-ports", ovs.ExternalBridge).Output()
	if err != nil || strings.Contains(string(ports), "eth0") {
		t.Errorf("eth0 is still a port of %s (%v): %s", ovs.ExternalBridge, err, ports)
	}
	// With Open vSwitch gone, the node still reaches its neighbours through the uplink.
	n.ovs.Stop()
	peer := netnstest.New(t, "peer")
	sw.Plug(t, peer, "ppeer", "172.29.0.20/24")
	if out, err := n.ns.Run("ping", "-c1", "-W2", "172.29.0.20"); err != nil {
		t.Errorf("after the release and without Open vSwitch, the node cannot reach a neighbour: %v\n%s", err, out)
	}

	// Released twice (weft-ovs restarted before any agent ran): nothing to do.
	inst, err := ovsrun.Start(context.Background(), n.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Stop)
	n.do(t, func() (err error) {
		uplink, err = ovs.ReleaseUplink(context.Background(), n.opts.DBSocket())
		return err
	})
	if uplink != "" {
		t.Errorf("a second release found uplink %q", uplink)
	}
	// The next agent adopts it again.
	again := ovs.New(datapath.Options{OVSDB: n.opts.DBSocket(), OVSRunDir: n.run})
	t.Cleanup(func() { _ = again.Close() })
	n.do(t, func() error { return again.Init(context.Background(), n.spec) })
	if !strings.Contains(on(ovs.ExternalBridge), "172.29.0.11/24") {
		t.Errorf("a new agent did not adopt the uplink again:\n%s", on(ovs.ExternalBridge))
	}
}

// Open vSwitch killed (SIGKILL: the ovs container dying, so the uplink is not given back)
// cuts the node off until it runs again; when it does, the node has its network back by
// itself, and pods reach other nodes' pods — with the agent running (its OpenFlow
// connection restores the flows) or not. Should the bridge port that held the node's
// addresses be gone meanwhile (Open vSwitch then makes a new one, without them), weft-ovs
// starting (RestoreUplink) or the running agent puts them back.
func TestNodeNetworkComesBackAfterOVSIsKilled(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	n1 := newNode(t, sw, "n1", "172.29.0.11", "10.99.1.0/24", "geneve", func(ns *netnstest.Netns) {
		ns.MustIP(t, "route", "add", "default", "via", "172.29.0.1")
	})
	n2 := newNode(t, sw, "n2", "172.29.0.12", "10.99.2.0/24", "geneve")
	for _, n := range []*node{n1, n2} {
		n.do(t, func() error { return n.dp.SetRemoteNodes(ctx, []datapath.RemoteNode{n1.remote(), n2.remote()}) })
	}
	a, _ := n1.addPod(t, "a", "10.99.1.5/24")
	n2.addPod(t, "b", "10.99.2.5/24")
	if err := a.PingUntil("10.99.2.5", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	on := func(dev string) string { out, _ := n1.ns.Run("ip", "-4", "addr", "show", "dev", dev); return out }
	// restart kills Open vSwitch and starts it again; portLost deletes the bridge port that
	// held the node's addresses in between.
	restart := func(portLost bool) {
		t.Helper()
		n1.ovs.Kill()
		if portLost {
			n1.ns.MustIP(t, "link", "del", ovs.ExternalBridge)
		}
		inst, err := ovsrun.Start(ctx, n1.opts)
		if err != nil {
			t.Fatal(err)
		}
		n1.ovs = inst
		t.Cleanup(inst.Stop)
	}
	back := func(what string) {
		t.Helper()
		if err := n1.ns.PingUntil("172.29.0.12", 15*time.Second); err != nil {
			n1.diagnose(t)
			t.Fatalf("%s: the node cannot reach its neighbour: %v", what, err)
		}
		if got, _ := n1.ns.Run("ip", "route", "show", "default"); !strings.Contains(got, "dev "+ovs.ExternalBridge) {
			t.Errorf("%s: the default route is %q, want it on %s", what, got, ovs.ExternalBridge)
		}
		if got := on("eth0"); strings.Contains(got, "172.29.0.11") {
			t.Errorf("%s: the address is on the uplink too:\n%s", what, got)
		}
		if err := a.PingUntil("10.99.2.5", 15*time.Second); err != nil {
			n1.diagnose(t)
			t.Fatalf("%s: pod to pod: %v", what, err)
		}
	}
	restoreUplink := func() int {
		var got int
		n1.do(t, func() (err error) {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			got, err = ovs.RestoreUplink(rctx, n1.opts.DBSocket())
			return err
		})
		return got
	}

	// With the agent running.
	restart(false)
	back("killed and started again, the agent running")
	restart(true)
	back("killed, its port lost, started again, the agent running")

	// With no agent running: weft-ovs starting restores what is missing.
	_ = n1.dp.Close()
	restart(false)
	if got := restoreUplink(); got != 0 {
		t.Errorf("RestoreUplink restored %d addresses and routes, want none (the port kept them)", got)
	}
	n1.restartDriver(t)
	back("killed and started again, then the agent")
	_ = n1.dp.Close()
	restart(true)
	if got := restoreUplink(); got != 2 {
		t.Errorf("RestoreUplink restored %d addresses and routes, want 2 (the node address, the default route)", got)
	}
	if err := n1.ns.PingUntil("172.29.0.12", 15*time.Second); err != nil {
		n1.diagnose(t)
		t.Fatalf("after RestoreUplink, with no agent, the node cannot reach its neighbour: %v", err)
	}
	n1.restartDriver(t)
	back("killed, its port lost, started again, then the agent")

	// The node set up again (a reboot, a lab brought up again) while the database remembers
	// the adoption: the address is back on the uplink. Nothing is restored onto the bridge;
	// the agent adopts the uplink again.
	_ = n1.dp.Close()
	n1.ovs.Kill()
	n1.ns.MustIP(t, "link", "del", ovs.ExternalBridge)
	n1.ns.MustIP(t, "addr", "add", "172.29.0.11/24", "dev", "eth0")
	n1.ns.MustIP(t, "route", "add", "default", "via", "172.29.0.1")
	inst, err := ovsrun.Start(ctx, n1.opts)
	if err != nil {
		t.Fatal(err)
	}
	n1.ovs = inst
	t.Cleanup(inst.Stop)
	if got := restoreUplink(); got != 0 {
		t.Errorf("RestoreUplink restored %d onto the bridge while the uplink holds the node's address", got)
	}
	n1.restartDriver(t)
	back("the node's network set up again, then Open vSwitch and the agent")
	if !strings.Contains(on(ovs.ExternalBridge), "172.29.0.11/24") {
		t.Errorf("the agent did not adopt the uplink again:\n%s", on(ovs.ExternalBridge))
	}
}
