// Package tunnel is the seam between weft-gateway and the tunnels it carries traffic in:
// one interface, drivers registered by name (wireguard now; geneve and vxlan follow), so the
// gateway never depends on how a tunnel is made.
package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
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
