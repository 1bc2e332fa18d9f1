package tunnel

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// PeerDevices names the devices of a driver that gives every peer its own device
// (wireguard, geneve): the first 7 characters of the tunnel's Interface and a hash of both
// ends' names, so that names are unique on the machine and recognisable after a restart.
type PeerDevices struct {
	Name      string // this end (Config.Name)
	Interface string // the stem (Config.Interface)
}

func (d PeerDevices) prefix() string {
	if len(d.Interface) > 7 {
		return d.Interface[:7]
	}
	return d.Interface
}

// DeviceName names the peer's device.
func (d PeerDevices) DeviceName(peer string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(d.Name + "|" + d.Interface + "|" + peer))
	return fmt.Sprintf("%s%08x", d.prefix(), h.Sum32())
}

// IsOurs says whether a link name is one of these devices could have.
func (d PeerDevices) IsOurs(name string) bool {
	p := d.prefix()
	if !strings.HasPrefix(name, p) || len(name) != len(p)+8 {
		return false
	}
	_, err := strconv.ParseUint(name[len(p):], 16, 32)
	return err == nil
}

// RemoveStrays deletes links of the given type (kernel devices outlive the process) that
// look like these devices but are not kept.
func (d PeerDevices) RemoveStrays(linkType string, keep map[string]bool) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		if n := l.Attrs().Name; l.Type() == linkType && d.IsOurs(n) && !keep[n] {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("removing stray device %s: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// SetUpLink gives a tunnel device its MTU and address (when valid), and brings it up; what
// already holds is left alone.
func SetUpLink(name string, mtu int, addr netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("MTU of %s: %w", name, err)
		}
	}
	if addr.IsValid() {
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: IPNet(addr)}); err != nil {
			return fmt.Errorf("address of %s: %w", name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("bringing %s up: %w", name, err)
		}
	}
	return nil
}
