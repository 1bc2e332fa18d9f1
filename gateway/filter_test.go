package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/gateway"
	"github.com/weft-net/weft/internal/health"
	"github.com/weft-net/weft/internal/netnstest"
)

// A peer's pods reach, through a gateway, only what the fabric carries: this cluster's pods
// (and Services), never the gateway node's own services, another node or the metadata
// address; the gateway node answers peer gateways' health probes and gets the answers to
// its own. The tunnel is a veth named like a WireGuard device; the test first shows that
// without the filter the node, the other node and the metadata address all answer.
func TestTunnelTrafficReachesOnlyTheFabric(t *testing.T) {
	netnstest.RequireRoot(t)
	gw := netnstest.New(t, "gwf")    // the gateway node
	peer := netnstest.New(t, "gwpr") // the far end of the tunnel: a peer's pods
	pod := netnstest.New(t, "gwpod") // a pod of this cluster on the gateway node
	node := netnstest.New(t, "gwn2") // another node, which also holds the metadata address
	netnstest.Link(t, gw, "weft-wg-t", "192.0.2.1/30", peer, "t0", "192.0.2.2/30")
	netnstest.Link(t, gw, "eth0", "172.31.9.1/24", node, "eth0", "172.31.9.2/24")
	netnstest.Link(t, gw, "p0", "10.244.1.1/24", pod, "eth0", "10.244.1.5/24")
	node.MustIP(t, "addr", "add", "169.254.169.254/32", "dev", "lo")
	for _, dst := range []string{"10.244.0.0/16", "172.31.9.0/24", "169.254.169.254/32"} {
		peer.MustIP(t, "route", "add", dst, "via", "192.0.2.1")
	}
	gw.MustIP(t, "route", "add", "169.254.169.254/32", "via", "172.31.9.2")
	node.MustIP(t, "route", "add", "default", "via", "172.31.9.1")
	pod.MustIP(t, "route", "add", "default", "via", "10.244.1.1")
	if out, err := gw.Run("sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	ip := netip.MustParseAddr
	pod.ServeEcho(t, ip("10.244.1.5"), []int{8080}, nil)
	gw.ServeEcho(t, ip("172.31.9.1"), []int{10250}, []int{health.DefaultPort}) // its kubelet; its health responder
	node.ServeEcho(t, ip("172.31.9.2"), []int{10250}, nil)                     // another node's kubelet
	node.ServeEcho(t, ip("169.254.169.254"), []int{80}, nil)                   // the metadata service
	peer.ServeEcho(t, ip("192.0.2.2"), []int{7778}, []int{7777})               // a peer's pod, its gateway
	reach := func(addr string) error {
		if o := peer.Probe("tcp", netip.MustParseAddrPort(addr), time.Second); o != netnstest.Connected {
			return fmt.Errorf("%s: %s", addr, o)
		}
		return nil
	}
	private := []string{"172.31.9.1:10250", "172.31.9.2:10250", "169.254.169.254:80"}
	for _, a := range append([]string{"10.244.1.5:8080"}, private...) {
		if err := reach(a); err != nil {
			t.Fatalf("without the filter the peer cannot reach %s, so the test shows nothing: %v", a, err)
		}
	}

	own := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/16")}
	if err := gw.Do(func() error { return gateway.PrepareKernel("weft-wg*", own, 4800) }); err != nil {
		t.Fatal(err)
	}
	if err := reach("10.244.1.5:8080"); err != nil {
		t.Errorf("through the gateway the peer cannot reach this cluster's pod: %v", err)
	}
	for _, a := range private {
		if err := reach(a); err == nil {
			t.Errorf("through the gateway the peer reached %s", a)
		}
	}

	// Health probes: a peer gateway's to this node, and this node's own (their answers).
	if o := peer.Probe("udp", netip.AddrPortFrom(ip("172.31.9.1"), health.DefaultPort), time.Second); o != netnstest.Connected {
		t.Errorf("a peer gateway's health probe to the gateway node: %s", o)
	}
	if o := gw.Probe("udp", netip.MustParseAddrPort("192.0.2.2:7777"), time.Second); o != netnstest.Connected {
		t.Errorf("the gateway node's own probe through the tunnel got no answer: %s", o)
	}
	// Another node's host-network client gets its answers (the connection began here).
	if o := node.Probe("tcp", netip.MustParseAddrPort("192.0.2.2:7778"), time.Second); o != netnstest.Connected {
		t.Errorf("another node's host-network client got no answer from the peer: %s", o)
	}

	// A tunnel without authentication of its own (Geneve, VXLAN: here on port 4800) takes
	// packets from the peers' gateways only.
	encap, err := gw.ListenUDP("172.31.9.1:4800")
	if err != nil {
		t.Fatal(err)
	}
	defer encap.Close()
	sendEncap := func() []netip.AddrPort {
		t.Helper()
		err := node.Do(func() error {
			c, err := net.Dial("udp", "172.31.9.1:4800")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("encapsulated"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return netnstest.ReceiveUDP(encap, 1, 500*time.Millisecond)
	}
	if got := sendEncap(); len(got) != 0 {
		t.Errorf("before any peer gateway is known, a packet to the tunnel port from %v was taken", got)
	}
	for _, c := range []struct {
		peers []netip.Addr
		taken bool
	}{{[]netip.Addr{ip("172.31.9.2"), ip("2001:db8::2")}, true}, {[]netip.Addr{ip("172.31.9.99")}, false}} {
		if err := gw.Do(func() error { return gateway.SetPeerGateways(c.peers) }); err != nil {
			t.Fatal(err)
		}
		if got := sendEncap(); (len(got) == 1) != c.taken {
			t.Errorf("peer gateways %v: a packet to the tunnel port from 172.31.9.2 taken: %v, want %v", c.peers, got, c.taken)
		}
	}
	// The drops are counted, and the gateway's metrics read the counters.
	var dropped map[string]float64
	_ = gw.Do(func() error { dropped = gateway.DroppedByTunnelFilter(context.Background()); return nil })
	if dropped["from_tunnel"] == 0 || dropped["encap"] < 2 {
		out, _ := gw.Run("nft", "list", "table", "inet", "weft-gateway")
		t.Errorf("dropped out of the tunnel, as the metrics read it: %v; nft says:\n%s", dropped, out)
	}
	// A restarted gateway sets its table up again and keeps the peer gateways it had until
	// it has read the peers.
	if err := gw.Do(func() error { return gateway.SetPeerGateways([]netip.Addr{ip("172.31.9.2")}) }); err != nil {
		t.Fatal(err)
	}
	if err := gw.Do(func() error { return gateway.PrepareKernel("weft-wg*", own, 4800) }); err != nil {
		t.Fatal(err)
	}
	if got := sendEncap(); len(got) != 1 {
		t.Error("after the gateway set its table up again, a known peer gateway's packet to the tunnel port was not taken")
	}
}
