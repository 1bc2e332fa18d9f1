// Package wireguard is the WireGuard tunnel driver. It uses the kernel's WireGuard where the
// module is present and otherwise runs an embedded userspace device (golang.zx2c4.com/
// wireguard) in the gateway process; both are configured the same way, through wgctrl (the
// userspace device over its UAPI socket), so there is one configuration path. The private
// key is generated on the node, kept in the state directory and never leaves it.
package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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

// Tunnel is a WireGuard device.
type Tunnel struct {
	cfg tunnel.Config
	key wgtypes.Key

	mu     sync.Mutex
	kernel bool
	dev    *device.Device // userspace only
	uapi   net.Listener   // userspace only
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
	key, err := loadOrCreateKey(filepath.Join(cfg.StateDir, cfg.Interface+".key"))
	if err != nil {
		return nil, err
	}
	return &Tunnel{cfg: cfg, key: key}, nil
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
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return wgtypes.Key{}, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
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

// Mode says whether the kernel or the embedded device carries the tunnel.
func (t *Tunnel) Mode() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kernel {
		return "wireguard/kernel"
	}
	return "wireguard/userspace"
}

// Up creates the device if needed and configures it. See tunnel.Tunnel.
func (t *Tunnel) Up(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.ensureDevice(); err != nil {
		return err
	}
	link, err := netlink.LinkByName(t.cfg.Interface)
	if err != nil {
		return fmt.Errorf("wireguard: %s: %w", t.cfg.Interface, err)
	}
	c, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("wireguard: opening wgctrl: %w", err)
	}
	defer c.Close()
	cfg := wgtypes.Config{PrivateKey: &t.key}
	if t.cfg.ListenPort != 0 {
		cfg.ListenPort = &t.cfg.ListenPort
	}
	if err := c.ConfigureDevice(t.cfg.Interface, cfg); err != nil {
		return fmt.Errorf("wireguard: configuring %s: %w", t.cfg.Interface, err)
	}
	if link.Attrs().MTU != t.cfg.MTU {
		if err := netlink.LinkSetMTU(link, t.cfg.MTU); err != nil {
			return fmt.Errorf("wireguard: MTU of %s: %w", t.cfg.Interface, err)
		}
	}
	if t.cfg.Address.IsValid() {
		addr := &netlink.Addr{IPNet: tunnel.IPNet(t.cfg.Address)}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("wireguard: address of %s: %w", t.cfg.Interface, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("wireguard: bringing %s up: %w", t.cfg.Interface, err)
	}
	return nil
}

// ensureDevice makes the kernel device, or else the embedded one with its UAPI socket.
func (t *Tunnel) ensureDevice() error {
	if t.dev != nil {
		return nil
	}
	if l, err := netlink.LinkByName(t.cfg.Interface); err == nil {
		if l.Type() == "wireguard" {
			t.kernel = true
			return nil
		}
		return fmt.Errorf("wireguard: %s exists and is a %s device, not WireGuard", t.cfg.Interface, l.Type())
	}
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: t.cfg.Interface, MTU: t.cfg.MTU}})
	if err == nil {
		t.kernel = true
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("wireguard: creating %s: %w", t.cfg.Interface, err)
	}
	// No kernel module: the embedded device.
	tdev, err := tun.CreateTUN(t.cfg.Interface, t.cfg.MTU)
	if err != nil {
		return fmt.Errorf("wireguard: creating the userspace device %s: %w", t.cfg.Interface, err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wireguard "+t.cfg.Interface+": "))
	file, err := ipc.UAPIOpen(t.cfg.Interface)
	if err != nil {
		dev.Close()
		return fmt.Errorf("wireguard: control socket of %s: %w", t.cfg.Interface, err)
	}
	uapi, err := ipc.UAPIListen(t.cfg.Interface, file)
	if err != nil {
		file.Close()
		dev.Close()
		return fmt.Errorf("wireguard: control socket of %s: %w", t.cfg.Interface, err)
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
	t.dev, t.uapi, t.kernel = dev, uapi, false
	return nil
}

// SetPeers replaces the peers and the routes into the tunnel. See tunnel.Tunnel.
func (t *Tunnel) SetPeers(ctx context.Context, peers []tunnel.Peer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	link, err := netlink.LinkByName(t.cfg.Interface)
	if err != nil {
		return fmt.Errorf("wireguard: %s: %w (is the tunnel up?)", t.cfg.Interface, err)
	}
	cfg := wgtypes.Config{ReplacePeers: true}
	want := map[netip.Prefix]netip.Addr{}
	for _, p := range peers {
		key, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			return fmt.Errorf("wireguard: peer %s: public key %q: %w", p.Name, p.PublicKey, err)
		}
		pc := wgtypes.PeerConfig{PublicKey: key, ReplaceAllowedIPs: true, PersistentKeepaliveInterval: ptr(keepalive)}
		if p.Endpoint.IsValid() {
			pc.Endpoint = net.UDPAddrFromAddrPort(p.Endpoint)
		}
		for _, pre := range p.Prefixes {
			pre = pre.Masked()
			if _, dup := want[pre]; dup {
				return fmt.Errorf("wireguard: %s is given to two peers", pre)
			}
			want[pre] = netip.Addr{} // directly into the device
			pc.AllowedIPs = append(pc.AllowedIPs, *tunnel.IPNet(pre))
		}
		cfg.Peers = append(cfg.Peers, pc)
	}
	c, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("wireguard: opening wgctrl: %w", err)
	}
	defer c.Close()
	if err := c.ConfigureDevice(t.cfg.Interface, cfg); err != nil {
		return fmt.Errorf("wireguard: configuring peers of %s: %w", t.cfg.Interface, err)
	}
	return tunnel.SyncRoutes(link, want)
}

// Status reports every peer. See tunnel.Tunnel.
func (t *Tunnel) Status(ctx context.Context) ([]tunnel.PeerStatus, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wireguard: opening wgctrl: %w", err)
	}
	defer c.Close()
	d, err := c.Device(t.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("wireguard: reading %s: %w", t.cfg.Interface, err)
	}
	out := make([]tunnel.PeerStatus, 0, len(d.Peers))
	for _, p := range d.Peers {
		s := tunnel.PeerStatus{PublicKey: p.PublicKey.String(), LastHandshake: p.LastHandshakeTime,
			RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if p.Endpoint != nil {
			ap := p.Endpoint.AddrPort()
			s.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		out = append(out, s)
	}
	return out, nil
}

// Close removes the device. See tunnel.Tunnel.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dev != nil {
		_ = t.uapi.Close()
		t.dev.Close() // closes the TUN device, which removes the link
		t.dev, t.uapi = nil, nil
		return nil
	}
	if t.kernel {
		if l, err := netlink.LinkByName(t.cfg.Interface); err == nil {
			return netlink.LinkDel(l)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
