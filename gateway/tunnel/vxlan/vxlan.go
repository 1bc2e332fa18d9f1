// Package vxlan is the VXLAN tunnel driver: one kernel VXLAN device carries traffic to every
// peer gateway, unencrypted (for clusters joined by a private network). VXLAN is a layer-2
// tunnel, so each peer's ranges are routed on-link through the peer's underlay address, whose
// neighbour entry holds a MAC derived from that address and whose forwarding entry sends that
// MAC to the peer; every end's device carries the MAC derived from its own address, so no
// learning or flooding is needed.
package vxlan

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/gateway/tunnel"
)

// Name is the driver's registry name.
const Name = "vxlan"

const (
	// DefaultPort is a port of its own (not 4789), so the gateways' tunnel never collides
	// with a node overlay that uses VXLAN.
	DefaultPort = 4800
	// DefaultVNI is the tunnel key between gateways.
	DefaultVNI = 0x57ef
	// DefaultMTU leaves room for VXLAN over IPv6 (70 bytes) on a 1500 link.
	DefaultMTU = 1430
)

// Register adds the driver to a registry.
func Register(r *tunnel.Registry) error {
	return r.Register(Name, func(cfg tunnel.Config) (tunnel.Tunnel, error) { return New(cfg) })
}

// Tunnel is a VXLAN device.
type Tunnel struct {
	cfg tunnel.Config
	mu  sync.Mutex
	// names of the peers by endpoint, for Status
	names map[netip.Addr]string
}

var _ tunnel.Tunnel = (*Tunnel)(nil)

// New checks the configuration. Nothing is created until Up.
func New(cfg tunnel.Config) (*Tunnel, error) {
	if !cfg.LocalIP.IsValid() {
		return nil, errors.New("vxlan: the local underlay address is not set")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = DefaultPort
	}
	if cfg.VNI == 0 {
		cfg.VNI = DefaultVNI
	}
	if cfg.VNI >= 1<<24 {
		return nil, fmt.Errorf("vxlan: VNI %d does not fit in 24 bits", cfg.VNI)
	}
	return &Tunnel{cfg: cfg}, nil
}

// MAC is the MAC address of the tunnel end at an underlay address.
func MAC(ip netip.Addr) net.HardwareAddr {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return net.HardwareAddr{0x0a, 0x57, b[0], b[1], b[2], b[3]}
	}
	h := sha256.Sum256(ip.AsSlice())
	return net.HardwareAddr{0x0a, 0x57, h[0], h[1], h[2], h[3]}
}

// PublicKey is empty: VXLAN has no keys.
func (t *Tunnel) PublicKey() string { return "" }

// Mode is always the kernel's.
func (t *Tunnel) Mode() string { return "vxlan/kernel" }

// Up creates the device if needed and configures it. See tunnel.Tunnel.
func (t *Tunnel) Up(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	name := t.cfg.Interface
	mac := MAC(t.cfg.LocalIP)
	link, err := netlink.LinkByName(name)
	if err == nil {
		v, ok := link.(*netlink.Vxlan)
		if !ok {
			return fmt.Errorf("vxlan: %s exists and is a %s device", name, link.Type())
		}
		if v.VxlanId != int(t.cfg.VNI) || v.Port != t.cfg.ListenPort || !v.SrcAddr.Equal(t.cfg.LocalIP.AsSlice()) {
			// Settings a VXLAN device cannot change in place: make it again.
			if err := netlink.LinkDel(link); err != nil {
				return fmt.Errorf("vxlan: replacing %s: %w", name, err)
			}
			link = nil
		}
	}
	if link == nil {
		v := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: t.cfg.MTU, HardwareAddr: mac},
			VxlanId: int(t.cfg.VNI), SrcAddr: t.cfg.LocalIP.AsSlice(), Port: t.cfg.ListenPort, Learning: false}
		if err := netlink.LinkAdd(v); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("vxlan: the kernel has no VXLAN support: %w", err)
			}
			return fmt.Errorf("vxlan: creating %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return err
		}
	}
	if link.Attrs().MTU != t.cfg.MTU {
		if err := netlink.LinkSetMTU(link, t.cfg.MTU); err != nil {
			return fmt.Errorf("vxlan: MTU of %s: %w", name, err)
		}
	}
	if link.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("vxlan: MAC of %s: %w", name, err)
		}
	}
	if t.cfg.Address.IsValid() {
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: tunnel.IPNet(t.cfg.Address)}); err != nil {
			return fmt.Errorf("vxlan: address of %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("vxlan: bringing %s up: %w", name, err)
	}
	return nil
}

// SetPeers replaces the peers: forwarding entries, neighbours and routes. See tunnel.Tunnel.
func (t *Tunnel) SetPeers(_ context.Context, peers []tunnel.Peer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	link, err := netlink.LinkByName(t.cfg.Interface)
	if err != nil {
		return fmt.Errorf("vxlan: %s: %w (is the tunnel up?)", t.cfg.Interface, err)
	}
	idx := link.Attrs().Index
	routes := map[netip.Prefix][]tunnel.NextHop{}
	endpoints := map[netip.Addr]bool{}
	names := map[netip.Addr]string{}
	for _, p := range peers {
		ep := p.Endpoint.Addr().Unmap()
		if !ep.IsValid() {
			return fmt.Errorf("vxlan: peer %s has no endpoint", p.Name)
		}
		if endpoints[ep] {
			return fmt.Errorf("vxlan: two peers at %s", ep)
		}
		endpoints[ep], names[ep] = true, p.Name
		if p.Standby {
			continue
		}
		for _, pre := range p.Prefixes {
			pre = pre.Masked()
			// Several peers with a prefix: a multipath route, one next hop per peer.
			routes[pre] = append(routes[pre], tunnel.NextHop{LinkIndex: idx, Via: ep})
		}
	}
	var errs []error
	for ep := range endpoints {
		mac := MAC(ep)
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: family(ep), State: netlink.NUD_PERMANENT,
			IP: ep.AsSlice(), HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s: %w", ep, err))
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, IP: ep.AsSlice(), HardwareAddr: mac}); err != nil {
			errs = append(errs, fmt.Errorf("forwarding entry for %s: %w", ep, err))
		}
	}
	errs = append(errs, t.removeStale(idx, endpoints))
	errs = append(errs, tunnel.SyncRoutes([]int{idx}, routes))
	t.names = names
	return errors.Join(errs...)
}

// removeStale deletes neighbours and forwarding entries of peers that are gone.
func (t *Tunnel) removeStale(idx int, endpoints map[netip.Addr]bool) error {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6, unix.AF_BRIDGE} {
		list, err := netlink.NeighList(idx, fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range list {
			ip, ok := netip.AddrFromSlice(n.IP)
			if fam == unix.AF_BRIDGE && n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			if ok && endpoints[ip.Unmap()] {
				continue
			}
			if fam != unix.AF_BRIDGE && n.State&netlink.NUD_PERMANENT == 0 {
				continue // the kernel's own entries
			}
			if err := netlink.NeighDel(&n); err != nil {
				errs = append(errs, fmt.Errorf("removing %v: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

func family(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// PeerPorts is nil: every peer sends to the one device's port. See tunnel.Tunnel.
func (t *Tunnel) PeerPorts() map[string]int { return nil }

// Status lists the peers' endpoints (VXLAN has no handshakes or per-peer counters).
func (t *Tunnel) Status(context.Context) ([]tunnel.PeerStatus, error) {
	link, err := netlink.LinkByName(t.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("vxlan: %s: %w", t.cfg.Interface, err)
	}
	list, err := netlink.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []tunnel.PeerStatus
	for _, n := range list {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && n.State&netlink.NUD_PERMANENT != 0 {
			t.mu.Lock()
			name := t.names[ip.Unmap()]
			t.mu.Unlock()
			out = append(out, tunnel.PeerStatus{Name: name, Device: t.cfg.Interface,
				Endpoint: netip.AddrPortFrom(ip.Unmap(), uint16(t.cfg.ListenPort))})
		}
	}
	return out, nil
}

// Close removes the device. See tunnel.Tunnel.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	link, err := netlink.LinkByName(t.cfg.Interface)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(link)
}
