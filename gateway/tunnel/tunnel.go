// Package tunnel is the seam between weft-gateway and the tunnels it carries traffic in:
// one interface, drivers registered by name (wireguard now; geneve and vxlan follow), so the
// gateway never depends on how a tunnel is made.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// Config describes the local end of a tunnel.
type Config struct {
	// Interface is the tunnel device's name. Userspace WireGuard's control socket lives in
	// /var/run/wireguard/<name>.sock, shared by every network namespace: names must be
	// unique on the machine.
	Interface string
	// MTU of the tunnel device; 0 means 1420 (room for WireGuard over IPv4 and IPv6).
	MTU int
	// ListenPort is the UDP port peers send to; 0 picks one.
	ListenPort int
	// Address, when set, is given to the device (the gateway's own address in the tunnel).
	Address netip.Prefix
	// StateDir keeps what must survive restarts and never leave the node (the private key).
	StateDir string
	// LocalIP is the underlay address this end sends from and peers send to (vxlan).
	LocalIP netip.Addr
	// VNI is the tunnel key (vxlan); 0 means the driver's default.
	VNI uint32
}

// Peer is the remote end: another cluster's gateway.
type Peer struct {
	// Name says who this is in messages (cluster and gateway).
	Name string
	// PublicKey identifies the peer (base64, as WireGuard prints it); drivers without keys
	// ignore it.
	PublicKey string
	// Endpoint is where the peer's gateway receives tunnel packets.
	Endpoint netip.AddrPort
	// Prefixes are the remote ranges (pods, services) reached through this peer; the driver
	// routes them into the tunnel.
	Prefixes []netip.Prefix
}

// PeerStatus is what the tunnel knows of a peer.
type PeerStatus struct {
	PublicKey     string
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero: none yet (or the driver has no handshakes)
	RxBytes       int64
	TxBytes       int64
}

// Tunnel is one tunnel device and its peers.
type Tunnel interface {
	// Up creates the device (or adopts the one a previous run left), gives it its key,
	// port, MTU and address, and brings it up. Repeating it changes nothing.
	Up(ctx context.Context) error
	// PublicKey is what peers need to reach this end; "" for drivers without keys.
	PublicKey() string
	// SetPeers makes the peers, and the routes into the tunnel, exactly these.
	SetPeers(ctx context.Context, peers []Peer) error
	// Status reports every peer.
	Status(ctx context.Context) ([]PeerStatus, error)
	// Mode says how the tunnel runs ("wireguard/kernel", "wireguard/userspace").
	Mode() string
	// Close removes the device.
	Close() error
}

// RouteProtocol marks the routes tunnel drivers install, so each removes only its own.
const RouteProtocol = netlink.RouteProtocol(0x57) // 'W'

// SyncRoutes routes exactly the wanted prefixes into the link, each through its next hop
// (on-link) or, with none, directly; routes of other owners are left alone.
func SyncRoutes(link netlink.Link, want map[netip.Prefix]netip.Addr) error {
	var errs []error
	for pre, via := range want {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: IPNet(pre), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}
		if via.IsValid() {
			r.Gw, r.Scope, r.Flags = via.AsSlice(), netlink.SCOPE_UNIVERSE, int(netlink.FLAG_ONLINK)
		}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", pre, err))
		}
	}
	have, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Protocol: RouteProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if _, wanted := want[netip.PrefixFrom(addr.Unmap(), ones)]; ok && wanted {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

// IPNet converts a prefix for netlink.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Factory makes a driver's tunnel.
type Factory func(Config) (Tunnel, error)

// Registry maps driver names to factories.
type Registry struct{ factories map[string]Factory }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// Register adds a driver; a name can be registered once.
func (r *Registry) Register(name string, f Factory) error {
	if _, dup := r.factories[name]; dup {
		return fmt.Errorf("tunnel driver %q is already registered", name)
	}
	r.factories[name] = f
	return nil
}

// New makes a tunnel with the named driver.
func (r *Registry) New(name string, cfg Config) (Tunnel, error) {
	f, ok := r.factories[name]
	if !ok {
		return nil, fmt.Errorf("unknown tunnel driver %q (known: %s)", name, strings.Join(r.Names(), ", "))
	}
	if cfg.Interface == "" || len(cfg.Interface) > 15 {
		return nil, fmt.Errorf("tunnel interface name %q: must be 1 to 15 characters", cfg.Interface)
	}
	return f(cfg)
}

// Names lists the registered drivers, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.factories))
	for n := range r.factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
