package bgp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the routes KernelRoutes installs (rtnetlink protocol 0x59), so they
// are told from everyone else's and found again after a restart.
const RouteProtocol = netlink.RouteProtocol(0x59)

// KernelRoutes installs the routes peers announced into the node's main table.
type KernelRoutes struct{}

// Sync makes the node's weft-BGP routes exactly routes, leaving out prefixes inside
// exclude (the cluster's own pod ranges) and routes without a usable next hop.
func (KernelRoutes) Sync(routes []Route, exclude []netip.Prefix) error {
	want := map[string]Route{}
outer:
	for _, r := range routes {
		if !r.NextHop.IsValid() || r.NextHop.IsUnspecified() {
			continue
		}
		for _, x := range exclude {
			if x.Overlaps(r.Prefix) {
				continue outer
			}
		}
		want[r.Prefix.Masked().String()] = r
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := netlink.RouteListFiltered(family, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, h := range have {
			if h.Dst == nil {
				continue
			}
			if w, ok := want[h.Dst.String()]; ok && h.Gw.Equal(w.NextHop.AsSlice()) {
				delete(want, h.Dst.String())
				continue
			}
			if err := netlink.RouteDel(&h); err != nil {
				return fmt.Errorf("removing BGP route %s: %w", h.Dst, err)
			}
		}
	}
	for _, r := range want {
		p := r.Prefix.Masked()
		dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		route := &netlink.Route{Dst: dst, Gw: r.NextHop.AsSlice(), Protocol: RouteProtocol, Scope: unix.RT_SCOPE_UNIVERSE}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("installing BGP route %s via %s: %w", p, r.NextHop, err)
		}
	}
	return nil
}
