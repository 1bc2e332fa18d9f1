// Package wireguard is the WireGuard tunnel driver. It uses the kernel's WireGuard where the
// module is present and otherwise runs embedded userspace devices (golang.zx2c4.com/
// wireguard) in the gateway process; both are configured the same way, through wgctrl (the
// userspace device over its UAPI socket), so there is one configuration path. The private
// key is generated on the node, kept in the state directory and never leaves it.
//
// Every peer gets its own device (and UDP port). WireGuard accepts a packet only from the
// peer whose allowed ranges hold its source, and one device can give a range to one peer
// only; but all gateways of a peer cluster carry the same ranges, and each of them must be
// able to send to any of this cluster's gateways. A device per peer lets every gateway
// accept from every peer gateway, and lets the kernel spread flows across the peer's
// gateways with an equal-cost multipath route over their devices.
package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/internal/statefile"
)

// Name is the driver's registry name.
const Name = "wireguard"

// DefaultMTU leaves room for WireGuard's 80 bytes over IPv6 (60 over IPv4) on a 1500 link.
const DefaultMTU = 1420

// keepalive keeps NAT mappings open and lets each side see the other alive.
const keepalive = 10 * time.Second

// Register adds the driver to a registry.
func Register(r *tunnel.Registry) error {
	return r.Register(Name, func(cfg tunnel.Config) (tunnel.Tunnel, error) { return New(cfg) })
}

// Tunnel is the WireGuard devices of one gateway: one per peer, all with the same key.
type Tunnel struct {
	cfg tunnel.Config
	key wgtypes.Key
	// next is a staged key rotation (nil: none); rotated names the last one committed.
	next    *staged
	rotated string

	mu     sync.Mutex
	kernel bool
	probed bool
	devs   map[string]*wgDevice // by peer name
	ports  map[string]int       // by peer name; kept in the state directory
}

// wgDevice is one peer's device.
type wgDevice struct {
	name    string
	key     wgtypes.Key    // its private key (the tunnel's, once configured)
	peer    wgtypes.Key    // the peer configured on it
	port    int            // the port it listens on (0: not configured yet)
	applied string         // what was last configured (port, peer, endpoint, ranges)
	dev     *device.Device // userspace only
	uapi    net.Listener   // userspace only
}

var _ tunnel.Tunnel = (*Tunnel)(nil)

// New loads (or generates and stores) the tunnel's key. Nothing is created until Up.
func New(cfg tunnel.Config) (*Tunnel, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.StateDir == "" {
		return nil, errors.New("wireguard: the state directory (for the private key) is not set")
	}
	t := &Tunnel{cfg: cfg, devs: map[string]*wgDevice{}}
	if err := t.loadRotation(time.Now()); err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(t.keyFile())
	if err != nil {
		return nil, err
	}
	t.key = key
	return t, nil
}

func (t *Tunnel) keyFile() string  { return filepath.Join(t.cfg.StateDir, t.cfg.Interface+".key") }
func (t *Tunnel) nextFile() string { return filepath.Join(t.cfg.StateDir, t.cfg.Interface+".next") }
func (t *Tunnel) rotatedFile() string {
	return filepath.Join(t.cfg.StateDir, t.cfg.Interface+".rotated")
}

// staged is a key rotation kept in the state directory until it is committed.
type staged struct {
	ID  string      `json:"id"`
	Key wgtypes.Key `json:"key"`
	At  time.Time   `json:"at"`
}

// loadRotation reads the last committed rotation and the staged one; a staged rotation
// whose time has passed (the gateway was down when it came) is committed now, so that the
// key matches what the peers switched to.
func (t *Tunnel) loadRotation(now time.Time) error {
	if data, err := os.ReadFile(t.rotatedFile()); err == nil {
		t.rotated = string(trimSpace(data))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	data, err := os.ReadFile(t.nextFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	next := &staged{}
	if err := json.Unmarshal(data, next); err != nil {
		return fmt.Errorf("wireguard: %s: %w", t.nextFile(), err)
	}
	t.next = next
	if !now.Before(next.At) {
		return t.promote()
	}
	return nil
}

// promote makes the staged key the current one on disk: the rotation is recorded as done,
// then the key file replaced, then the staged file removed; a crash between the steps
// leaves a staged rotation whose time has passed, which the next start promotes again.
func (t *Tunnel) promote() error {
	if err := statefile.Private(t.rotatedFile(), []byte(t.next.ID+"\n")); err != nil {
		return err
	}
	if err := statefile.Private(t.keyFile(), []byte(t.next.Key.String()+"\n")); err != nil {
		return err
	}
	if err := os.Remove(t.nextFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	t.key, t.rotated, t.next = t.next.Key, t.next.ID, nil
	return nil
}

// StageKey makes the key pair the tunnel switches to at `at`. See tunnel.KeyRotator.
func (t *Tunnel) StageKey(id string, at time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id == "" {
		return errors.New("wireguard: a key rotation needs a name")
	}
	if id == t.rotated || (t.next != nil && t.next.ID == id) {
		return nil
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return err
	}
	next := &staged{ID: id, Key: key, At: at.UTC()}
	data, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if err := statefile.Private(t.nextFile(), data); err != nil {
		return err
	}
	t.next = next
	return nil
}

// Staged is the staged rotation. See tunnel.KeyRotator.
func (t *Tunnel) Staged() (tunnel.Rotation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next == nil {
		return tunnel.Rotation{}, false
	}
	return tunnel.Rotation{ID: t.next.ID, PublicKey: t.next.Key.PublicKey().String(), At: t.next.At}, true
}

// LastRotation names the last committed rotation. See tunnel.KeyRotator.
func (t *Tunnel) LastRotation() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rotated
}

// CommitKey switches every device to the staged key and has each start a handshake with
// it at once (the peers switch at the same moment; whichever end switches last completes
// the handshake). See tunnel.KeyRotator.
func (t *Tunnel) CommitKey(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next == nil {
		return nil
	}
	if err := t.promote(); err != nil {
		return err
	}
	c, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("wireguard: opening wgctrl: %w", err)
	}
	defer c.Close()
	var errs []error
	for _, d := range t.devs {
		if d.port == 0 {
			continue // not configured yet: SetPeers gives it the new key
		}
		cfg := wgtypes.Config{PrivateKey: &t.key}
		if d.peer != (wgtypes.Key{}) {
			cfg.Peers = kick(d.peer)
		}
		if err := c.ConfigureDevice(d.name, cfg); err != nil {
			errs = append(errs, fmt.Errorf("wireguard: new key on %s: %w", d.name, err))
			continue
		}
		d.key = t.key
	}
	return errors.Join(errs...)
}

// kick makes a device send a keepalive to a peer at once, which starts a handshake when
// there is no session: the keepalive interval set from zero to non-zero sends one (both in
// the kernel and in wireguard-go).
func kick(peer wgtypes.Key) []wgtypes.PeerConfig {
	return []wgtypes.PeerConfig{
		{PublicKey: peer, UpdateOnly: true, PersistentKeepaliveInterval: ptr(time.Duration(0))},
		{PublicKey: peer, UpdateOnly: true, PersistentKeepaliveInterval: ptr(keepalive)},
	}
}

// loadOrCreateKey reads the private key, or creates one readable by root only. The file is
// written aside and renamed, so a crash never leaves half a key.
func loadOrCreateKey(path string) (wgtypes.Key, error) {
	if data, err := os.ReadFile(path); err == nil {
		k, err := wgtypes.ParseKey(string(trimSpace(data)))
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("wireguard: %s does not hold a key: %w", path, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, err
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	if err := statefile.Private(path, []byte(k.String()+"\n")); err != nil {
		return wgtypes.Key{}, err
	}
	return k, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// PublicKey is the key peers configure for this end.
func (t *Tunnel) PublicKey() string { return t.key.PublicKey().String() }

// Mode says whether the kernel or the embedded devices carry the tunnel.
func (t *Tunnel) Mode() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kernel {
		return "wireguard/kernel"
	}
	return "wireguard/userspace"
}

// Up finds out whether the kernel has WireGuard, loads the peers' ports, and removes
// devices a previous run left for peers this one does not know (kernel devices outlive the
// process). Devices are made by SetPeers. Repeating it changes nothing.
func (t *Tunnel) Up(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.probed {
		probe := t.cfg.Interface
		if l, err := netlink.LinkByName(probe); err == nil {
			if l.Type() != "wireguard" {
				return fmt.Errorf("wireguard: %s exists and is a %s device, not WireGuard", probe, l.Type())
			}
			_ = netlink.LinkDel(l) // a device of an earlier version; peers get their own now
		}
		err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: probe}})
		switch {
		case err == nil:
			t.kernel = true
			_ = netlink.LinkDel(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: probe}})
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP):
			t.kernel = false
		default:
			return fmt.Errorf("wireguard: probing for the kernel module with %s: %w", probe, err)
		}
		ports, err := t.loadPorts()
		if err != nil {
			return err
		}
		t.ports, t.probed = ports, true
	}
	return t.removeStrays()
}

func (t *Tunnel) portsFile() string { return filepath.Join(t.cfg.StateDir, t.cfg.Interface+".ports") }

// loadPorts reads the ports peers were given, so a restarted gateway listens where its
// peers already send.
func (t *Tunnel) loadPorts() (map[string]int, error) {
	ports := map[string]int{}
	data, err := os.ReadFile(t.portsFile())
	if errors.Is(err, os.ErrNotExist) {
		return ports, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &ports); err != nil {
		return nil, fmt.Errorf("wireguard: %s: %w", t.portsFile(), err)
	}
	return ports, nil
}

func (t *Tunnel) savePorts() error {
	data, err := json.Marshal(t.ports)
	if err != nil {
		return err
	}
	return statefile.Private(t.portsFile(), data)
}

// removeStrays deletes kernel devices that look like this tunnel's but belong to no peer.
func (t *Tunnel) removeStrays() error {
	mine := map[string]bool{}
	for _, d := range t.devs {
		mine[d.name] = true
	}
	if err := t.names().RemoveStrays("wireguard", mine); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	return nil
}

// names names the per-peer devices.
func (t *Tunnel) names() tunnel.PeerDevices {
	return tunnel.PeerDevices{Name: t.cfg.Name, Interface: t.cfg.Interface}
}

// PeerDevice names the peer's device. See tunnel.PerPeerDevices.
func (t *Tunnel) PeerDevice(peer string) string { return t.names().DeviceName(peer) }

// port gives the peer's device its port: the one it had, or the lowest free one from
// ListenPort (0: the kernel picks, read back after configuring).
func (t *Tunnel) port(peer string) int {
	if p, ok := t.ports[peer]; ok {
		return p
	}
	if t.cfg.ListenPort == 0 {
		return 0
	}
	used := map[int]bool{}
	for _, p := range t.ports {
		used[p] = true
	}
	p := t.cfg.ListenPort
	for used[p] {
		p++
	}
	return p
}

// ensureDevice makes the peer's device (kernel, or else embedded with its UAPI socket).
func (t *Tunnel) ensureDevice(peer string) (*wgDevice, error) {
	if d := t.devs[peer]; d != nil {
		return d, nil
	}
	name := t.names().DeviceName(peer)
	if !t.kernel {
		tdev, err := tun.CreateTUN(name, t.cfg.MTU)
		if err != nil {
			return nil, fmt.Errorf("wireguard: creating the userspace device %s: %w", name, err)
		}
		if t.cfg.SegmentedOnly {
			if err := noSegmentationOffload(tdev); err != nil {
				tdev.Close()
				return nil, fmt.Errorf("wireguard: device %s: %w", name, err)
			}
		}
		dev := device.NewDevice(tdev, conn.NewDefaultBind(), deviceLogger(name))
		file, err := ipc.UAPIOpen(name)
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("wireguard: control socket of %s: %w", name, err)
		}
		uapi, err := ipc.UAPIListen(name, file)
		if err != nil {
			file.Close()
			dev.Close()
			return nil, fmt.Errorf("wireguard: control socket of %s: %w", name, err)
		}
		go func() {
			for {
				c, err := uapi.Accept()
				if err != nil {
					return
				}
				go dev.IpcHandle(c)
			}
		}()
		d := &wgDevice{name: name, dev: dev, uapi: uapi}
		t.devs[peer] = d
		return d, nil
	}
	if l, err := netlink.LinkByName(name); err == nil && l.Type() != "wireguard" {
		return nil, fmt.Errorf("wireguard: %s exists and is a %s device, not WireGuard", name, l.Type())
	} else if err != nil {
		if err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: t.cfg.MTU}}); err != nil {
			return nil, fmt.Errorf("wireguard: creating %s: %w", name, err)
		}
	}
	d := &wgDevice{name: name}
	t.devs[peer] = d
	return d, nil
}

// configure brings a peer's device up with its MTU and address, then gives it its key, port
// and peer (keeping the peer's session when only its ranges or endpoint change). A device
// whose configuration is unchanged is left alone: setting the port again makes the
// userspace device reopen its socket, dropping what is in flight.
func (t *Tunnel) configure(c *wgctrl.Client, d *wgDevice, p tunnel.Peer, key wgtypes.Key, port int) (int, error) {
	if d.applied != "" && d.key == t.key && d.applied == fmt.Sprint(port, key, p.Endpoint, p.Prefixes, p.Unrouted) {
		return port, nil
	}
	cfg := wgtypes.Config{}
	if d.port == 0 || d.port != port {
		cfg.ListenPort = &port
	}
	rekeyed := d.key != t.key && d.port != 0
	if d.key != t.key {
		cfg.PrivateKey = &t.key
	}
	pc := wgtypes.PeerConfig{PublicKey: key, ReplaceAllowedIPs: true, PersistentKeepaliveInterval: ptr(keepalive)}
	if p.Endpoint.IsValid() && p.Endpoint.Port() != 0 {
		pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
	}
	for _, pre := range append(slices.Clone(p.Prefixes), p.Unrouted...) {
		pc.AllowedIPs = append(pc.AllowedIPs, *tunnel.IPNet(pre.Masked()))
	}
	if a := p.Endpoint.Addr().Unmap(); a.IsValid() {
		// Health probes through the tunnel (tunnel.PerPeerDevices); not routed here.
		pc.AllowedIPs = append(pc.AllowedIPs, *tunnel.IPNet(netip.PrefixFrom(a, a.BitLen())))
	}
	if d.peer != (wgtypes.Key{}) && d.peer != key {
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: d.peer, Remove: true}) // the peer's key changed
	}
	cfg.Peers = append(cfg.Peers, pc)
	if rekeyed && d.peer == key {
		cfg.Peers = append(cfg.Peers, kick(key)...)
	}
	// Up before the peer is given: a peer's packets may come at once, and the userspace
	// device cannot hand them to a TUN device that is down (EIO, logged as an error).
	if err := tunnel.SetUpLink(d.name, t.cfg.MTU, t.cfg.Address); err != nil {
		return 0, fmt.Errorf("wireguard: %w", err)
	}
	if err := c.ConfigureDevice(d.name, cfg); err != nil {
		return 0, fmt.Errorf("wireguard: configuring %s for peer %s: %w", d.name, p.Name, err)
	}
	d.peer, d.key = key, t.key
	if port == 0 {
		got, err := c.Device(d.name)
		if err != nil {
			return 0, fmt.Errorf("wireguard: reading %s: %w", d.name, err)
		}
		port = got.ListenPort
	}
	d.port, d.applied = port, fmt.Sprint(port, key, p.Endpoint, p.Prefixes, p.Unrouted)
	return port, nil
}

// SetPeers gives each peer its device, removes the devices of peers that are gone, and
// routes each prefix over the devices of the active peers that carry it. See tunnel.Tunnel.
func (t *Tunnel) SetPeers(ctx context.Context, peers []tunnel.Peer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.probed {
		return errors.New("wireguard: SetPeers before Up")
	}
	keys := make([]wgtypes.Key, len(peers))
	seen := map[string]bool{}
	for i, p := range peers {
		if p.Name == "" || seen[p.Name] {
			return fmt.Errorf("wireguard: peer names must be set and unique (%q)", p.Name)
		}
		seen[p.Name] = true
		key, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			return fmt.Errorf("wireguard: peer %s: public key %q: %w", p.Name, p.PublicKey, err)
		}
		keys[i] = key
	}
	c, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("wireguard: opening wgctrl: %w", err)
	}
	defer c.Close()
	var errs []error
	portsChanged := false
	want := map[netip.Prefix][]tunnel.NextHop{}
	for i, p := range peers {
		d, err := t.ensureDevice(p.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		port, err := t.configure(c, d, p, keys[i], t.port(p.Name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t.ports[p.Name] != port {
			t.ports[p.Name], portsChanged = port, true
		}
		if p.Standby {
			continue
		}
		link, err := netlink.LinkByName(d.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, pre := range p.Prefixes {
			want[pre.Masked()] = append(want[pre.Masked()], tunnel.NextHop{LinkIndex: link.Attrs().Index, Peer: p.Endpoint.Addr()})
		}
	}
	for name, d := range t.devs {
		if !seen[name] {
			if err := t.closeDevice(d); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(t.devs, name)
		}
	}
	for name := range t.ports {
		if !seen[name] {
			delete(t.ports, name)
			portsChanged = true
		}
	}
	if portsChanged {
		errs = append(errs, t.savePorts())
	}
	var links []int
	for _, d := range t.devs {
		if l, err := netlink.LinkByName(d.name); err == nil {
			links = append(links, l.Attrs().Index)
		}
	}
	errs = append(errs, tunnel.SyncRoutes(links, want))
	return errors.Join(errs...)
}

// PeerPorts gives the port each peer's device listens on. See tunnel.Tunnel.
func (t *Tunnel) PeerPorts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int{}
	for name := range t.devs {
		if p, ok := t.ports[name]; ok {
			out[name] = p
		}
	}
	return out
}

// Status reports every peer. See tunnel.Tunnel.
func (t *Tunnel) Status(ctx context.Context) ([]tunnel.PeerStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wireguard: opening wgctrl: %w", err)
	}
	defer c.Close()
	names := make([]string, 0, len(t.devs))
	for name := range t.devs {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []tunnel.PeerStatus
	var errs []error
	for _, name := range names {
		d, err := c.Device(t.devs[name].name)
		if err != nil {
			errs = append(errs, fmt.Errorf("wireguard: reading %s: %w", t.devs[name].name, err))
			continue
		}
		for _, p := range d.Peers {
			s := tunnel.PeerStatus{Name: name, Device: d.Name, PublicKey: p.PublicKey.String(), LastHandshake: p.LastHandshakeTime,
				RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
			if p.Endpoint != nil {
				ap := p.Endpoint.AddrPort()
				s.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			}
			out = append(out, s)
		}
	}
	return out, errors.Join(errs...)
}

func (t *Tunnel) closeDevice(d *wgDevice) error {
	if d.dev != nil {
		_ = d.uapi.Close()
		d.dev.Close() // closes the TUN device, which removes the link
		return nil
	}
	if l, err := netlink.LinkByName(d.name); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("wireguard: removing %s: %w", d.name, err)
		}
	}
	return nil
}

// Close removes every device. See tunnel.Tunnel.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for name, d := range t.devs {
		errs = append(errs, t.closeDevice(d))
		delete(t.devs, name)
	}
	return errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }

// logLevel of the embedded devices: errors, or every handshake and keepalive with
// WEFT_WIREGUARD_VERBOSE=1 in the gateway's environment.
// deviceLogger is wireguard-go's logger for an embedded device: errors to stderr, verbose
// lines with WEFT_WIREGUARD_VERBOSE=1. "No known endpoint for peer" is not an error here: a
// tunnel whose peer has not published its port waits, by design, for the peer to reach this
// end first (its handshakes meanwhile have nowhere to go), so it is logged as verbose.
func deviceLogger(name string) *device.Logger {
	l := device.NewLogger(logLevel(), "wireguard "+name+": ")
	errorf := l.Errorf
	l.Errorf = func(format string, args ...any) {
		if strings.Contains(fmt.Sprintf(format, args...), "no known endpoint for peer") {
			l.Verbosef(format, args...)
			return
		}
		errorf(format, args...)
	}
	return l
}

func logLevel() int {
	if os.Getenv("WEFT_WIREGUARD_VERBOSE") == "1" {
		return device.LogLevelVerbose
	}
	return device.LogLevelError
}

// noSegmentationOffload stops the kernel from handing the embedded device unsegmented TCP
// (GSO) packets (tunnel.Config.SegmentedOnly): wireguard-go drops some of those — packets
// forwarded from a VXLAN device (the eBPF datapath's), whose bulk transfers then stalled —
// so the kernel segments them first. Checksum offload stays; packets wireguard-go writes are
// unaffected.
func noSegmentationOffload(tdev tun.Device) error {
	f := tdev.File()
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("turning segmentation offload off: %w", serr)
	}
	return nil
}
