package ovs

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/agent/datapath/ovs/vswitch"
)

// linkWithAddr returns the link that holds ip.
func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface holds the node address %s", ip)
}

// adoptUplink gives the userspace datapath the node's uplink: the uplink becomes a port of
// the external bridge, and the node's addresses and routes move to the bridge's internal
// port (OVS's userspace tunnels send through there). Done once; later calls find the
// address on the bridge and only make sure the uplink is still its port.
func (d *Driver) adoptUplink(ctx context.Context, nodeIP netip.Addr) error {
	link, err := linkWithAddr(nodeIP)
	if err != nil {
		return err
	}
	if link.Attrs().Name == d.extBridge {
		return nil
	}
	uplink := link.Attrs().Name
	if err := d.db.ensureBridge(ctx, d.extBridge, d.datapathType, vswitch.BridgeFailModeStandalone); err != nil {
		return fmt.Errorf("bridge %s: %w", d.extBridge, err)
	}
	if err := d.db.ensurePort(ctx, portSpec{Bridge: d.extBridge, Name: uplink,
		ExternalIDs: map[string]string{"weft-role": "uplink"}}); err != nil {
		return fmt.Errorf("uplink port %s: %w", uplink, err)
	}
	if err := d.db.waitOFPort(ctx, uplink); err != nil {
		return err
	}
	br, err := waitLink(ctx, d.extBridge)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMTU(br, link.Attrs().MTU); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		moved := &netlink.Addr{IPNet: a.IPNet}
		if err := netlink.AddrReplace(br, moved); err != nil {
			return fmt.Errorf("moving %s to %s: %w", a.IPNet, d.extBridge, err)
		}
	}
	for _, r := range routes {
		if r.Protocol == netlink.RouteProtocol(2) /* kernel: comes with the address */ || r.Gw == nil {
			continue
		}
		r.LinkIndex = br.Attrs().Index
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("moving route %s to %s: %w", r, d.extBridge, err)
		}
	}
	for _, a := range addrs {
		if a.Scope == int(netlink.SCOPE_UNIVERSE) {
			_ = netlink.AddrDel(link, &netlink.Addr{IPNet: a.IPNet})
		}
	}
	return nil
}

func waitLink(ctx context.Context, name string) (netlink.Link, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if l, err := netlink.LinkByName(name); err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("interface %s did not appear", name)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
