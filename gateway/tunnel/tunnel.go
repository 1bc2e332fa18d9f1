// Package tunnel is the seam between weft-gateway and the tunnels it carries traffic in:
// one interface, drivers registered by name (wireguard, vxlan, geneve), so the
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
	// Name says who this end is (cluster, gateway, installation); drivers with a device per
	// peer derive the devices' names from it and the peer's name.
	Name string
	// Interface is the tunnel device's name, or the stem of its devices' names for drivers
	// with a device per peer; it also names the private key file. Userspace WireGuard's
	// control socket lives in /var/run/wireguard/<name>.sock, shared by every network
	// namespace: names must be unique on the machine.
	Interface string
	// MTU of the tunnel device; 0 means 1420 (room for WireGuard over IPv4 and IPv6).
	MTU int
	// ListenPort is the UDP port peers send to; 0 picks one. Drivers with a device per peer
	// give each device its own port from ListenPort upwards (see Tunnel.PeerPorts).
	ListenPort int
	// Address, when set, is given to the device (weft-gateway gives its node's address, a
	// single-address prefix: with loose reverse-path filtering, a device without an address
	// drops what comes in by it from an address routed elsewhere — health probes, and
	// traffic from a peer gateway this end has on standby).
	Address netip.Prefix
	// StateDir keeps what must survive restarts and never leave the node (the private key).
	StateDir string
	// LocalIP is the underlay address this end sends from and peers send to (vxlan).
	LocalIP netip.Addr
	// VNI is the tunnel key (vxlan); 0 means the driver's default.
	VNI uint32
	// SegmentedOnly gives an embedded (userspace) device segmented packets only: the kernel
	// segments GSO packets before handing them over. wireguard-go lost GSO packets the
	// kernel forwarded from a VXLAN device (the eBPF datapath's, in a lab mixing it with
	// userspace OVS: unproven since, see TestForwardedBulkTCP); it costs about half the
	// device's throughput, so it is set only where the eBPF datapath encapsulates.
	SegmentedOnly bool
}

// Peer is the remote end: another cluster's gateway.
type Peer struct {
	// Name identifies the peer ("<cluster ID>/<node>"): stable while the peer lives.
	Name string
	// PublicKey identifies the peer (base64, as WireGuard prints it); drivers without keys
	// ignore it.
	PublicKey string
	// Endpoint is where the peer's gateway receives tunnel packets; the zero value leaves
	// the tunnel waiting for the peer to reach this end first.
	Endpoint netip.AddrPort
	// Prefixes are the remote ranges (pods, services) reached through this peer; the driver
	// routes them into the tunnel. Several peers may carry the same prefix (the gateways of
	// one cluster): flows to it are then spread across them by a hash of addresses and
	// ports.
	Prefixes []netip.Prefix
	// Unrouted are ranges packets to and from the peer carry in the tunnel without being
	// routed into it here: the peer's real ranges behind this cluster's aliases for them
	// (the gateway rewrites the destination after routing). Drivers that check addresses
	// in the tunnel (WireGuard's allowed IPs) accept them.
	Unrouted []netip.Prefix
	// Standby peers stay configured, and what they send is accepted, but nothing is routed
	// to them (a gateway that does not answer probes, or beyond the peer's maxActive).
	Standby bool
}

// PeerStatus is what the tunnel knows of a peer.
type PeerStatus struct {
	Name          string // the Peer's name, where the driver knows it
	Device        string // the device carrying the peer
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
	// PeerPorts gives, for drivers with a device per peer, the local UDP port each peer
	// (by name) must send to; nil when every peer sends to Config.ListenPort. The gateway
	// publishes it so that the peer knows.
	PeerPorts() map[string]int
	// Status reports every peer.
	Status(ctx context.Context) ([]PeerStatus, error)
	// Mode says how the tunnel runs ("wireguard/kernel", "wireguard/userspace").
	Mode() string
	// Close removes the device.
	Close() error
}

// PerPeerDevices is implemented by drivers that give every peer a device of its own
// (wireguard, geneve). What leaves by a peer's device reaches that peer only, through the
// tunnel, so weft-gateway probes each peer gateway's health through it (health.Target.Via):
// an answer proves the tunnel works both ways. For that the peer's endpoint address is let
// in and out of its device (WireGuard's allowed IPs) without being routed there.
type PerPeerDevices interface {
	// PeerDevice names the peer's device (which exists once SetPeers gave it the peer).
	PeerDevice(peer string) string
}

// KeyRotator is implemented by drivers whose ends have keys. A rotation is staged first (a
// new key pair, kept on the node beside the current one; peers learn its public key and
// when it takes over) and committed at that moment, on this end and on every peer at once.
type KeyRotator interface {
	// StageKey makes the key pair a rotation will switch to at `at`, unless the rotation
	// named id is already staged or done. Staged rotations survive restarts.
	StageKey(id string, at time.Time) error
	// Staged is the staged rotation, if any.
	Staged() (Rotation, bool)
	// CommitKey makes the staged key the tunnel's key, on every device, and starts
	// handshakes with it at once.
	CommitKey(ctx context.Context) error
	// LastRotation names the last committed rotation ("" for none).
	LastRotation() string
}

// Rotation is a staged key rotation.
type Rotation struct {
	ID        string    // what asked for it
	PublicKey string    // the key peers switch to
	At        time.Time // when
}

// RouteProtocol marks the routes tunnel drivers install, so each removes only its own.
const RouteProtocol = netlink.RouteProtocol(0x57) // 'W'

// NextHop is one way into a tunnel: a device and, for devices shared by several peers, the
// peer's address (on-link).
type NextHop struct {
	LinkIndex int
	Via       netip.Addr
	// Peer is the peer gateway's underlay address: next hops are listed in its order, the
	// same on every gateway and node (see fabricv1.MultipathHashSeed).
	Peer netip.Addr
}

// SyncRoutes makes the routes into the given links exactly want: each prefix through its
// next hops (several: equal-cost, flows spread by the kernel's multipath hash). Routes of
// other owners (another protocol, or no owned link) are left alone.
func SyncRoutes(links []int, want map[netip.Prefix][]NextHop) error {
	owned := map[int]bool{}
	for _, l := range links {
		owned[l] = true
	}
	var errs []error
	for pre, hops := range want {
		if len(hops) == 0 {
			continue
		}
		if err := netlink.RouteReplace(route(pre, hops)); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", pre, err))
		}
	}
	have, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range have {
		if r.Dst == nil || !routeUses(r, owned) {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if hops := want[netip.PrefixFrom(addr.Unmap(), ones)]; ok && len(hops) > 0 {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("removing route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

func route(pre netip.Prefix, hops []NextHop) *netlink.Route {
	sorted := append([]NextHop(nil), hops...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Peer != sorted[j].Peer {
			return sorted[i].Peer.Less(sorted[j].Peer)
		}
		if sorted[i].Via != sorted[j].Via {
			return sorted[i].Via.Less(sorted[j].Via)
		}
		return sorted[i].LinkIndex < sorted[j].LinkIndex
	})
	r := &netlink.Route{Dst: IPNet(pre), Protocol: RouteProtocol}
	if len(sorted) == 1 {
		h := sorted[0]
		r.LinkIndex, r.Scope = h.LinkIndex, netlink.SCOPE_LINK
		if h.Via.IsValid() {
			r.Gw, r.Scope, r.Flags = h.Via.AsSlice(), netlink.SCOPE_UNIVERSE, int(netlink.FLAG_ONLINK)
		}
		return r
	}
	for _, h := range sorted {
		nh := &netlink.NexthopInfo{LinkIndex: h.LinkIndex}
		if h.Via.IsValid() {
			nh.Gw, nh.Flags = h.Via.AsSlice(), int(netlink.FLAG_ONLINK)
		}
		r.MultiPath = append(r.MultiPath, nh)
	}
	return r
}

// routeUses says whether a route leaves through one of the links.
func routeUses(r netlink.Route, links map[int]bool) bool {
	if links[r.LinkIndex] {
		return true
	}
	for _, nh := range r.MultiPath {
		if links[nh.LinkIndex] {
			return true
		}
	}
	return false
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
