package ovs

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

	"github.com/weft-net/weft/agent/datapath"
)

// hostIfName is the node-side veth name of a pod attachment: stable, unique, ≤ 15 bytes.
func hostIfName(key datapath.PodKey) string {
	sum := sha256.Sum256([]byte(key.ContainerID + "/" + key.IfName))
	return "w" + hex.EncodeToString(sum[:])[:11]
}

// podInterface is the veth of one pod attachment.
type podInterface struct {
	host, peer string // names: on the node, in the pod
	netns      string
	ip         netip.Prefix
	gateway    netip.Addr
	mac        string
	mtu        int
	noOffload  bool // the userspace datapath cannot tunnel offloaded packets
}

// create makes the veth with its pod end in the pod's namespace, configured and up. On
// error it removes what it made.
func (pi podInterface) create() (err error) {
	nsh, err := netns.GetFromPath(pi.netns)
	if err != nil {
		return fmt.Errorf("pod network namespace %s: %w", pi.netns, err)
	}
	defer nsh.Close()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = pi.host, pi.mtu
	veth := &netlink.Veth{LinkAttrs: la, PeerName: pi.peer, PeerNamespace: netlink.NsFd(int(nsh))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s/%s: %w", pi.host, pi.peer, err)
	}
	defer func() {
		if err != nil {
			_ = pi.delete()
		}
	}()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	peer, err := h.LinkByName(pi.peer)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", pi.peer, err)
	}
	mac, _ := net.ParseMAC(pi.mac)
	steps := []func() error{
		func() error { return h.LinkSetHardwareAddr(peer, mac) },
		func() error { return h.LinkSetMTU(peer, pi.mtu) },
		func() error {
			return h.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: pi.ip.Addr().AsSlice(), Mask: net.CIDRMask(pi.ip.Bits(), 32)}})
		},
		func() error { return h.LinkSetUp(peer) },
		func() error {
			return h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: pi.gateway.AsSlice(),
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
			return fmt.Errorf("configuring %s in %s: %w", pi.peer, pi.netns, err)
		}
	}
	if pi.noOffload {
		if err := ns.WithNetNSPath(pi.netns, func(ns.NetNS) error { return txOffloadOff(pi.peer) }); err != nil {
			return err
		}
		if err := txOffloadOff(pi.host); err != nil {
			return err
		}
	}
	host, err := netlink.LinkByName(pi.host)
	if err != nil {
		return err
	}
	// The bridge reads the node's end of the veth, but the node's kernel sees its frames
	// too: were it to answer the pod's ARP for its gateway (the gateway's address is the
	// node's), the pod would send to this end's MAC and the kernel would forward a second
	// copy of each packet itself. Without ARP here, only the bridge answers.
	if err := netlink.LinkSetARPOff(host); err != nil {
		return fmt.Errorf("ARP off on %s: %w", pi.host, err)
	}
	return netlink.LinkSetUp(host)
}

// delete removes the veth (both ends). A missing one is no error.
func (pi podInterface) delete() error {
	link, err := netlink.LinkByName(pi.host)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return netlink.LinkDel(link)
}

// check reports whether the pod end exists in the pod's namespace with its address.
func (pi podInterface) check() error {
	if _, err := netlink.LinkByName(pi.host); err != nil {
		return fmt.Errorf("host interface %s: %w", pi.host, err)
	}
	nsh, err := netns.GetFromPath(pi.netns)
	if err != nil {
		return fmt.Errorf("pod network namespace %s: %w", pi.netns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	peer, err := h.LinkByName(pi.peer)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", pi.peer, err)
	}
	addrs, err := h.AddrList(peer, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == pi.ip.Addr() {
			return nil
		}
	}
	return fmt.Errorf("pod interface %s does not have %s", pi.peer, pi.ip)
}

// txOffloadOff turns transmit checksum offload (and with it segmentation offload) off, as
// `ethtool -K IF tx off` does.
func txOffloadOff(ifname string) error {
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
