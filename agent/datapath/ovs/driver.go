// Package ovs is weft's Open vSwitch datapath driver. Pods hang off an integration bridge
// (weft-int) with a gateway port (weft-gw0, the node's address in its pod block) and one
// flow-based tunnel port (weft-tun0, Geneve or VXLAN) to every other node. Bridges and ports
// are managed through OVSDB (libovsdb); the flow table is recomputed from durable state
// (OVSDB external IDs) and replaced atomically in one OpenFlow bundle.
//
// Where the Open vSwitch kernel module is missing it uses the userspace (netdev) datapath,
// which needs the node's uplink in an external bridge (weft-ext) for its tunnels.
package ovs

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
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs/openflow"
	"github.com/weft-net/weft/agent/datapath/ovs/vswitch"
	"github.com/weft-net/weft/agent/datapath/veth"
)

// Names of what the driver creates on a node.
const (
	IntegrationBridge = "weft-int"
	ExternalBridge    = "weft-ext"
	GatewayPort       = "weft-gw0"
	TunnelPort        = "weft-tun0"
)

// External IDs recorded on a pod's OVS interface: the durable record of the pod.
const (
	idPodKey       = "weft-pod-key"
	idPodNamespace = "weft-pod-namespace"
	idPodName      = "weft-pod-name"
	idPodUID       = "weft-pod-uid"
	idPodNetns     = "weft-pod-netns"
	idPodIP        = "weft-pod-ip"
	idRemoteNodes  = "weft-remote-nodes" // on the integration bridge
	idPeerRoutes   = "weft-peer-routes"  // on the integration bridge
)

// routeProtocol marks the routes the driver installs, to find stale ones.
const routeProtocol = netlink.RouteProtocol(0x57)

// encapOverhead is what Geneve and VXLAN over IPv4 add to a frame.
const encapOverhead = 50

// Driver is the OVS datapath of one node.
type Driver struct {
	opts         datapath.Options
	dnsHolder    *datapath.DNSHolder
	ofctl        string
	intBridge    string
	extBridge    string
	datapathType string

	mu      sync.Mutex
	db      *ovsDB
	node    datapath.Node
	block   netip.Prefix
	gwIP    netip.Addr
	gwMAC   string
	mtu     int
	remotes []datapath.RemoteNode
	peers   datapath.PeerRoutes
	// uplinkRoutes are the routes moved from the uplink to the external bridge (netdev),
	// kept there by keepUplinkRoutes from the first Init on.
	uplinkRoutes []uplinkRoute
	uplinkAddrs  []string
	keeping      bool
	stopKeeping  context.CancelFunc
	// policy is the enforced policy's tables (nil: none set or saved).
	policy *policyProgram
	// stopController ends the loop that answers packets policy flows send to the agent.
	stopController context.CancelFunc
	// applied is the flow table as last applied, by flowKey (nil: unknown; replace it all).
	applied map[string]string
	// flowWriter is the OpenFlow connection flow mods of known shapes go through (nil: not
	// connected yet, or broken).
	flowWriter *openflow.Conn
	// ofctlOnly sends every change through ovs-ofctl (the benchmark's baseline).
	ofctlOnly bool
	// nl is a netlink handle in the node's network namespace, opened by Init, for work done
	// on other goroutines (their threads may be in another namespace).
	nl *netlink.Handle
}

var _ datapath.Datapath = (*Driver)(nil)

// Register adds the driver to a registry under "ovs".
func Register(r *datapath.Registry) error {
	return r.Register("ovs", func(o datapath.Options) (datapath.Datapath, error) { return New(o), nil })
}

// New returns a driver; nothing is touched before Init.
func New(o datapath.Options) *Driver {
	if o.OVSDB == "" {
		o.OVSDB = "unix:/var/run/openvswitch/db.sock"
	}
	if o.OVSRunDir == "" {
		o.OVSRunDir = "/var/run/openvswitch"
	}
	dt := "netdev"
	if _, err := os.Stat("/sys/module/openvswitch"); err == nil {
		dt = "system"
	}
	return &Driver{opts: o, ofctl: "ovs-ofctl", intBridge: IntegrationBridge, extBridge: ExternalBridge, datapathType: dt,
		dnsHolder: datapath.NewDNSHolder(o.OnDNSAnswer)}
}

// Capabilities: both tunnels on either datapath; no native routing yet.
func (d *Driver) Capabilities() datapath.Capabilities {
	return datapath.Capabilities{Encapsulations: []string{"geneve", "vxlan"}, Mode: "ovs/" + d.datapathType}
}

// Init prepares the node. It is safe to repeat: ports and flows already right stay as they
// are, and pods and remote nodes from an earlier run keep forwarding.
func (d *Driver) Init(ctx context.Context, node datapath.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.Capabilities().Supports(node.Encapsulation) {
		return fmt.Errorf("encapsulation %q is not supported by the ovs driver (supported: geneve, vxlan)", node.Encapsulation)
	}
	var block netip.Prefix
	for _, p := range node.PodCIDRs {
		if p.Addr().Is4() {
			block = p.Masked()
		}
	}
	if !block.IsValid() {
		return errors.New("the node has no IPv4 pod block (IPv6 pods are not supported by the ovs driver yet)")
	}
	if d.db == nil {
		db, err := connectOVSDB(ctx, d.opts.OVSDB)
		if err != nil {
			return err
		}
		d.db = db
	}
	if d.nl == nil {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		d.nl = h
	}
	d.node, d.block, d.gwIP = node, block, datapath.Gateway(block)
	d.gwMAC = veth.PodMAC(d.gwIP)
	// The node routes between the gateway and everything else (Services, other networks).
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enabling IP forwarding: %w", err)
	}

	if d.datapathType == "netdev" {
		if err := d.adoptUplink(ctx, node.IP); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		if !d.keeping && len(d.uplinkRoutes) > 0 {
			// A handle opened here works in this network namespace from any thread.
			h, err := netlink.NewHandle()
			if err != nil {
				return fmt.Errorf("netlink: %w", err)
			}
			kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			d.keeping, d.stopKeeping = true, cancel
			go d.keepUplinkRoutes(kctx, h)
		}
	}
	uplink, err := veth.LinkWithAddr(node.IP)
	if err != nil {
		return err
	}
	d.mtu = node.MTU
	if d.mtu == 0 {
		d.mtu = datapath.PodMTU(uplink.Attrs().MTU, encapOverhead)
	}
	if err := d.db.ensureBridge(ctx, d.intBridge, d.datapathType, vswitch.BridgeFailModeSecure); err != nil {
		return fmt.Errorf("bridge %s: %w", d.intBridge, err)
	}
	if err := d.db.ensurePort(ctx, portSpec{Bridge: d.intBridge, Name: GatewayPort, Type: "internal",
		ExternalIDs: map[string]string{"weft-role": "gateway"}}); err != nil {
		return fmt.Errorf("gateway port: %w", err)
	}
	if err := d.setupGateway(ctx); err != nil {
		return err
	}
	if err := d.db.ensurePort(ctx, portSpec{Bridge: d.intBridge, Name: TunnelPort, Type: node.Encapsulation,
		Options:     map[string]string{"remote_ip": "flow", "key": "flow"},
		ExternalIDs: map[string]string{"weft-role": "tunnel"}}); err != nil {
		return fmt.Errorf("tunnel port: %w", err)
	}
	if err := d.db.waitOFPort(ctx, TunnelPort); err != nil {
		return err
	}
	if err := waitSocket(ctx, strings.TrimPrefix(d.ofTarget(), "unix:"), 10*time.Second); err != nil {
		return fmt.Errorf("bridge %s has no OpenFlow management socket: %w", d.intBridge, err)
	}
	d.remotes = d.savedRemotes()
	d.peers = d.savedPeerRoutes()
	d.applied = nil // the switch may have restarted: compare with its real table once
	if err := d.loadPolicy(); err != nil {
		return fmt.Errorf("the saved policy: %w", err)
	}
	if err := d.syncFlows(ctx); err != nil {
		return err
	}
	d.startController(ctx)
	return d.syncRoutes()
}

// setupGateway gives the gateway port its MAC, MTU and address (the node's address in its
// pod block), and brings it up.
func (d *Driver) setupGateway(ctx context.Context) error {
	gw, err := waitLink(ctx, GatewayPort)
	if err != nil {
		return err
	}
	mac, _ := net.ParseMAC(d.gwMAC)
	if gw.Attrs().HardwareAddr.String() != d.gwMAC {
		if err := netlink.LinkSetHardwareAddr(gw, mac); err != nil {
			return fmt.Errorf("gateway MAC: %w", err)
		}
	}
	if gw.Attrs().MTU != d.mtu {
		if err := netlink.LinkSetMTU(gw, d.mtu); err != nil {
			return fmt.Errorf("gateway MTU: %w", err)
		}
	}
	// Packets the node itself sends (a gateway answering a peer, a host-network process
	// talking to a pod on another node) must leave with complete checksums: the userspace
	// datapath cannot encapsulate offloaded ones.
	if d.datapathType == "netdev" {
		if err := veth.TxOffloadOff(GatewayPort); err != nil {
			return err
		}
	}
	addr := &netlink.Addr{IPNet: veth.IPNet(netip.PrefixFrom(d.gwIP, d.block.Bits()))}
	if err := netlink.AddrReplace(gw, addr); err != nil {
		return fmt.Errorf("gateway address %s: %w", addr.IPNet, err)
	}
	return netlink.LinkSetUp(gw)
}

// Close disconnects from OVSDB; forwarding stays programmed.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopKeeping != nil {
		d.stopKeeping()
		d.stopKeeping, d.keeping = nil, false
	}
	if d.stopController != nil {
		d.stopController()
		d.stopController = nil
	}
	if d.flowWriter != nil {
		d.flowWriter.Close()
		d.flowWriter = nil
	}
	if d.db != nil {
		d.db.close()
		d.db = nil
	}
	if d.nl != nil {
		d.nl.Close()
		d.nl = nil
	}
	return nil
}

// waitSocket waits until a Unix socket (vswitchd's, made once it has read the database)
// accepts connections: the file alone may be left from a vswitchd that was killed.
func waitSocket(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *Driver) ofTarget() string {
	return "unix:" + filepath.Join(d.opts.OVSRunDir, d.intBridge+".mgmt")
}

// AddPod wires a pod. See datapath.PodNetwork.
func (d *Driver) AddPod(ctx context.Context, pod datapath.Pod) (datapath.PodResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return datapath.PodResult{}, errors.New("the datapath is not initialized")
	}
	var ip netip.Prefix
	for _, p := range pod.IPs {
		if p.Addr().Is4() {
			ip = p
		}
	}
	if !ip.IsValid() || !d.block.Contains(ip.Addr()) {
		return datapath.PodResult{}, fmt.Errorf("pod address %v is not in this node's block %s", pod.IPs, d.block)
	}
	pi := d.podInterface(pod.Key, pod.Netns, ip)
	res := datapath.PodResult{HostInterface: pi.Host, Interface: pi.Peer, MAC: pi.MAC, MTU: pi.MTU,
		IPs: []netip.Prefix{ip}, Gateways: []netip.Addr{d.gwIP}}
	ids := map[string]string{idPodKey: pod.Key.String(), idPodNamespace: pod.Namespace, idPodName: pod.Name,
		idPodUID: pod.UID, idPodNetns: pod.Netns, idPodIP: ip.String()}

	if existing := d.podInterfaceRecord(pi.Host); existing != nil {
		if mapsContain(existing.ExternalIDs, ids) && pi.Check() == nil {
			return res, nil // already wired exactly so
		}
		// A leftover of an attempt that did not finish: start over.
		_ = d.db.deletePort(ctx, d.intBridge, pi.Host)
		_ = pi.Delete()
	}
	if err := pi.Create(); err != nil {
		return datapath.PodResult{}, err
	}
	undo := func() {
		_ = d.db.deletePort(context.Background(), d.intBridge, pi.Host)
		_ = pi.Delete()
		_ = d.syncFlows(context.Background())
	}
	if err := d.db.ensurePort(ctx, portSpec{Bridge: d.intBridge, Name: pi.Host, ExternalIDs: ids}); err != nil {
		undo()
		return datapath.PodResult{}, fmt.Errorf("adding port %s: %w", pi.Host, err)
	}
	if err := d.db.waitOFPort(ctx, pi.Host); err != nil {
		undo()
		return datapath.PodResult{}, err
	}
	if err := d.syncFlows(ctx); err != nil {
		undo()
		return datapath.PodResult{}, err
	}
	return res, nil
}

func (d *Driver) podInterface(key datapath.PodKey, netnsPath string, ip netip.Prefix) veth.Pair {
	return veth.Pair{Host: hostIfName(key), Peer: key.IfName, Netns: netnsPath, IP: ip, Gateway: d.gwIP,
		MAC: veth.PodMAC(ip.Addr()), MTU: d.mtu, NoOffload: d.datapathType == "netdev"}
}

func (d *Driver) podInterfaceRecord(name string) *vswitch.Interface {
	iface := &vswitch.Interface{Name: name}
	if err := d.db.c.Get(context.Background(), iface); err != nil {
		return nil
	}
	return iface
}

// attached tells whether the pod port's device exists and vswitchd has not given up on it.
// (A restarted vswitchd reports a vanished device only some time after it starts, so the
// device itself is asked too.)
func (d *Driver) attached(name string) bool {
	rec := d.podInterfaceRecord(name)
	if rec == nil || (rec.Ofport != nil && *rec.Ofport < 0) || (rec.Error != nil && *rec.Error != "") {
		return false
	}
	lookup := netlink.LinkByName
	if d.nl != nil {
		lookup = d.nl.LinkByName
	}
	_, err := lookup(name)
	return err == nil
}

func mapsContain(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// DelPod unwires a pod. See datapath.PodNetwork.
func (d *Driver) DelPod(ctx context.Context, key datapath.PodKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return errors.New("the datapath is not initialized")
	}
	host := hostIfName(key)
	// The pod's flows go first, while the switch can still resolve its port's name.
	flowErr := d.syncFlowsExcept(ctx, host)
	if err := d.db.deletePort(ctx, d.intBridge, host); err != nil {
		return fmt.Errorf("removing port %s: %w", host, err)
	}
	if err := (veth.Pair{Host: host}).Delete(); err != nil {
		return fmt.Errorf("removing %s: %w", host, err)
	}
	if flowErr != nil {
		return d.syncFlows(ctx)
	}
	return nil
}

// CheckPod verifies a pod's wiring. See datapath.PodNetwork.
func (d *Driver) CheckPod(_ context.Context, pod datapath.Pod) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return errors.New("the datapath is not initialized")
	}
	host := hostIfName(pod.Key)
	rec := d.podInterfaceRecord(host)
	if rec == nil {
		return fmt.Errorf("pod %s has no port %s", pod.Key, host)
	}
	for _, ip := range pod.IPs {
		if rec.ExternalIDs[idPodIP] == ip.String() {
			return d.podInterface(pod.Key, pod.Netns, ip).Check()
		}
	}
	return fmt.Errorf("pod %s is wired with %s, not %v", pod.Key, rec.ExternalIDs[idPodIP], pod.IPs)
}

// Pods lists the pods wired on this node, from their OVSDB records.
func (d *Driver) Pods(context.Context) ([]datapath.Pod, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return nil, errors.New("the datapath is not initialized")
	}
	return d.pods()
}

func (d *Driver) pods() ([]datapath.Pod, error) {
	ifaces, err := d.db.interfaces(idPodKey)
	if err != nil {
		return nil, err
	}
	var out []datapath.Pod
	for _, i := range ifaces {
		ip, err := netip.ParsePrefix(i.ExternalIDs[idPodIP])
		if err != nil {
			continue
		}
		var key datapath.PodKey
		if c, f, ok := cut(i.ExternalIDs[idPodKey]); ok {
			key = datapath.PodKey{ContainerID: c, IfName: f}
		}
		out = append(out, datapath.Pod{Key: key, Namespace: i.ExternalIDs[idPodNamespace], Name: i.ExternalIDs[idPodName],
			UID: i.ExternalIDs[idPodUID], Netns: i.ExternalIDs[idPodNetns], IPs: []netip.Prefix{ip}})
	}
	return out, nil
}

func cut(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// SetRemoteNodes forwards to exactly these nodes. See datapath.NodeNetwork.
func (d *Driver) SetRemoteNodes(ctx context.Context, nodes []datapath.RemoteNode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return errors.New("the datapath is not initialized")
	}
	var remotes []datapath.RemoteNode
	for _, n := range nodes {
		if n.Name != d.node.Name && n.IP != d.node.IP {
			remotes = append(remotes, n)
		}
	}
	d.remotes = remotes
	if err := d.saveRemotes(ctx); err != nil {
		return err
	}
	if err := d.syncFlows(ctx); err != nil {
		return err
	}
	return d.syncRoutes()
}

// SetPeerRoutes routes other clusters' ranges towards the gateways. See datapath.NodeNetwork.
func (d *Driver) SetPeerRoutes(ctx context.Context, routes datapath.PeerRoutes) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return errors.New("the datapath is not initialized")
	}
	for _, p := range routes.Prefixes {
		for _, own := range d.node.PodCIDRs {
			if p.Overlaps(own) {
				return fmt.Errorf("peer range %s overlaps this node's pod block %s", p, own)
			}
		}
	}
	d.peers = routes
	// Flows first (failover waits for them), then the record a restarted agent starts from
	// (until it has read the cluster again).
	if err := d.syncFlows(ctx); err != nil {
		return err
	}
	if err := d.syncRoutes(); err != nil {
		return err
	}
	return d.saveBridgeID(ctx, idPeerRoutes, routes)
}

// saveRemotes records the remote nodes on the bridge, so a restarted agent programs the same
// tunnels at once instead of dropping them until it has read the cluster again.
func (d *Driver) saveRemotes(ctx context.Context) error {
	return d.saveBridgeID(ctx, idRemoteNodes, d.remotes)
}

// saveBridgeID records v (as JSON) in the bridge's external IDs under key, so a restarted
// agent programs the same forwarding at once.
func (d *Driver) saveBridgeID(ctx context.Context, key string, v any) error {
	return d.db.setExternalID(ctx, d.intBridge, key, v)
}

// setExternalID records v (as JSON) in the named bridge's external IDs under key.
func (o *ovsDB) setExternalID(ctx context.Context, bridge, key string, v any) error {
	br, err := o.bridge(bridge)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(v)
	if br.ExternalIDs[key] == string(data) {
		return nil
	}
	ids := map[string]string{}
	for k, v := range br.ExternalIDs {
		ids[k] = v
	}
	ids[key] = string(data)
	br.ExternalIDs = ids
	ops, err := o.c.Where(br).Update(br, &br.ExternalIDs)
	if err != nil {
		return err
	}
	return o.transact(ctx, ops...)
}

func (d *Driver) savedPeerRoutes() datapath.PeerRoutes {
	var out datapath.PeerRoutes
	if br, err := d.db.bridge(d.intBridge); err == nil {
		_ = json.Unmarshal([]byte(br.ExternalIDs[idPeerRoutes]), &out)
	}
	return out
}

func (d *Driver) savedRemotes() []datapath.RemoteNode {
	br, err := d.db.bridge(d.intBridge)
	if err != nil {
		return nil
	}
	var out []datapath.RemoteNode
	_ = json.Unmarshal([]byte(br.ExternalIDs[idRemoteNodes]), &out)
	return out
}

// syncFlows recomputes the flow table from the pods in OVSDB and the remote nodes.
func (d *Driver) syncFlows(ctx context.Context) error { return d.syncFlowsExcept(ctx, "") }

// syncFlowsExcept is syncFlows leaving out the pod on port skip (one being deleted).
func (d *Driver) syncFlowsExcept(ctx context.Context, skip string) error {
	pods, err := d.pods()
	if err != nil {
		return err
	}
	st := flowState{gatewayPort: GatewayPort, gatewayIP: d.gwIP, gatewayMAC: d.gwMAC, tunnelPort: TunnelPort,
		peers: peerFlows{localGateway: d.peers.LocalGateway}}
	for _, p := range d.peers.Prefixes {
		if p.Addr().Is4() {
			st.peers.prefixes = append(st.peers.prefixes, p.Masked())
		}
	}
	for _, g := range d.peers.Gateways {
		if g.Is4() && g != d.node.IP {
			st.peers.gateways = append(st.peers.gateways, g)
		}
	}
	// Every node orders the gateways alike, so a connection hashes to the same one anywhere.
	sort.Slice(st.peers.gateways, func(i, j int) bool { return st.peers.gateways[i].Less(st.peers.gateways[j]) })
	for _, p := range pods {
		port := hostIfName(p.Key)
		if port == skip {
			continue
		}
		// A port whose device is gone (its pod's namespace vanished with a crashed node or
		// runtime) has no OpenFlow port: it gets no flows, and stays listed by Pods so the
		// agent's garbage collection removes it and releases its address.
		if !d.attached(port) {
			continue
		}
		st.pods = append(st.pods, podFlow{port: port, ip: p.IPs[0].Addr(), mac: veth.PodMAC(p.IPs[0].Addr())})
	}
	for _, r := range d.remotes {
		for _, b := range r.PodCIDRs {
			if b.Addr().Is4() && r.IP.Is4() {
				st.remotes = append(st.remotes, remoteFlow{block: b.Masked(), nodeIP: r.IP})
			}
		}
	}
	pol, err := d.policyProgramOrDefault()
	if err != nil {
		return err
	}
	st.policy = pol.Flows
	return d.applyFlows(ctx, st.flows())
}

// applyFlows makes the bridge's table exactly flows. The driver is the table's only writer,
// so after a first complete replacement (each Init) it sends only the difference to what it
// applied last, instead of having the whole table dumped and compared each time (seconds
// with 10,000 policy rules). A difference the switch refuses is followed by a complete
// replacement.
func (d *Driver) applyFlows(ctx context.Context, flows []string) error {
	want := indexFlows(flows)
	if d.applied == nil {
		if err := applyFlows(ctx, d.ofctl, d.ofTarget(), flows); err != nil {
			return err
		}
		d.applied = want
		return nil
	}
	mods := flowDiff(d.applied, want)
	if len(mods) == 0 {
		return nil
	}
	if native, ok := nativeFlowMods(mods, d.ofport); ok && !d.ofctlOnly {
		err := d.applyNative(native)
		if err == nil {
			d.applied = want
			return nil
		}
		klog.FromContext(ctx).V(2).Info("flow mods through the OpenFlow connection failed; using ovs-ofctl", "err", err)
	}
	if err := applyFlowMods(ctx, d.ofctl, d.ofTarget(), mods); err != nil {
		// Such as a delete naming a port whose device vanished: replace the whole table.
		d.applied = nil
		if err := applyFlows(ctx, d.ofctl, d.ofTarget(), flows); err != nil {
			return err
		}
	}
	d.applied = want
	return nil
}

// applyNative applies flow mods in one bundle through the driver's OpenFlow connection,
// (re)connecting first if needed.
func (d *Driver) applyNative(mods []openflow.FlowMod) error {
	if d.flowWriter == nil {
		c, err := openflow.DialWriter(d.ofTarget(), time.Second)
		if err != nil {
			return err
		}
		d.flowWriter = c
	}
	if err := d.flowWriter.ApplyFlowMods(mods, 2*time.Second); err != nil {
		d.flowWriter.Close()
		d.flowWriter = nil
		return err
	}
	return nil
}

// ofport is the OpenFlow port number of an interface, from the database's cache.
func (d *Driver) ofport(name string) (uint32, bool) {
	rec := d.podInterfaceRecord(name)
	if rec == nil || rec.Ofport == nil || *rec.Ofport <= 0 {
		return 0, false
	}
	return uint32(*rec.Ofport), true
}

// syncRoutes routes every remote pod block (and, on nodes that are not gateways, every peer
// cluster's range) into the gateway port, through a static neighbour for the range's first
// address, and removes the routes of ranges that are gone.
func (d *Driver) syncRoutes() error {
	gw, err := netlink.LinkByName(GatewayPort)
	if err != nil {
		return err
	}
	// Remote pod blocks; and other clusters' ranges, on nodes that are not gateways: what the
	// node's kernel sends there (a Service's VIP translated to a peer pod by kube-proxy: a
	// multi-cluster Service) goes back into the bridge, which sends it to a gateway node. A
	// gateway node routes them into its tunnels itself.
	type into struct {
		p      netip.Prefix
		metric int
	}
	var routes []into
	for _, r := range d.remotes {
		for _, p := range r.PodCIDRs {
			routes = append(routes, into{p, 0})
		}
	}
	if !d.peers.LocalGateway {
		// Behind (a higher metric than) the routes a gateway on this node installs into its
		// tunnels: replacing those would cut the node's own gateway off — as it did when an
		// agent restarting on a gateway node programmed these before it knew it was one.
		for _, p := range d.peers.Prefixes {
			routes = append(routes, into{p, peerRouteMetric})
		}
	}
	mac, _ := net.ParseMAC(tunnelMAC)
	want := map[string]bool{}
	for _, r := range routes {
		p := r.p
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		via := datapath.Gateway(p)
		want[fmt.Sprintf("%s@%d", p, r.metric)] = true
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: gw.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: via.AsSlice(), HardwareAddr: mac}); err != nil {
			return fmt.Errorf("neighbour %s: %w", via, err)
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: gw.Attrs().Index, Dst: veth.IPNet(p), Gw: via.AsSlice(),
			Flags: int(netlink.FLAG_ONLINK), Protocol: routeProtocol, Priority: r.metric}); err != nil {
			return fmt.Errorf("route %s: %w", p, err)
		}
	}
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: gw.Attrs().Index, Protocol: routeProtocol},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	inUse := map[string]bool{}
	for _, r := range have {
		if r.Dst != nil && want[fmt.Sprintf("%s@%d", r.Dst, r.Priority)] {
			inUse[r.Gw.String()] = true
		}
	}
	for _, r := range have {
		if r.Dst != nil && !want[fmt.Sprintf("%s@%d", r.Dst, r.Priority)] {
			_ = netlink.RouteDel(&r)
			if via, ok := netip.AddrFromSlice(r.Gw); ok && !inUse[r.Gw.String()] {
				_ = netlink.NeighDel(&netlink.Neigh{LinkIndex: gw.Attrs().Index, IP: via.AsSlice()})
			}
		}
	}
	return nil
}

// peerRouteMetric is the metric of the routes to peer clusters into the bridge.
const peerRouteMetric = 1000

// hostIfName is the node-side veth name of a pod attachment.
func hostIfName(key datapath.PodKey) string { return veth.HostIfName(key) }
