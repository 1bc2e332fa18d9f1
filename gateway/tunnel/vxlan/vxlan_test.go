package vxlan_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/gateway/tunnel/vxlan"
	"github.com/weft-net/weft/internal/netnstest"
)

type end struct {
	ns *netnstest.Netns
	t  tunnel.Tunnel
	ip netip.Addr
}

func newEnd(t *testing.T, sw *netnstest.Switch, name, ip, address string) *end {
	t.Helper()
	e := &end{ns: netnstest.New(t, name), ip: netip.MustParseAddr(ip)}
	sw.Plug(t, e.ns, "p"+name, ip+"/24")
	reg := tunnel.NewRegistry()
	if err := vxlan.Register(reg); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.t, err = reg.New(vxlan.Name, tunnel.Config{Interface: "weft-vx0", LocalIP: e.ip,
		Address: netip.MustParsePrefix(address)}); err != nil {
		t.Fatal(err)
	}
	e.do(t, func() error { return e.t.Up(context.Background()) })
	return e
}

func (e *end) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := e.ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func (e *end) peer(prefixes ...string) tunnel.Peer {
	p := tunnel.Peer{Name: e.ns.Name, Endpoint: netip.AddrPortFrom(e.ip, vxlan.DefaultPort)}
	for _, s := range prefixes {
		p.Prefixes = append(p.Prefixes, netip.MustParsePrefix(s))
	}
	return p
}

func (e *end) setPeers(t *testing.T, peers ...tunnel.Peer) {
	t.Helper()
	e.do(t, func() error { return e.t.SetPeers(context.Background(), peers) })
}

func TestVXLANBetweenGateways(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	a := newEnd(t, sw, "vxa", "172.29.11.11", "10.200.1.1/32")
	b := newEnd(t, sw, "vxb", "172.29.11.12", "10.200.2.1/32")
	c := newEnd(t, sw, "vxc", "172.29.11.13", "10.200.3.1/32")
	a.setPeers(t, b.peer("10.200.2.0/24"), c.peer("10.200.3.0/24"))
	b.setPeers(t, a.peer("10.200.1.0/24"))
	c.setPeers(t, a.peer("10.200.1.0/24"))

	for _, dst := range []string{"10.200.2.1", "10.200.3.1"} {
		if err := a.ns.Ping(dst, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := netnstest.TransferTCP(b.ns, a.ns, "10.200.2.1:5402", 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := netnstest.TransferTCP(a.ns, c.ns, "10.200.1.1:5402", 4<<20); err != nil {
		t.Fatal(err)
	}
	var st []tunnel.PeerStatus
	a.do(t, func() (err error) { st, err = a.t.Status(context.Background()); return err })
	if len(st) != 2 {
		t.Errorf("status of a: %+v, want two peers", st)
	}

	t.Run("Up again changes nothing", func(t *testing.T) {
		a.do(t, func() error { return a.t.Up(context.Background()) })
		if err := a.ns.Ping("10.200.2.1", 1); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a removed peer leaves no route, neighbour or forwarding entry", func(t *testing.T) {
		a.setPeers(t, b.peer("10.200.2.0/24"))
		for _, args := range [][]string{{"ip", "route", "show", "dev", "weft-vx0"}, {"ip", "neigh", "show", "dev", "weft-vx0"},
			{"bridge", "fdb", "show", "dev", "weft-vx0"}} {
			out, _ := a.ns.Run(args...)
			if strings.Contains(out, "172.29.11.13") || strings.Contains(out, "10.200.3.0") {
				t.Errorf("%s still mentions the removed peer:\n%s", strings.Join(args, " "), out)
			}
		}
		if err := a.ns.Ping("10.200.3.1", 1); err == nil {
			t.Error("the removed peer is still reachable")
		}
		if err := a.ns.Ping("10.200.2.1", 1); err != nil {
			t.Error(err)
		}
	})

	t.Run("peers sharing a range both carry flows; a standby carries none", func(t *testing.T) {
		// b and c stand for two gateways of one cluster: both answer 10.200.9.1.
		for _, e := range []*end{b, c} {
			if out, err := e.ns.Run("ip", "addr", "add", "10.200.9.1/32", "dev", "weft-vx0"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		c.setPeers(t, a.peer("10.200.1.0/24"))
		if out, err := a.ns.Run("sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		a.setPeers(t, b.peer("10.200.9.0/24"), c.peer("10.200.9.0/24"))
		if out, _ := a.ns.Run("ip", "route", "show", "10.200.9.0/24"); strings.Count(out, "nexthop") != 2 {
			t.Errorf("route to the shared range:\n%s\nwant two next hops", out)
		}
		bRx, cRx := rx(t, b), rx(t, c)
		if err := a.ns.SendUDPFlows(netip.AddrPortFrom(netip.Addr{}, 20000), netip.MustParseAddrPort("10.200.9.1:9"), 32); err != nil {
			t.Fatal(err)
		}
		db, dc := rx(t, b)-bRx, rx(t, c)-cRx
		t.Logf("32 flows: %d packets through b, %d through c", db, dc)
		if db == 0 || dc == 0 || db+dc < 32 {
			t.Errorf("32 flows: %d packets through b, %d through c; want both used and 32 in all", db, dc)
		}
		standby := c.peer("10.200.9.0/24")
		standby.Standby = true
		a.setPeers(t, b.peer("10.200.9.0/24"), standby)
		if out, _ := a.ns.Run("ip", "route", "show", "10.200.9.0/24"); strings.Contains(out, "nexthop") || !strings.Contains(out, "172.29.11.12") {
			t.Errorf("route to the shared range with c standing by:\n%s\nwant b only", out)
		}
		bRx, cRx = rx(t, b), rx(t, c)
		if err := a.ns.SendUDPFlows(netip.AddrPortFrom(netip.Addr{}, 21000), netip.MustParseAddrPort("10.200.9.1:9"), 32); err != nil {
			t.Fatal(err)
		}
		if db, dc := rx(t, b)-bRx, rx(t, c)-cRx; dc != 0 || db < 32 {
			t.Errorf("with c standing by: %d packets through b, %d through c; want all through b", db, dc)
		}
		a.setPeers(t, b.peer("10.200.2.0/24"))
	})

	t.Run("a peer without an endpoint is refused", func(t *testing.T) {
		err := a.ns.Do(func() error {
			return a.t.SetPeers(context.Background(), []tunnel.Peer{{Name: "nowhere", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}})
		})
		if err == nil || !strings.Contains(err.Error(), "no endpoint") {
			t.Errorf("a peer without an endpoint: %v", err)
		}
	})

	t.Run("closing removes the device", func(t *testing.T) {
		a.do(t, a.t.Close)
		if out, err := a.ns.Run("ip", "link", "show", "weft-vx0"); err == nil {
			t.Errorf("weft-vx0 still exists: %s", out)
		}
	})
}

func TestConfig(t *testing.T) {
	if _, err := vxlan.New(tunnel.Config{Interface: "x"}); err == nil {
		t.Error("no local address was accepted")
	}
	if _, err := vxlan.New(tunnel.Config{Interface: "x", LocalIP: netip.MustParseAddr("172.29.0.1"), VNI: 1 << 24}); err == nil {
		t.Error("a 25-bit VNI was accepted")
	}
	if got := vxlan.MAC(netip.MustParseAddr("172.29.11.12")).String(); got != "0a:57:ac:1d:0b:0c" {
		t.Errorf("MAC = %s", got)
	}
}

// rx counts the packets the end's tunnel device received.
func rx(t *testing.T, e *end) uint64 {
	t.Helper()
	var n uint64
	e.do(t, func() error {
		l, err := netlink.LinkByName("weft-vx0")
		if err != nil {
			return err
		}
		n = l.Attrs().Statistics.RxPackets
		return nil
	})
	return n
}
