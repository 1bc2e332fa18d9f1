// Package veth wires a pod: the veth pair with its pod end in the pod's network namespace,
// addressed, with a default route through the node. Datapath drivers share it.
package veth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/agent/datapath"
)

// HostIfName is the node-side veth name of a pod attachment: stable, unique, ≤ 15 bytes.
func HostIfName(key datapath.PodKey) string {
	sum := sha256.Sum256([]byte(key.ContainerID + "/" + key.IfName))
	return "w" + hex.EncodeToString(sum[:])[:11]
}

// Pair is the veth of one pod attachment.
type Pair struct {
	Host, Peer string // names: on the node, in the pod
	Netns      string
	IP         netip.Prefix
	Gateway    netip.Addr
	MAC        string
	MTU        int
	NoOffload  bool // the OVS userspace datapath cannot tunnel offloaded packets
	// HostARP keeps ARP on the node's end (the node answers the pod, proxy ARP included);
	// off when a switch on the node's end answers instead.
	HostARP bool
}

// Create makes the veth with its pod end in the pod's namespace, configured and up. On
// error it removes what it made.
func (pi Pair) Create() (err error) {
	nsh, err := netns.GetFromPath(pi.Netns)
	if err != nil {
		return fmt.Errorf("pod network namespace %s: %w", pi.Netns, err)
	}
	defer nsh.Close()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = pi.Host, pi.MTU
	veth := &netlink.Veth{LinkAttrs: la, PeerName: pi.Peer, PeerNamespace: netlink.NsFd(int(nsh))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s/%s: %w", pi.Host, pi.Peer, err)
	}
	defer func() {
		if err != nil {
			_ = pi.Delete()
		}
	}()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	peer, err := h.LinkByName(pi.Peer)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", pi.Peer, err)
	}
	mac, _ := net.ParseMAC(pi.MAC)
	steps := []func() error{
		func() error { return h.LinkSetHardwareAddr(peer, mac) },
		func() error { return h.LinkSetMTU(peer, pi.MTU) },
		func() error {
			return h.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: pi.IP.Addr().AsSlice(), Mask: net.CIDRMask(pi.IP.Bits(), 32)}})
		},
		func() error { return h.LinkSetUp(peer) },
		func() error {
			return h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: pi.Gateway.AsSlice(),
				Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}})
		},
		func() error {
			if lo, err := h.LinkByName("lo"); err == nil {
				return h.LinkSetUp(lo)
			}
			return nil
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("configuring %s in %s: %w", pi.Peer, pi.Netns, err)
		}
	}
	if pi.NoOffload {
		if err := ns.WithNetNSPath(pi.Netns, func(ns.NetNS) error { return TxOffloadOff(pi.Peer) }); err != nil {
			return err
		}
		if err := TxOffloadOff(pi.Host); err != nil {
			return err
		}
	}
	host, err := netlink.LinkByName(pi.Host)
	if err != nil {
		return err
	}
	// With a bridge on the node's end, the node's kernel still sees the frames: were it to
	// answer the pod's ARP for its gateway (the gateway's address is the node's), the pod
	// would send to this end's MAC and the kernel would forward a second copy of each
	// packet itself. Without ARP here, only the bridge answers.
	if !pi.HostARP {
		if err := netlink.LinkSetARPOff(host); err != nil {
			return fmt.Errorf("ARP off on %s: %w", pi.Host, err)
		}
	}
	return netlink.LinkSetUp(host)
}

// Delete removes the veth (both ends). A missing one is no error.
func (pi Pair) Delete() error {
	link, err := netlink.LinkByName(pi.Host)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return netlink.LinkDel(link)
}

// Check reports whether the pod end exists in the pod's namespace with its address.
func (pi Pair) Check() error {
	if _, err := netlink.LinkByName(pi.Host); err != nil {
		return fmt.Errorf("host interface %s: %w", pi.Host, err)
	}
	nsh, err := netns.GetFromPath(pi.Netns)
	if err != nil {
		return fmt.Errorf("pod network namespace %s: %w", pi.Netns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	peer, err := h.LinkByName(pi.Peer)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", pi.Peer, err)
	}
	addrs, err := h.AddrList(peer, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == pi.IP.Addr() {
			return nil
		}
	}
	return fmt.Errorf("pod interface %s does not have %s", pi.Peer, pi.IP)
}

// TxOffloadOff turns transmit checksum offload (and with it segmentation offload) off, as
// `ethtool -K IF tx off` does.
func TxOffloadOff(ifname string) error {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.Change(ifname, map[string]bool{"tx-checksum-ip-generic": false}); err != nil {
		return fmt.Errorf("turning tx offload off on %s: %w", ifname, err)
	}
	return nil
}

// PodMAC derives a pod's MAC from its IPv4 address (0a:58 + the address, the convention
// other Kubernetes networks use), so it is stable and needs no storage.
func PodMAC(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// IPNet is a prefix as the netlink package takes it.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// LinkWithAddr is the interface that holds the node's address.
func LinkWithAddr(ip netip.Addr) (netlink.Link, error) {
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

// DeleteRoutes removes the node's IPv4 and IPv6 routes of one protocol (a driver's mark),
// in every table, and says how many went.
func DeleteRoutes(proto netlink.RouteProtocol) (int, error) {
	n := 0
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return n, err
		}
		for i := range routes {
			if err := netlink.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				return n, fmt.Errorf("route %s: %w", routes[i].Dst, err)
			}
			n++
		}
	}
	return n, nil
}
