package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/veth"
)

func isNotExist(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }

// SetRemoteNodes routes other nodes' pod blocks through the VXLAN device.
func (d *Driver) SetRemoteNodes(_ context.Context, nodes []datapath.RemoteNode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return errors.New("the datapath is not initialized")
	}
	var remotes []datapath.RemoteNode
	for _, n := range nodes {
		if n.Name != d.node.Name && n.IP != d.node.IP {
			remotes = append(remotes, n)
		}
	}
	d.remotes = remotes
	if err := d.saveState(); err != nil {
		return err
	}
	return d.syncRoutes()
}

// SetPeerRoutes routes other clusters' ranges: on a gateway node the kernel routes them into
// its tunnels itself; elsewhere through the VXLAN device to the gateway nodes, one chosen per
// connection by a hash of addresses and ports (a multipath route).
func (d *Driver) SetPeerRoutes(_ context.Context, routes datapath.PeerRoutes) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return errors.New("the datapath is not initialized")
	}
	for _, p := range routes.Prefixes {
		if p.Overlaps(d.block) {
			return fmt.Errorf("peer range %s overlaps this node's pod block %s", p, d.block)
		}
	}
	d.peers = routes
	if err := d.saveState(); err != nil {
		return err
	}
	return d.syncRoutes()
}

// peerRouteMetric is the metric of the routes to peer clusters through the gateway nodes.
const peerRouteMetric = 1000

// syncRoutes makes the node's VXLAN forwarding entries, neighbours and routes match the
// remote nodes and peer routes, removing the driver's stale routes. Without encapsulation
// other nodes' blocks are routed through their node addresses on the uplink.
func (d *Driver) syncRoutes() error {
	if d.node.Encapsulation == "none" {
		return d.syncNativeRoutes()
	}
	if err := d.syncOverlayFilter(); err != nil {
		return err
	}
	vx, err := netlink.LinkByName(TunnelDevice)
	if err != nil {
		return err
	}
	idx := vx.Attrs().Index
	// The routes wanted, by destination and metric.
	want := map[string]bool{d.block.String() + "@0": true}
	byIP := map[netip.Addr]datapath.RemoteNode{}
	for _, r := range d.remotes {
		if !r.IP.Is4() {
			continue
		}
		byIP[r.IP] = r
		mac := vtepMAC(r.IP)
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: r.IP.AsSlice(), HardwareAddr: mac}); err != nil {
			return fmt.Errorf("forwarding entry for %s: %w", r.Name, err)
		}
		for _, b := range r.PodCIDRs {
			if !b.Addr().Is4() {
				continue
			}
			b = b.Masked()
			gw := datapath.Gateway(b)
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: gw.AsSlice(), HardwareAddr: mac}); err != nil {
				return fmt.Errorf("neighbour %s: %w", gw, err)
			}
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: veth.IPNet(b), Gw: gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK),
				Protocol: routeProtocol}); err != nil {
				return fmt.Errorf("route %s: %w", b, err)
			}
			want[b.String()+"@0"] = true
		}
	}
	if !d.peers.LocalGateway {
		var hops []*netlink.NexthopInfo
		for _, g := range sortedAddrs(d.peers.Gateways) {
			r, ok := byIP[g]
			if !ok || g == d.node.IP {
				continue
			}
			for _, b := range r.PodCIDRs {
				if b.Addr().Is4() {
					hops = append(hops, &netlink.NexthopInfo{LinkIndex: idx, Gw: datapath.Gateway(b.Masked()).AsSlice(), Flags: int(netlink.FLAG_ONLINK)})
					break
				}
			}
		}
		if err := d.routePeers(idx, hops, want); err != nil {
			return err
		}
	}
	return d.pruneRoutes(want)
}

// syncNativeRoutes routes other nodes' pod blocks through their node addresses, and peer
// clusters' ranges through the gateway nodes' addresses, on the uplink.
func (d *Driver) syncNativeRoutes() error {
	want := map[string]bool{d.block.String() + "@0": true}
	for _, r := range d.remotes {
		if !r.IP.Is4() {
			continue
		}
		for _, b := range r.PodCIDRs {
			if !b.Addr().Is4() {
				continue
			}
			b = b.Masked()
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: d.uplink, Dst: veth.IPNet(b), Gw: r.IP.AsSlice(),
				Flags: int(netlink.FLAG_ONLINK), Protocol: routeProtocol}); err != nil {
				return fmt.Errorf("route %s via %s: %w", b, r.IP, err)
			}
			want[b.String()+"@0"] = true
		}
	}
	if !d.peers.LocalGateway {
		var hops []*netlink.NexthopInfo
		for _, g := range sortedAddrs(d.peers.Gateways) {
			if g.Is4() && g != d.node.IP {
				hops = append(hops, &netlink.NexthopInfo{LinkIndex: d.uplink, Gw: g.AsSlice(), Flags: int(netlink.FLAG_ONLINK)})
			}
		}
		if err := d.routePeers(d.uplink, hops, want); err != nil {
			return err
		}
	}
	return d.pruneRoutes(want)
}

// routePeers routes the peer clusters' ranges through hops on link (unreachable without
// any), recording them in want. Behind (a higher metric than) the routes a gateway on this
// node installs into its tunnels: replacing those would cut the node's own gateway off.
func (d *Driver) routePeers(link int, hops []*netlink.NexthopInfo, want map[string]bool) error {
	for _, p := range d.peers.Prefixes {
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		route := &netlink.Route{Dst: veth.IPNet(p), Protocol: routeProtocol, Priority: peerRouteMetric}
		switch len(hops) {
		case 0:
			route.Type = unix.RTN_UNREACHABLE
		case 1:
			route.LinkIndex, route.Gw, route.Flags = link, hops[0].Gw, int(netlink.FLAG_ONLINK)
		default:
			route.MultiPath = hops
		}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("route %s: %w", p, err)
		}
		want[fmt.Sprintf("%s@%d", p, peerRouteMetric)] = true
	}
	return nil
}

// pruneRoutes removes the driver's routes that are not wanted (by destination@metric),
// keeping the pods' own.
func (d *Driver) pruneRoutes(want map[string]bool) error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil || want[fmt.Sprintf("%s@%d", r.Dst, r.Priority)] || r.Scope == netlink.SCOPE_LINK && r.Dst.IP != nil && d.isPodRoute(r.Dst) {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			return fmt.Errorf("removing route %s: %w", r.Dst, err)
		}
	}
	return nil
}

// isPodRoute reports whether a /32 route is one of this node's pods'.
func (d *Driver) isPodRoute(n *net.IPNet) bool {
	ip, ok := netip.AddrFromSlice(n.IP)
	return ok && d.block.Contains(ip.Unmap())
}

// sortedAddrs is addrs in address order: the order of a route's next hops decides which
// one the kernel's multipath hash picks for a connection, and every node (and the peer
// clusters' gateways) must list a cluster's gateways the same way (see
// fabricv1.MultipathHashSeed).
func sortedAddrs(addrs []netip.Addr) []netip.Addr {
	out := slices.Clone(addrs)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}
