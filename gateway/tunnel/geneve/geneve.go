// Package geneve is the Geneve tunnel driver (RFC 8926), unencrypted like vxlan, for
// clusters joined by a private network. Every peer gets its own layer-3 device, as in the
// wireguard driver, so that the kernel spreads flows over a peer cluster's gateways with an
// equal-cost multipath route over their devices and every gateway takes traffic from any
// peer gateway.
//
// Where the kernel has Geneve, the devices are kernel geneve devices in inner_proto_inherit
// mode (IP packets straight after the Geneve header, no Ethernet); otherwise (this lab's
// kernel) they are TUN devices, and the gateway process encapsulates into, and decapsulates
// from, one UDP socket itself. Both put the same packets on the wire, so a kernel end and a
// userspace end talk to each other; Ethernet payloads from other Geneve ends are accepted.
package geneve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/weft-net/weft/gateway/tunnel"
)

// Name is the driver's registry name.
const Name = "geneve"

const (
	// DefaultPort is a port of its own (6082, not 6081), so the gateways' tunnel never collides
	// with a node overlay that uses Geneve.
	DefaultPort = 6082
	// DefaultVNI is the tunnel key between gateways.
	DefaultVNI = 0x57ef
	// DefaultMTU leaves room for Geneve over IPv6 (40 + 8 + 8 bytes) on a 1500 link.
	DefaultMTU = 1440
	// headroom is room before each packet for the Geneve header (and the TUN device's
	// virtio header).
	headroom = 64
)

// Register adds the driver to a registry.
func Register(r *tunnel.Registry) error {
	return r.Register(Name, func(cfg tunnel.Config) (tunnel.Tunnel, error) { return New(cfg) })
}

// Tunnel is the Geneve devices of one gateway, one per peer.
type Tunnel struct {
	cfg tunnel.Config

	mu     sync.Mutex
	probed bool
	kernel bool
	devs   map[string]*device // by peer name
	conn   *net.UDPConn       // userspace: the one socket of every device
	// byAddr maps a peer gateway's underlay address to its device, for the receive loop.
	byAddr atomic.Pointer[map[netip.Addr]*device]
	drops  atomic.Int64 // userspace: datagrams no device took
	wg     sync.WaitGroup
}

// device is one peer's device.
type device struct {
	name     string
	remote   netip.AddrPort
	tun      tun.Device // userspace only
	rx, tx   atomic.Int64
	endpoint atomic.Pointer[netip.AddrPort] // userspace: where the read loop sends
}

var _ tunnel.Tunnel = (*Tunnel)(nil)

// New checks the configuration. Nothing is created until Up.
func New(cfg tunnel.Config) (*Tunnel, error) {
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
		return nil, fmt.Errorf("geneve: VNI %d does not fit in 24 bits", cfg.VNI)
	}
	t := &Tunnel{cfg: cfg, devs: map[string]*device{}}
	t.byAddr.Store(&map[netip.Addr]*device{})
	return t, nil
}

// PublicKey is empty: Geneve has no keys.
func (t *Tunnel) PublicKey() string { return "" }

// Mode says whether kernel devices or the gateway process carry the tunnel.
func (t *Tunnel) Mode() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kernel {
		return "geneve/kernel"
	}
	return "geneve/userspace"
}

// Up finds out whether the kernel has Geneve (in inner_proto_inherit mode), opens the UDP
// socket when it does not, and removes kernel devices a previous run left. Devices are made
// by SetPeers. Repeating it changes nothing.
func (t *Tunnel) Up(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.probed {
		probe := &netlink.Geneve{LinkAttrs: netlink.LinkAttrs{Name: t.cfg.Interface}, ID: t.cfg.VNI,
			Remote: net.IPv4(127, 0, 0, 1), Dport: uint16(t.cfg.ListenPort), InnerProtoInherit: true}
		if l, err := netlink.LinkByName(t.cfg.Interface); err == nil {
			if l.Type() != "geneve" {
				return fmt.Errorf("geneve: %s exists and is a %s device, not Geneve", t.cfg.Interface, l.Type())
			}
			_ = netlink.LinkDel(l)
		}
		err := netlink.LinkAdd(probe)
		switch {
		case err == nil:
			t.kernel = true
			_ = netlink.LinkDel(probe)
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL):
			// No geneve module, or one without inner_proto_inherit (before Linux 5.19).
			conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: t.cfg.ListenPort})
			if err != nil {
				return fmt.Errorf("geneve: listening on UDP port %d: %w", t.cfg.ListenPort, err)
			}
			t.conn = conn
			t.wg.Add(1)
			go t.receive(conn)
		default:
			return fmt.Errorf("geneve: probing for kernel support with %s: %w", t.cfg.Interface, err)
		}
		t.probed = true
	}
	return t.removeStrays()
}

// removeStrays deletes kernel devices that look like this tunnel's but belong to no peer.
func (t *Tunnel) removeStrays() error {
	mine := map[string]bool{}
	for _, d := range t.devs {
		mine[d.name] = true
	}
	if err := t.names().RemoveStrays("geneve", mine); err != nil {
		return fmt.Errorf("geneve: %w", err)
	}
	return nil
}

// names names the per-peer devices.
func (t *Tunnel) names() tunnel.PeerDevices {
	return tunnel.PeerDevices{Name: t.cfg.Name, Interface: t.cfg.Interface}
}

// PeerDevice names the peer's device. See tunnel.PerPeerDevices.
func (t *Tunnel) PeerDevice(peer string) string { return t.names().DeviceName(peer) }

// ensureDevice makes (or remakes, when its remote changed) a peer's device and brings it up.
func (t *Tunnel) ensureDevice(p tunnel.Peer) (*device, error) {
	remote := netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
	if remote.Port() == 0 {
		remote = netip.AddrPortFrom(remote.Addr(), uint16(t.cfg.ListenPort))
	}
	d := t.devs[p.Name]
	if d != nil && d.remote.Addr() != remote.Addr() && t.kernel {
		if err := t.closeDevice(d); err != nil {
			return nil, err
		}
		delete(t.devs, p.Name)
		d = nil
	}
	if d == nil {
		d = &device{name: t.names().DeviceName(p.Name)}
		d.endpoint.Store(&remote) // before the send loop starts
		if t.kernel {
			if l, err := netlink.LinkByName(d.name); err == nil {
				_ = netlink.LinkDel(l) // a previous run's: its remote is unknown
			}
			g := &netlink.Geneve{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: t.cfg.MTU}, ID: t.cfg.VNI,
				Remote: remote.Addr().AsSlice(), Dport: remote.Port(), InnerProtoInherit: true}
			if err := netlink.LinkAdd(g); err != nil {
				return nil, fmt.Errorf("geneve: creating %s for peer %s: %w", d.name, p.Name, err)
			}
		} else {
			dev, err := tun.CreateTUN(d.name, t.cfg.MTU)
			if err != nil {
				return nil, fmt.Errorf("geneve: creating the userspace device %s: %w", d.name, err)
			}
			d.tun = dev
			t.wg.Add(1)
			go t.send(d, t.conn)
		}
		t.devs[p.Name] = d
	}
	d.remote = remote
	d.endpoint.Store(&remote)
	if err := tunnel.SetUpLink(d.name, t.cfg.MTU, t.cfg.Address); err != nil {
		return nil, fmt.Errorf("geneve: %w", err)
	}
	return d, nil
}

// SetPeers gives each peer its device, removes the devices of peers that are gone, and
// routes each prefix over the devices of the active peers that carry it. See tunnel.Tunnel.
func (t *Tunnel) SetPeers(_ context.Context, peers []tunnel.Peer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.probed {
		return errors.New("geneve: SetPeers before Up")
	}
	seen := map[string]bool{}
	addrs := map[netip.Addr]string{}
	for _, p := range peers {
		if p.Name == "" || seen[p.Name] {
			return fmt.Errorf("geneve: peer names must be set and unique (%q)", p.Name)
		}
		seen[p.Name] = true
		ep := p.Endpoint.Addr().Unmap()
		if !ep.IsValid() {
			return fmt.Errorf("geneve: peer %s has no endpoint", p.Name)
		}
		if other, dup := addrs[ep]; dup {
			return fmt.Errorf("geneve: peers %s and %s are both at %s", other, p.Name, ep)
		}
		addrs[ep] = p.Name
	}
	var errs []error
	want := map[netip.Prefix][]tunnel.NextHop{}
	byAddr := map[netip.Addr]*device{}
	for _, p := range peers {
		d, err := t.ensureDevice(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		byAddr[d.remote.Addr()] = d
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
	t.byAddr.Store(&byAddr)
	for name, d := range t.devs {
		if !seen[name] {
			if err := t.closeDevice(d); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(t.devs, name)
		}
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

// send moves what the kernel routes into a userspace device to its peer, until the device
// closes.
func (t *Tunnel) send(d *device, conn *net.UDPConn) {
	defer t.wg.Done()
	batch := d.tun.BatchSize()
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+t.cfg.MTU+64)
	}
	for {
		n, err := d.tun.Read(bufs, sizes, headroom)
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				continue
			}
			return // closed
		}
		to := *d.endpoint.Load()
		for i := 0; i < n; i++ {
			frame := bufs[i][headroom-headerLen : headroom+sizes[i]]
			if putHeader(frame, t.cfg.VNI, frame[headerLen:]) != nil {
				continue
			}
			if _, err := conn.WriteToUDPAddrPort(frame, to); err == nil {
				d.tx.Add(int64(sizes[i]))
			}
		}
	}
}

// receive hands each datagram to the device of the peer it came from, until the socket
// closes. Datagrams from no peer, or that are not Geneve with the tunnel's VNI, are dropped.
func (t *Tunnel) receive(conn *net.UDPConn) {
	defer t.wg.Done()
	buf := make([]byte, headroom+65536)
	bufs := [][]byte{nil}
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf[headroom:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		d := (*t.byAddr.Load())[from.Addr().Unmap()]
		if d == nil {
			t.drops.Add(1)
			continue
		}
		start, err := payload(buf[headroom:headroom+n], t.cfg.VNI)
		if err != nil {
			t.drops.Add(1)
			continue
		}
		bufs[0] = buf[:headroom+n]
		if _, err := d.tun.Write(bufs, headroom+start); err == nil {
			d.rx.Add(int64(n - start))
		}
	}
}

// PeerPorts is nil: every peer sends to ListenPort. See tunnel.Tunnel.
func (t *Tunnel) PeerPorts() map[string]int { return nil }

// Status reports every peer with its device's counters. See tunnel.Tunnel.
func (t *Tunnel) Status(context.Context) ([]tunnel.PeerStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.devs))
	for name := range t.devs {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []tunnel.PeerStatus
	var errs []error
	for _, name := range names {
		d := t.devs[name]
		s := tunnel.PeerStatus{Name: name, Device: d.name, Endpoint: d.remote, RxBytes: d.rx.Load(), TxBytes: d.tx.Load()}
		if t.kernel {
			l, err := netlink.LinkByName(d.name)
			if err != nil {
				errs = append(errs, fmt.Errorf("geneve: %s: %w", d.name, err))
				continue
			}
			if st := l.Attrs().Statistics; st != nil {
				s.RxBytes, s.TxBytes = int64(st.RxBytes), int64(st.TxBytes)
			}
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

// Dropped counts received datagrams no peer's device took (userspace).
func (t *Tunnel) Dropped() int64 { return t.drops.Load() }

func (t *Tunnel) closeDevice(d *device) error {
	if d.tun != nil {
		return d.tun.Close() // removes the link; its send loop ends
	}
	if l, err := netlink.LinkByName(d.name); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("geneve: removing %s: %w", d.name, err)
		}
	}
	return nil
}

// Close removes every device and closes the socket. See tunnel.Tunnel.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	var errs []error
	for name, d := range t.devs {
		errs = append(errs, t.closeDevice(d))
		delete(t.devs, name)
	}
	if t.conn != nil {
		errs = append(errs, t.conn.Close())
		t.conn = nil
	}
	t.mu.Unlock()
	t.wg.Wait()
	return errors.Join(errs...)
}
