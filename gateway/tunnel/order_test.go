package tunnel_test

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/internal/netnstest"
)

// TestNextHopsInPeerOrder: a route's next hops are listed in the order of the peer
// gateways' addresses, whatever the order of their devices: every gateway and node lists a
// cluster's gateways alike, so the kernel's multipath hash (symmetric, with one seed
// everywhere) sends a connection's replies back through the gateways that carried it.
func TestNextHopsInPeerOrder(t *testing.T) {
	netnstest.RequireRoot(t)
	ns := netnstest.New(t, "order")
	peers := []string{"172.29.4.30", "172.29.4.20", "172.29.4.10"} // devices made in the reverse order
	for i := range peers {
		name := "tun" + string(rune('a'+i))
		ns.MustIP(t, "link", "add", name, "type", "veth", "peer", "name", name+"-p") // (no dummy module here)
		ns.MustIP(t, "link", "set", name, "up")
		ns.MustIP(t, "link", "set", name+"-p", "up")
	}
	pre := netip.MustParsePrefix("10.250.0.0/16")
	err := ns.Do(func() error {
		var links []int
		var hops []tunnel.NextHop
		for i, p := range peers {
			l, err := netlink.LinkByName("tun" + string(rune('a'+i)))
			if err != nil {
				return err
			}
			links = append(links, l.Attrs().Index)
			hops = append(hops, tunnel.NextHop{LinkIndex: l.Attrs().Index, Peer: netip.MustParseAddr(p)})
		}
		if err := tunnel.SyncRoutes(links, map[netip.Prefix][]tunnel.NextHop{pre: hops}); err != nil {
			return err
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: tunnel.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		if len(routes) != 1 || len(routes[0].MultiPath) != 3 {
			t.Fatalf("routes %+v, want one with three next hops", routes)
		}
		for i, want := range []int{links[2], links[1], links[0]} { // .10, .20, .30
			if got := routes[0].MultiPath[i].LinkIndex; got != want {
				t.Errorf("next hop %d goes through link %d, want %d (peer %s)", i, got, want, peers[2-i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
