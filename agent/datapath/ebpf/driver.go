// Package ebpf is weft's eBPF datapath driver. Each pod's veth has a TCX program on its node
// side that hands packets for the node's other pods straight into their namespace
// (bpf_redirect_peer); the node's VXLAN device has one that does the same for packets from
// other nodes. Everything else — other nodes' pods, Services, the world — is routed by the
// node's kernel: other nodes' pod blocks through the VXLAN device (static FDB and neighbour
// entries, one per node), Services through kube-proxy's rules.
//
// Programs, links and maps are pinned in bpffs, so a restarted agent takes them over without
// a gap: it loads the new programs and swaps them into the pinned links.
package ebpf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/veth"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/statefile"
)

// Names of what the driver creates on a node.
const (
	TunnelDevice  = "weft-vxlan0" // the node's VXLAN device
	vxlanPort     = 4789
	vni           = 1
	encapOverhead = 50
)

// routeProtocol marks the routes the driver installs, to find stale ones.
const routeProtocol = netlink.RouteProtocol(0x58)

// Driver is the eBPF datapath of one node.
type Driver struct {
	opts      datapath.Options
	dnsHolder *datapath.DNSHolder
	// overlayNodes are the addresses the VXLAN port was last opened to (nil: not yet).
	overlayNodes []netip.Addr

	mu      sync.Mutex
	node    datapath.Node
	uplink  int // ifindex of the device holding the node's address
	block   netip.Prefix
	gwIP    netip.Addr
	mtu     int
	pinDir  string
	objs    *weftObjects
	remotes []datapath.RemoteNode
	peers   datapath.PeerRoutes
	pods    map[datapath.PodKey]datapath.Pod
	events  *perf.Reader
	// attachMode is "tcx" or "tc" (clsact filters), decided by the first attach.
	attachMode string

	// slots number the enforced rules' counters (under mu); cpus is rule_hits' width.
	slots *datapath.RuleSlots
	cpus  int

	evMu    sync.Mutex
	records map[uint32]policyRecord // the rules behind the programs' events, by generation
}

var _ datapath.Datapath = (*Driver)(nil)

// Register adds the driver to a registry under "ebpf".
func Register(r *datapath.Registry) error {
	return r.Register("ebpf", func(o datapath.Options) (datapath.Datapath, error) { return New(o), nil })
}

// New returns a driver; nothing is touched before Init.
func New(o datapath.Options) *Driver {
	if o.BPFFS == "" {
		o.BPFFS = "/sys/fs/bpf"
	}
	return &Driver{opts: o, dnsHolder: datapath.NewDNSHolder(o.OnDNSAnswer)}
}

// Capabilities: VXLAN through the kernel's device, or none (other nodes' pod blocks routed
// natively: through their node addresses on the underlay, or as BGP peers announce them).
// (Geneve, through the kernel's device where it has one, is not written yet: Init refuses
// it, so it is not claimed.)
func (d *Driver) Capabilities() datapath.Capabilities {
	encaps := []string{"vxlan", "none"}
	mode := d.attachMode
	if mode == "" {
		mode = d.opts.EBPFAttach
	}
	if mode == "" {
		mode = "tcx"
	}
	return datapath.Capabilities{Encapsulations: encaps, Mode: "ebpf/" + mode}
}

// Init prepares the node; safe to repeat, and a new driver takes over a running datapath
// without interrupting it.
func (d *Driver) Init(ctx context.Context, node datapath.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.Capabilities().Supports(node.Encapsulation) {
		return fmt.Errorf("encapsulation %q is not supported by the ebpf driver on this node (supported: %v)", node.Encapsulation, d.Capabilities().Encapsulations)
	}
	for _, p := range node.PodCIDRs {
		if p.Addr().Is4() {
			d.block = p.Masked()
		}
	}
	if !d.block.IsValid() {
		return errors.New("the node has no IPv4 pod block (IPv6 pods are not supported by the ebpf driver yet)")
	}
	d.node, d.gwIP = node, datapath.Gateway(d.block)
	for _, s := range []struct{ path, val string }{
		{"/proc/sys/net/ipv4/ip_forward", "1"},
		// Connections to peer clusters spread over gateway nodes by their ports too.
		{"/proc/sys/net/ipv4/fib_multipath_hash_policy", "1"},
	} {
		if err := os.WriteFile(s.path, []byte(s.val), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", s.path, err)
		}
	}
	// Replies through the gateways that carried the request (kernels before 6.11 have no
	// seed to set: their choice is per node).
	_ = os.WriteFile("/proc/sys/net/ipv4/fib_multipath_hash_seed", []byte(fabricv1.MultipathHashSeed), 0o644)
	uplink, err := veth.LinkWithAddr(node.IP)
	if err != nil {
		return err
	}
	d.uplink = uplink.Attrs().Index
	d.mtu = node.MTU
	if d.mtu == 0 {
		overhead := encapOverhead
		if node.Encapsulation == "none" {
			overhead = 0
		}
		d.mtu = datapath.PodMTU(uplink.Attrs().MTU, overhead)
	}
	if err := d.ensureGateway(); err != nil {
		return err
	}
	if err := d.load(); err != nil {
		return err
	}
	if node.Encapsulation == "none" {
		// Pods' packets to other nodes leave through the uplink: their egress policy after
		// the kernel's Service translation is decided there. No tunnel device.
		if l, err := netlink.LinkByName(TunnelDevice); err == nil {
			d.detach(TunnelDevice)
			_ = netlink.LinkDel(l)
		}
		if err := d.attach(uplink.Attrs().Name, d.uplink, d.objs.ToTunnel, ebpf.AttachTCXEgress); err != nil {
			return err
		}
		if err := d.attach(uplink.Attrs().Name, d.uplink, d.objs.FromUplink, ebpf.AttachTCXIngress); err != nil {
			return err
		}
	} else {
		vx, err := d.ensureVXLAN()
		if err != nil {
			return err
		}
		if err := d.attach(TunnelDevice, vx.Attrs().Index, d.objs.FromTunnel, ebpf.AttachTCXIngress); err != nil {
			return err
		}
		if err := d.attach(TunnelDevice, vx.Attrs().Index, d.objs.ToTunnel, ebpf.AttachTCXEgress); err != nil {
			return err
		}
		if name := uplink.Attrs().Name; d.attachMode == "tcx" {
			d.detach(name) // an earlier run without encapsulation
		}
	}
	if err := d.loadState(); err != nil {
		return err
	}
	if err := d.loadPolicyRecord(); err != nil {
		return err
	}
	if d.cpus, err = ebpf.PossibleCPU(); err != nil {
		return fmt.Errorf("counting CPUs for the rules' counters: %w", err)
	}
	if err := d.startEvents(); err != nil {
		return err
	}
	// Pods and remote nodes of an earlier run: their programs move to the new objects.
	for _, p := range d.pods {
		host := veth.HostIfName(p.Key)
		l, err := netlink.LinkByName(host)
		if err != nil {
			continue // gone with its namespace; Pods lists it for garbage collection
		}
		if err := d.putEndpoint(p, l); err != nil {
			return err
		}
		if err := d.attachPod(host, l.Attrs().Index); err != nil {
			return err
		}
	}
	return d.syncRoutes()
}

// ensureGateway gives the node its address in its pod block, on the loopback device (a
// kernel without the dummy driver has no better place): the pods' gateway (the node answers
// their ARP for it on every veth) and the source of the node's own packets to them. The
// rest of the block is unreachable but for the pods' own routes.
func (d *Driver) ensureGateway() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: d.gwIP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(lo, addr); err != nil {
		return fmt.Errorf("address %s on lo: %w", addr.IPNet, err)
	}
	if err := netlink.RouteReplace(&netlink.Route{Dst: veth.IPNet(d.block), Type: unix.RTN_UNREACHABLE, Protocol: routeProtocol}); err != nil {
		return fmt.Errorf("route %s: %w", d.block, err)
	}
	return nil
}

// vtepMAC is a node's VXLAN device MAC, derived from its underlay address.
func vtepMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

func (d *Driver) ensureVXLAN() (netlink.Link, error) {
	l, err := d.ensureVXLANLink()
	if err != nil {
		return nil, err
	}
	// Reverse-path filtering in loose mode (what the gateway sets) drops whatever arrives on
	// a device without an address unless its source is routed through that very device: a
	// peer cluster's reply that came in through the other gateway node and crosses the
	// overlay to this one would be lost. The node's address, host-scoped (never picked as a
	// source), gives the device one.
	addr := &netlink.Addr{IPNet: veth.IPNet(netip.PrefixFrom(d.node.IP, 32)), Scope: int(netlink.SCOPE_HOST)}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return nil, fmt.Errorf("the address of %s: %w", TunnelDevice, err)
	}
	return l, nil
}

func (d *Driver) ensureVXLANLink() (netlink.Link, error) {
	want := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: TunnelDevice, MTU: d.mtu, HardwareAddr: vtepMAC(d.node.IP)},
		VxlanId: vni, SrcAddr: d.node.IP.AsSlice(), Port: vxlanPort, Learning: false}
	if l, err := netlink.LinkByName(TunnelDevice); err == nil {
		if vx, ok := l.(*netlink.Vxlan); ok && vx.VxlanId == vni && vx.SrcAddr.Equal(d.node.IP.AsSlice()) && vx.Port == vxlanPort &&
			vx.Attrs().HardwareAddr.String() == want.HardwareAddr.String() {
			if vx.Attrs().MTU != d.mtu {
				if err := netlink.LinkSetMTU(vx, d.mtu); err != nil {
					return nil, err
				}
			}
			return vx, netlink.LinkSetUp(vx)
		}
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("replacing %s: %w", TunnelDevice, err)
		}
	}
	if err := netlink.LinkAdd(want); err != nil {
		return nil, fmt.Errorf("creating %s: %w", TunnelDevice, err)
	}
	l, err := netlink.LinkByName(TunnelDevice)
	if err != nil {
		return nil, err
	}
	return l, netlink.LinkSetUp(l)
}

// load loads the programs, with the maps pinned under the node's pin directory (an earlier
// run's maps are reused, entries and all).
func (d *Driver) load() error {
	if d.objs != nil {
		return nil
	}
	if err := EnsureBPFFS(d.opts.BPFFS); err != nil {
		return err
	}
	d.pinDir = filepath.Join(d.opts.BPFFS, "weft", d.node.Name)
	if err := os.MkdirAll(filepath.Join(d.pinDir, "links"), 0o700); err != nil {
		return err
	}
	objs := &weftObjects{}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.pinDir}}
	err := loadWeftObjects(objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// An upgrade changed a map's layout: the old map goes (the programs running now
		// keep theirs until the new ones replace them); Init refills the endpoints from
		// the state file, the agent's next SetPolicy the policy.
		var replaced []string
		if replaced, err = d.unpinIncompatible(); err == nil {
			klog.Background().Info("ebpf: maps of another layout replaced", "maps", replaced)
			err = loadWeftObjects(objs, opts)
		}
	}
	if err != nil {
		return fmt.Errorf("loading the BPF programs: %w", err)
	}
	d.objs = objs
	return nil
}

// unpinIncompatible removes the pins of maps whose layout is not the programs'.
func (d *Driver) unpinIncompatible() ([]string, error) {
	spec, err := loadWeft()
	if err != nil {
		return nil, err
	}
	var gone []string
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(d.pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			continue
		}
		incompatible := ms.Compatible(m) != nil
		m.Close()
		if incompatible {
			if err := os.Remove(path); err != nil {
				return gone, err
			}
			gone = append(gone, name)
		}
	}
	return gone, nil
}

// EnsureBPFFS mounts bpffs at dir unless one is there (the lab mounts its own with it).
func EnsureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs at %s: %w", dir, err)
	}
	return nil
}

// attachPod puts the programs on a pod's veth (node side): from_pod on ingress, to_pod on
// egress.
func (d *Driver) attachPod(host string, ifindex int) error {
	if err := d.attach(host, ifindex, d.objs.FromPod, ebpf.AttachTCXIngress); err != nil {
		return err
	}
	return d.attach(host, ifindex, d.objs.ToPod, ebpf.AttachTCXEgress)
}

func linkPin(pinDir, name string, at ebpf.AttachType) string {
	if at == ebpf.AttachTCXEgress {
		name += "-egress" // (bpffs refuses dots in names)
	}
	return filepath.Join(pinDir, "links", name)
}

// attach puts prog on an interface's ingress or egress through a pinned TCX link: an
// existing link (an earlier run's) gets the new program in one step, so packets never see
// none.
func (d *Driver) attach(name string, ifindex int, prog *ebpf.Program, at ebpf.AttachType) error {
	if d.attachMode == "" {
		d.attachMode = d.opts.EBPFAttach
	}
	if d.attachMode == "tc" {
		return attachTC(name, ifindex, prog, at)
	}
	err := d.attachTCX(name, ifindex, prog, at)
	if errors.Is(err, ebpf.ErrNotSupported) && d.opts.EBPFAttach == "" {
		d.attachMode = "tc" // a kernel before 6.6: clsact filters
		return attachTC(name, ifindex, prog, at)
	}
	if err == nil {
		d.attachMode = "tcx"
	}
	return err
}

// attachTC puts prog on an interface's clsact qdisc as its one filter per direction; a
// filter replaced with the same priority and handle swaps the program in one step, and the
// kernel keeps it when the agent goes (no pin needed).
func attachTC(name string, ifindex int, prog *ebpf.Program, at ebpf.AttachType) error {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0),
		Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("clsact qdisc on %s: %w", name, err)
	}
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if at == ebpf.AttachTCXEgress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: 1, Priority: 1,
		Protocol: unix.ETH_P_ALL}, Fd: prog.FD(), Name: "weft", DirectAction: true}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("tc filter on %s: %w", name, err)
	}
	return nil
}

func (d *Driver) attachTCX(name string, ifindex int, prog *ebpf.Program, at ebpf.AttachType) error {
	pin := linkPin(d.pinDir, name, at)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex && uint32(info.TCX().AttachType) == uint32(at) {
			err := l.Update(prog)
			l.Close()
			if err == nil {
				return nil
			}
		} else {
			l.Close()
		}
		_ = os.Remove(pin) // a link of a device that is gone: attach anew
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at})
	if err != nil {
		return fmt.Errorf("attaching to %s: %w", name, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning the link of %s: %w", name, err)
	}
	return nil
}

// detach removes an interface's programs.
func (d *Driver) detach(name string) {
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		d.detachDir(name, at)
	}
}

// detachDir removes an interface's program of one direction.
func (d *Driver) detachDir(name string, at ebpf.AttachType) {
	pin := linkPin(d.pinDir, name, at)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		_ = l.Unpin()
		_ = l.Close()
	}
	_ = os.Remove(pin)
}

// Close releases the driver's handles; the pinned programs keep forwarding.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopEvents()
	if d.objs != nil {
		err := d.objs.Close()
		d.objs = nil
		return err
	}
	return nil
}

// state is what the driver keeps in its state directory.
type state struct {
	Pods    []datapath.Pod        `json:"pods"`
	Remotes []datapath.RemoteNode `json:"remotes"`
	Peers   datapath.PeerRoutes   `json:"peers"`
}

func (d *Driver) statePath() string {
	if d.opts.StateDir == "" {
		return ""
	}
	return filepath.Join(d.opts.StateDir, "ebpf-state.json")
}

func (d *Driver) loadState() error {
	if d.pods != nil {
		return nil
	}
	d.pods = map[datapath.PodKey]datapath.Pod{}
	path := d.statePath()
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range st.Pods {
		d.pods[p.Key] = p
	}
	d.remotes, d.peers = st.Remotes, st.Peers
	return nil
}

func (d *Driver) saveState() error {
	path := d.statePath()
	if path == "" {
		return nil
	}
	st := state{Remotes: d.remotes, Peers: d.peers}
	for _, p := range d.pods {
		st.Pods = append(st.Pods, p)
	}
	sort.Slice(st.Pods, func(i, j int) bool { return st.Pods[i].Key.String() < st.Pods[j].Key.String() })
	return statefile.PrivateJSON(path, st)
}

// Stats are the programs' packet counters since the maps were created.
type Stats struct {
	// Redirected went straight into a pod of the node; ToKernel went on to the node's
	// kernel; Dropped were refused (a pod sending from an address not its own, policy);
	// Denied are the connections' packets policy refused.
	Redirected, ToKernel, Dropped, Denied uint64
}

// Stats sums the programs' per-CPU counters.
func (d *Driver) Stats() (Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return Stats{}, errors.New("the datapath is not initialized")
	}
	var out [4]uint64
	for i := range out {
		var per []uint64
		if err := d.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, err
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return Stats{Redirected: out[0], ToKernel: out[1], Dropped: out[2], Denied: out[3]}, nil
}
