package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/veth"
)

// Uninstall removes what the driver made on the node: the pods' host veths, the programs
// (pinned links removed, clsact filters deleted), the maps' pins, weft-vxlan0, the routes
// of routeProtocol, the gateway address on lo and the state files. It reads all of that
// from the node (pins, the state file, routes), not from an Init.
func (d *Driver) Uninstall(_ context.Context, node datapath.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopEvents()
	if d.objs != nil {
		_ = d.objs.Close()
		d.objs = nil
	}
	if d.pinDir == "" {
		d.pinDir = filepath.Join(d.opts.BPFFS, "weft", node.Name)
	}
	var errs []error
	if err := d.loadState(); err != nil {
		errs = append(errs, err) // a damaged state file: the rest still goes
	}
	for key := range d.pods {
		if err := (veth.Pair{Host: veth.HostIfName(key)}).Delete(); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", key, err))
		}
	}
	errs = append(errs, deleteTCFilters())
	if l, err := netlink.LinkByName(TunnelDevice); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", TunnelDevice, err))
		}
	}
	errs = append(errs, removeOverlayFilter())
	// The pod block's unreachable route names the block whose gateway address is on lo
	// (the node's blocks may be gone from its Node already).
	blocks := append([]netip.Prefix(nil), node.PodCIDRs...)
	if routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol, Type: unix.RTN_UNREACHABLE},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TYPE); err == nil {
		for _, r := range routes {
			if p, ok := prefixOf(r.Dst); ok {
				blocks = append(blocks, p)
			}
		}
	}
	if _, err := veth.DeleteRoutes(routeProtocol); err != nil {
		errs = append(errs, err)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		for _, b := range blocks {
			if !b.Addr().Is4() {
				continue
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: datapath.Gateway(b.Masked()).AsSlice(), Mask: net.CIDRMask(32, 32)}}
			if err := netlink.AddrDel(lo, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("address %s on lo: %w", addr.IPNet, err))
			}
		}
	}
	// Removing the pins of the TCX links detaches their programs (no one else holds them).
	if err := os.RemoveAll(d.pinDir); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Dir(d.pinDir)) // <bpffs>/weft, when no other node's pins are in it
	for _, path := range []string{d.statePath(), d.policyRecordPath()} {
		if path != "" {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	d.pods, d.remotes, d.peers = nil, nil, datapath.PeerRoutes{}
	return errors.Join(errs...)
}

// deleteTCFilters removes the driver's clsact filters (the fallback for kernels without
// TCX) from every interface; the qdisc stays when other filters use it.
func deleteTCFilters() error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			filters, err := netlink.FilterList(l, parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, f := range filters {
				if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == "weft" {
					if err := netlink.FilterDel(f); err != nil {
						errs = append(errs, fmt.Errorf("filter on %s: %w", l.Attrs().Name, err))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
