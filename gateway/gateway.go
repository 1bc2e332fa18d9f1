// Package gateway holds weft-gateway: the process on each gateway node that carries traffic
// to peer clusters. It brings its tunnel up, announces itself (endpoint, keys, per-peer
// ports, tunnels) in its node's FabricGateway, renews a Lease to say it is alive (the
// operator publishes both in ClusterNetwork status, which peers read), and keeps the
// tunnel's peers equal to the healthy gateways the ClusterPeers report, each peer cluster's
// ranges routed into it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/gateway/tunnel/geneve"
	"github.com/weft-net/weft/gateway/tunnel/vxlan"
	"github.com/weft-net/weft/gateway/tunnel/wireguard"
	"github.com/weft-net/weft/internal/health"
	"github.com/weft-net/weft/internal/nft"
	"github.com/weft-net/weft/internal/restcfg"
	"github.com/weft-net/weft/internal/securemetrics"
)

// Config is what weft-gateway needs from its command line.
type Config struct {
	NodeName   string
	Namespace  string // the operator's: where the gateway's Lease lives
	Kubeconfig string // empty: in-cluster
	StateDir   string // the private key
	// Interval between syncs and Lease renewals; the Lease lasts LeaseDuration.
	Interval      time.Duration
	LeaseDuration time.Duration
	// MetricsAddr serves /metrics (Metrics) in plain HTTP; "" or "0" disables. Loopback by
	// default: the node's own readers. SecureMetricsAddr serves them over TLS to callers
	// the API server authorizes for /metrics (Prometheus); "" or "0" disables.
	MetricsAddr, SecureMetricsAddr string
}

// DefaultConfig is the gateway's configuration on a node.
func DefaultConfig() Config {
	return Config{NodeName: os.Getenv("NODE_NAME"), Namespace: os.Getenv("POD_NAMESPACE"), StateDir: "/var/lib/weft/gateway",
		Interval: 500 * time.Millisecond, LeaseDuration: 2 * time.Second, MetricsAddr: "127.0.0.1:10391",
		SecureMetricsAddr: ":10392"}
}

// Interface names of the gateway's tunnel device per driver (WireGuard: the stem of its
// per-peer devices' names, and the name of its key file), and an nft pattern matching the
// driver's devices.
var (
	interfaces = map[fabricv1.TunnelType]string{fabricv1.TunnelWireGuard: "weft-wg0", fabricv1.TunnelGeneve: "weft-gn0", fabricv1.TunnelVXLAN: "weft-vx0"}
	devices    = map[fabricv1.TunnelType]string{fabricv1.TunnelWireGuard: "weft-wg*", fabricv1.TunnelGeneve: "weft-gn*", fabricv1.TunnelVXLAN: "weft-vx0"}
)

// defaultPorts apply when the ClusterNetwork names no port.
var defaultPorts = map[fabricv1.TunnelType]int{fabricv1.TunnelWireGuard: 51820, fabricv1.TunnelGeneve: geneve.DefaultPort, fabricv1.TunnelVXLAN: vxlan.DefaultPort}

// Run runs the gateway until ctx ends; the tunnel is removed on the way out (the Lease
// expires and the other nodes stop sending here).
func Run(ctx context.Context, cfg Config) error {
	log := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	if cfg.NodeName == "" || cfg.Namespace == "" {
		return errors.New("the node name and namespace must be set (NODE_NAME, POD_NAMESPACE or flags)")
	}
	restCfg, err := restcfg.Load(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), fabricv1.AddToScheme(scheme)); err != nil {
		return err
	}
	// The kinds the gateway reads and writes are mapped here, not discovered: a gateway that
	// starts while the API server does not answer must not need it to build its clients.
	mapper := staticMapper()
	c, err := client.New(restCfg, client.Options{Scheme: scheme, Mapper: mapper})
	if err != nil {
		return err
	}
	// ClusterPeers, and the gateway's own FabricGateway (a key rotation request), come from
	// a watch: the gateway reads them every Interval.
	peersCache, err := crcache.New(restCfg, crcache.Options{Scheme: scheme, Mapper: mapper, DefaultTransform: crcache.TransformStripManagedFields(),
		ByObject: map[client.Object]crcache.ByObject{&fabricv1.ClusterPeer{}: {},
			&fabricv1.FabricGateway{}: {Field: fields.OneTermEqualSelector("metadata.name", cfg.NodeName)}}})
	if err != nil {
		return err
	}
	go func() {
		if err := peersCache.Start(ctx); err != nil {
			log.Error(err, "ClusterPeer cache stopped")
		}
	}()
	// A gateway that kept what it last read starts from it when the API server does not
	// answer soon (LastKnown); one that has nothing waits for it longer, then exits.
	known, err := LoadLastKnown(cfg.StateDir)
	if err != nil {
		log.Error(err, "the state last read is unusable: starting from the API server")
	}
	g := &gw{cfg: cfg, c: c, peersFrom: peersCache, log: log, health: map[netip.Addr]bool{}, known: known}
	wait := 30 * time.Second
	if known != nil {
		wait = startTimeout
	}
	syncCtx, cancel := context.WithTimeout(ctx, wait)
	_, err = peersCache.GetInformer(syncCtx, &fabricv1.ClusterPeer{})
	if err == nil {
		_, err = peersCache.GetInformer(syncCtx, &fabricv1.FabricGateway{})
	}
	if err == nil && !peersCache.WaitForCacheSync(syncCtx) { // the cache started, its first list in
		err = syncCtx.Err()
	}
	cancel()
	switch {
	case err == nil:
		g.synced.Store(true)
	case known == nil:
		return fmt.Errorf("watching ClusterPeers: %w", err)
	default:
		log.Info("the API server does not answer: the ClusterPeers last read, kept on the node, are used until it does",
			"reason", err.Error(), "peers", len(known.Peers), "savedAt", known.SavedAt)
		g.peers, g.read = known.Peers, true
		go func() {
			_, _ = peersCache.GetInformer(ctx, &fabricv1.ClusterPeer{})
			_, _ = peersCache.GetInformer(ctx, &fabricv1.FabricGateway{})
			if peersCache.WaitForCacheSync(ctx) {
				g.synced.Store(true)
				log.Info("the API server answers again: reading the ClusterPeers from it")
			}
		}()
	}
	if err := g.start(ctx); err != nil {
		return err
	}
	defer g.tun.Close()
	// It probes the peers' gateways, to leave a dead one as fast — through the tunnel to
	// each where the driver has a device per peer, from the node's address (which the
	// peer lets through the tunnel).
	probeConn, err := net.ListenPacket("udp4", netip.AddrPortFrom(g.endpoint.Addr(), 0).String())
	if err != nil {
		return fmt.Errorf("health prober: %w", err)
	}
	changed := make(chan struct{}, 1)
	g.prober = health.NewProber(probeConn, health.Options{OnChange: func(health.Target, bool) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}})
	go func() { _ = g.prober.Run(ctx) }()
	if !securemetrics.Disabled(cfg.MetricsAddr) || !securemetrics.Disabled(cfg.SecureMetricsAddr) {
		g.metrics = NewMetrics()
		g.metrics.source = g.metricsView
		reg := prometheus.NewRegistry()
		reg.MustRegister(g.metrics)
		securemetrics.ServeAll(ctx, log, cfg.MetricsAddr, cfg.SecureMetricsAddr, reg, restCfg) // the tunnels do not wait for them
	}
	// Agents and peer gateways probe this gateway's health port to know within a few
	// hundred milliseconds that it is gone, and to send to it again once it is back. Peer
	// gateways are answered at once (their probes are how both ends learn that a tunnel
	// carries traffic); this cluster's agents only while a tunnel of this gateway carries
	// traffic to a peer, or while there is none to carry: a restarted gateway takes no flow
	// it would drop, and one whose every tunnel failed gives its flows to the others.
	probes, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", health.DefaultPort))
	if err != nil {
		return fmt.Errorf("health responder: %w", err)
	}
	go func() { _ = health.Respond(ctx, probes, g.answers) }()
	log.Info("gateway up", "tunnel", g.tun.Mode(), "endpoint", g.endpoint, "publicKey", g.tun.PublicKey())
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	switchKey := time.NewTimer(time.Hour)
	defer switchKey.Stop()
	reread := true
	started, wasReady := time.Now(), false
	// The Lease and the FabricGateway are written from a goroutine of their own: this
	// loop, which fails over, never waits for the API server (stopped, it would hold a
	// write for as long as it stays stopped).
	published := make(chan struct{})
	go func() { defer close(published); g.publish(ctx) }()
	defer func() { <-published }() // before the tunnel closes
	for {
		// Every Interval: reread the peers (from the cache). On a health change or at a key
		// switch: only recompute the peers from the last read (a key switch must happen at
		// its moment).
		if err := g.sync(ctx, reread); err != nil && ctx.Err() == nil {
			log.Error(err, "sync")
		}
		g.mu.Lock()
		at := g.nextKeySwitch(time.Now())
		g.mu.Unlock()
		if ready := g.ready.Load(); ready != wasReady {
			log.Info("answering this cluster's health probes", "answering", ready, "since start", time.Since(started).Round(time.Millisecond))
			wasReady = ready
		}
		if !at.IsZero() {
			switchKey.Reset(time.Until(at))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			reread = true
		case <-changed:
			reread = false
		case <-switchKey.C:
			reread = false
		}
	}
}

// PeerKeyLead is how long before a peer gateway's announced key switch this gateway switches
// to the peer's next key. Both ends start a handshake when they switch; had they switched at
// the same moment, their handshakes would cross and each would drop the other's answer
// (WireGuard retries only 5 s later). Switching first, this end's handshake fails at once
// (the peer still has its old key) and the peer's, made when it switches, succeeds. Clocks
// of the two clusters may differ by up to about this much.
const PeerKeyLead = 200 * time.Millisecond

// ReassertEvery is how often a gateway applies its unchanged tunnel peers again.
const ReassertEvery = 5 * time.Second

// Key rotations: a request's time closer than minKeyLead (or past: the gateway was down when
// it came) is moved to lateKeyLead from now, so that the peers learn the next key first.
const (
	minKeyLead  = 2 * time.Second
	lateKeyLead = 15 * time.Second
)

// rotateKey stages the rotation the FabricGateway asks for (once per request), and says
// whether the request is done (carried out, or dropped with err saying why).
func (g *gw) rotateKey(request string, now time.Time) (done bool, err error) {
	rot, ok := g.tun.(tunnel.KeyRotator)
	if request == "" {
		return false, nil
	}
	if !ok {
		return true, fmt.Errorf("the %s tunnel has no keys to rotate: request %q dropped", g.tunType, request)
	}
	if request == rot.LastRotation() {
		return true, nil
	}
	if st, staged := rot.Staged(); staged && st.ID == request {
		return false, nil
	}
	at, err := time.Parse(time.RFC3339Nano, request)
	if err != nil {
		return true, fmt.Errorf("key rotation request %q is not an RFC 3339 time: dropped", request)
	}
	if at.Before(now.Add(minKeyLead)) {
		at = now.Add(lateKeyLead)
	}
	if err := rot.StageKey(request, at); err != nil {
		return false, err
	}
	g.log.Info("key rotation staged", "request", request, "switchAt", at)
	return false, nil
}

// commitKey switches to the staged key once its moment has come.
func (g *gw) commitKey(ctx context.Context, now time.Time) error {
	rot, ok := g.tun.(tunnel.KeyRotator)
	if !ok {
		return nil
	}
	st, staged := rot.Staged()
	if !staged || now.Before(st.At) {
		return nil
	}
	if err := rot.CommitKey(ctx); err != nil {
		return err
	}
	g.log.Info("key rotated", "request", st.ID, "publicKey", g.tun.PublicKey(), "late", now.Sub(st.At))
	g.tunnelsAt, g.switched = time.Time{}, now
	return nil
}

// nextKeySwitch is the next moment a key changes: this gateway's staged rotation or a peer
// gateway's announced one (zero: none ahead).
func (g *gw) nextKeySwitch(now time.Time) time.Time {
	var next time.Time
	consider := func(at time.Time) {
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if rot, ok := g.tun.(tunnel.KeyRotator); ok {
		if st, staged := rot.Staged(); staged {
			consider(st.At)
		}
	}
	for _, p := range g.peers {
		for _, gw := range p.Status.Gateways {
			if gw.NextPublicKey != "" && gw.KeySwitchTime != nil {
				consider(gw.KeySwitchTime.Add(-PeerKeyLead))
			}
		}
	}
	return next
}

type gw struct {
	// mu guards what the failover loop (sync) and the publisher (reportStatus) share: the
	// tunnel, the peers, what was applied and the report. The publisher's API calls are
	// made without it.
	mu        sync.Mutex
	cfg       Config
	c         client.Client
	peersFrom client.Reader // an informer cache: ClusterPeers are read every Interval
	log       klog.Logger
	tunType   fabricv1.TunnelType
	// encapPort is the port of a tunnel that does not authenticate its packets (0:
	// WireGuard); encapPeers the peer gateway addresses last allowed to it (nil: none yet).
	encapPort  int
	encapPeers []netip.Addr

	tun       tunnel.Tunnel
	endpoint  netip.AddrPort
	prober    *health.Prober
	metrics   *Metrics // nil: not served
	applied   []tunnel.Peer
	appliedAt time.Time              // when SetPeers last ran
	self      string                 // "<cluster ID>/<node>"
	peers     []fabricv1.ClusterPeer // the last read
	read      bool                   // peers holds a read
	// report is what the FabricGateway says of the tunnels, refreshed every tunnelsEvery.
	report    []fabricv1.GatewayTunnel
	tunnelsAt time.Time
	switched  time.Time                     // when this gateway last switched keys
	lease     *coordinationv1.Lease         // as last written
	reported  *fabricv1.FabricGatewayStatus // the FabricGateway's status as last written
	nodeUID   types.UID                     // the node's, for the FabricGateway's owner
	health    map[netip.Addr]bool           // peer gateways answering, as last recorded (events)
	// translated is the translation table last applied (translate.go); "" none since start.
	translated string
	// ready: a tunnel carries traffic to a peer gateway, or there is none to carry; then
	// this cluster's agents' health probes are answered. peerGateways are the addresses of
	// the peer gateways, whose probes are always answered. Both are read by the responder.
	ready        atomic.Bool
	activeAt     time.Time // when a tunnel was last seen active (or there was none to carry)
	peerGateways atomic.Pointer[map[netip.Addr]bool]
	// known is the state read at start, kept on the node (nil: none yet); synced says the
	// ClusterPeer cache has synced (until then the peers come from known); keptPeers is
	// peersVersion of the peers kept (publish's own).
	known     *LastKnown
	synced    atomic.Bool
	keptPeers string
}

// keepPeers keeps the peers last read on the node when they changed (with the rest of the
// state read at start). The publishing goroutine calls it: the disk write stays off the
// loop that fails over, and out of its lock.
func (g *gw) keepPeers() {
	g.mu.Lock()
	known, peers, read := g.known, g.peers, g.read
	g.mu.Unlock()
	if known == nil || !read || !g.synced.Load() {
		return // nothing read yet, or only what was kept
	}
	v := peersVersion(peers)
	if v == g.keptPeers {
		return
	}
	k := *known
	k.Peers = peers // replaced whole on each read, never changed in place
	if err := k.Save(g.cfg.StateDir); err != nil {
		g.log.Error(err, "keeping the ClusterPeers read on the node")
		return
	}
	g.keptPeers = v
}

// answers says whether a health probe from the address is answered: always a peer
// gateway's, this cluster's agents' only while the gateway is ready.
func (g *gw) answers(from netip.Addr) bool {
	if g.ready.Load() {
		return true
	}
	peers := g.peerGateways.Load()
	return peers != nil && (*peers)[from]
}

// tunnelsEvery is how often the gateway reads its tunnels' state (handshakes) for its report.
const tunnelsEvery = 5 * time.Second

// start waits for the ClusterNetwork and the node's address, and brings the tunnel up.
func (g *gw) start(ctx context.Context) error {
	for {
		err := g.tryStart(ctx)
		if err == nil {
			return nil
		}
		g.log.Info("waiting", "for", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// tryStart reads what the tunnel needs from the API server — or, when it does not answer
// within startTimeout, from the state last read — and brings the tunnel up.
func (g *gw) tryStart(ctx context.Context) error {
	var k LastKnown
	var err error
	if g.known != nil && !g.synced.Load() {
		err = errors.New("the API server did not answer the ClusterPeer watch")
	} else {
		k, err = g.readStart(ctx)
	}
	switch {
	case err == nil:
		k.Peers = nil
		if g.known != nil {
			k.Peers = g.known.Peers
		}
		if err := k.Save(g.cfg.StateDir); err != nil {
			g.log.Error(err, "keeping the state read on the node")
		}
		g.known = &k
	case g.known != nil:
		g.log.Info("starting from the state last read, kept on the node", "reason", err.Error(), "savedAt", g.known.SavedAt)
		k = *g.known
	default:
		return err
	}
	return g.bringUp(ctx, &k.ClusterNetwork, k.NodeIP, k.NodeUID)
}

// readStart reads the ClusterNetwork and the node's address from the API server, within
// startTimeout.
func (g *gw) readStart(ctx context.Context) (LastKnown, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cn := &fabricv1.ClusterNetwork{}
	if err := g.c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return LastKnown{}, fmt.Errorf("the ClusterNetwork: %w", err)
	}
	node := &corev1.Node{}
	if err := g.c.Get(ctx, client.ObjectKey{Name: g.cfg.NodeName}, node); err != nil {
		return LastKnown{}, fmt.Errorf("node %s: %w", g.cfg.NodeName, err)
	}
	var ip netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip, _ = netip.ParseAddr(a.Address)
		}
	}
	if !ip.IsValid() {
		return LastKnown{}, fmt.Errorf("node %s has no InternalIP", g.cfg.NodeName)
	}
	return LastKnown{ClusterNetwork: keptNetwork(cn), NodeIP: ip, NodeUID: node.UID}, nil
}

// bringUp brings the tunnel up for the ClusterNetwork on the node's address.
func (g *gw) bringUp(ctx context.Context, cn *fabricv1.ClusterNetwork, ip netip.Addr, nodeUID types.UID) error {
	g.tunType = cn.Spec.Gateways.Tunnel
	if g.tunType == "" {
		g.tunType = fabricv1.TunnelWireGuard
	}
	port := int(cn.Spec.Gateways.Port)
	if port == 0 {
		port = defaultPorts[g.tunType]
	}
	self := fabricv1.GatewayPeerName(cn.Spec.ClusterID, g.cfg.NodeName)
	reg := tunnel.NewRegistry()
	if err := errors.Join(wireguard.Register(reg), geneve.Register(reg), vxlan.Register(reg)); err != nil {
		return err
	}
	// The tunnel device takes what the uplink carries less the tunnel's own bytes (pods
	// leave room for the largest: datapath.PodMTU).
	mtu := 0
	if up, err := uplinkMTU(ip); err == nil {
		mtu = up - fabricv1.TunnelOverhead(g.tunType)
	} else {
		g.log.Info("the tunnel takes its driver's default MTU", "reason", err.Error())
	}
	// The installation's ClusterNetwork UID in the name keeps the per-peer devices' names
	// (and userspace WireGuard's control sockets, which every network namespace of a
	// machine shares) apart between two clusters with the same ID and node names on one
	// machine: two labs side by side.
	tun, err := reg.New(string(g.tunType), tunnel.Config{Name: self + "/" + string(cn.UID), Interface: interfaces[g.tunType], ListenPort: port,
		LocalIP: ip, Address: netip.PrefixFrom(ip, ip.BitLen()), StateDir: g.cfg.StateDir, MTU: mtu,
		SegmentedOnly: cn.Spec.Datapath.Backend == fabricv1.DatapathEBPF && cn.Spec.Datapath.Encapsulation != fabricv1.EncapsulationNone})
	if err != nil {
		return err
	}
	if err := tun.Up(ctx); err != nil {
		_ = tun.Close()
		return err
	}
	own := fabricv1.CIDRPrefixes(append(slices.Clone(cn.Spec.PodCIDRs), cn.Spec.ServiceCIDRs...)...)
	encapPort := 0
	if g.tunType != fabricv1.TunnelWireGuard { // WireGuard authenticates every packet itself
		encapPort = port
	}
	if err := prepareKernel(devices[g.tunType], own, encapPort); err != nil {
		_ = tun.Close()
		return err
	}
	g.tun, g.endpoint, g.self, g.nodeUID = tun, netip.AddrPortFrom(ip, uint16(port)), self, nodeUID
	g.encapPort, g.encapPeers = encapPort, nil
	return nil
}

// nftRules is prepareKernel's nftables table. encapPort, when not 0, is the UDP port of a
// tunnel without authentication of its own (Geneve, VXLAN): only peer gateways (sets peers4
// and peers6, which setPeerGateways fills) may send to it.
func nftRules(ifname string, own []netip.Prefix, encapPort int, senders []netip.Addr) string {
	var v4, v6 []string
	for _, p := range own {
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	encap := ""
	if encapPort != 0 {
		s4, s6 := nft.ByFamily(senders)
		encap = nft.Set("peers4", "ipv4_addr", true, s4) + nft.Set("peers6", "ipv6_addr", true, s6) + fmt.Sprintf(`	chain encap {
		type filter hook input priority filter - 1; policy accept;
		meta nfproto ipv4 udp dport %[1]d ip saddr != @peers4 counter drop comment "tunnel packets from no peer gateway"
		meta nfproto ipv6 udp dport %[1]d ip6 saddr != @peers6 drop
	}
`, encapPort)
	}
	return fmt.Sprintf(`table inet weft-gateway
delete table inet weft-gateway
table inet weft-gateway {
%s%s%s	chain forward {
		type filter hook forward priority mangle; policy accept;
		oifname %[4]q tcp flags syn / syn,rst tcp option maxseg size set rt mtu
	}
	chain output {
		type filter hook output priority mangle; policy accept;
		oifname %[4]q tcp flags syn / syn,rst tcp option maxseg size set rt mtu
	}
	chain from_tunnel {
		type filter hook forward priority filter; policy accept;
		iifname %[4]q meta nfproto ipv4 ip saddr @own4 counter drop comment "from a tunnel with this cluster's own addresses"
		iifname %[4]q meta nfproto ipv6 ip6 saddr @own6 counter drop
		iifname %[4]q meta nfproto ipv4 ip daddr @own4 accept
		iifname %[4]q meta nfproto ipv6 ip6 daddr @own6 accept
		iifname %[4]q ct state established,related accept comment "replies to host-network clients"
		iifname %[4]q counter drop comment "out of a tunnel to what the fabric does not carry"
	}
	chain to_node {
		type filter hook input priority filter; policy accept;
		iifname != %[4]q accept
		meta nfproto ipv4 ip daddr @own4 accept
		meta nfproto ipv6 ip6 daddr @own6 accept
		udp dport %[5]d accept comment "peer gateways' health probes"
		ct state established,related accept
		counter drop comment "out of a tunnel to this node"
	}
}
`, nft.Set("own4", "ipv4_addr", true, v4), nft.Set("own6", "ipv6_addr", true, v6), encap, ifname, health.DefaultPort)
}

// peerGatewaysNow reads the addresses the table in place lets reach the tunnel port (none
// without one): a restarted gateway keeps them while it reads the peers again.
func peerGatewaysNow() []netip.Addr {
	var out []netip.Addr
	for _, set := range []string{"peers4", "peers6"} {
		listing, err := exec.Command(nft.Path(), "list", "set", "inet", "weft-gateway", set).Output()
		if err != nil {
			continue
		}
		m := nftElements.FindSubmatch(listing)
		if m == nil {
			continue
		}
		for _, e := range strings.Split(string(m[1]), ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(e)); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

var nftElements = regexp.MustCompile(`elements = \{([^}]*)\}`)

// setPeerGateways makes the addresses peer gateways send tunnel packets from those that
// may reach an unauthenticated tunnel's port (nftRules' peers4 and peers6), in one nft
// transaction.
func setPeerGateways(addrs []netip.Addr) error {
	var b strings.Builder
	b.WriteString("flush set inet weft-gateway peers4\nflush set inet weft-gateway peers6\n")
	for _, a := range addrs {
		set := "peers4"
		if a.Is6() && !a.Is4In6() {
			set = "peers6"
		}
		fmt.Fprintf(&b, "add element inet weft-gateway %s { %s }\n", set, a.Unmap())
	}
	if err := nft.Apply(b.String()); err != nil {
		return fmt.Errorf("nft (peer gateways allowed to the tunnel port): %w", err)
	}
	return nil
}

// uplinkMTU is the MTU of the link holding the node's address.
func uplinkMTU(ip netip.Addr) (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, err
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, err
			}
			return link.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("no link holds %s", ip)
}

// prepareKernel lets the node forward between the tunnel and the cluster, accepts replies
// that come back through another gateway (loose reverse-path filtering), spreads flows over
// a peer's gateways by addresses and ports (multipath hash policy 1), and clamps the MSS of
// TCP connections entering the tunnel (devices matching the nft pattern ifname) to its MTU,
// so large transfers never depend on ICMP "fragmentation needed" making it back (no PMTU
// black hole). And what comes out of the tunnel reaches only what the fabric carries:
// own (this cluster's pod and service ranges) — never the node's addresses, other nodes',
// host services or the metadata address — but for the replies of connections made from
// this side (a host-network client's). To the node itself only peer gateways' health
// probes pass, and replies to what the node sent (its own probes). What is dropped is
// counted (nft list table inet weft-gateway).
func prepareKernel(ifname string, own []netip.Prefix, encapPort int) error {
	if err := nft.Apply(nftRules(ifname, own, encapPort, peerGatewaysNow())); err != nil {
		return fmt.Errorf("nft (MSS clamping, tunnel filter): %w", err)
	}
	// Reverse-path filtering uses the larger of "all" and the device's setting: 2 (loose)
	// on "all" covers every tunnel device, present and future.
	for path, value := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                "1",
		"/proc/sys/net/ipv4/conf/all/rp_filter":        "2",
		"/proc/sys/net/ipv4/fib_multipath_hash_policy": "1",
	} {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	// The same seed on every node: a connection's replies come back through the gateways
	// that carried it (fabricv1.MultipathHashSeed; kernels before 6.11 have none).
	_ = os.WriteFile("/proc/sys/net/ipv4/fib_multipath_hash_seed", []byte(fabricv1.MultipathHashSeed), 0o644)
	// IPv6 may be off in the node's namespace.
	_ = os.WriteFile("/proc/sys/net/ipv6/fib_multipath_hash_policy", []byte("1"), 0o644)
	return nil
}

// sync makes the tunnel's peers what the ClusterPeers say and the prober sees; with reread
// it reads the ClusterPeers again (from the cache) first. It never calls the API server.
func (g *gw) sync(ctx context.Context, reread bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	if err := g.commitKey(ctx, time.Now()); err != nil {
		errs = append(errs, fmt.Errorf("key rotation: %w", err))
	}
	// Until the cache has synced (a gateway started from the state it kept, the API server
	// away), the peers last read stay.
	if (reread || !g.read) && g.synced.Load() {
		peers := &fabricv1.ClusterPeerList{}
		// The cache's first read waits for its watch: not past the next round.
		lctx, cancel := context.WithTimeout(ctx, g.cfg.Interval)
		defer cancel()
		if err := g.peersFrom.List(lctx, peers); err != nil {
			errs = append(errs, err)
		} else {
			g.peers, g.read = peers.Items, true
		}
	}
	if g.read {
		errs = append(errs, g.syncPeers(ctx))
	}
	return errors.Join(errs...)
}

// publish keeps the peers read on the node (when they changed), reports in the FabricGateway
// (when something changed) and renews the Lease every Interval, until ctx ends. Each round's
// writes are bounded by the Lease's duration: a round against a stopped API server gives up,
// and the next tries again.
func (g *gw) publish(ctx context.Context) {
	tick := time.NewTicker(g.cfg.Interval)
	defer tick.Stop()
	for {
		g.keepPeers()
		wctx, cancel := context.WithTimeout(ctx, max(g.cfg.LeaseDuration, g.cfg.Interval))
		// The report never holds the renewal back: a gateway that cannot report is still alive.
		if err := errors.Join(g.reportStatus(wctx), g.renew(wctx)); err != nil && ctx.Err() == nil {
			g.log.Error(err, "publishing")
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// renew renews the gateway's Lease: its liveness, nothing else. It starts from the Lease it
// last wrote, so a renewal is one request; when the write conflicts (someone else changed
// the Lease) it reads the Lease and writes again.
func (g *gw) renew(ctx context.Context) error {
	err := g.writeLease(ctx)
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		g.lease = nil
		err = g.writeLease(ctx)
	}
	return err
}

func (g *gw) writeLease(ctx context.Context) error {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: g.cfg.Namespace, Name: fabricv1.GatewayLeaseName(g.cfg.NodeName)}}
	create := false
	if g.lease != nil {
		lease = g.lease.DeepCopy()
	} else if err := g.c.Get(ctx, client.ObjectKeyFromObject(lease), lease); apierrors.IsNotFound(err) {
		create = true
	} else if err != nil {
		return err
	}
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[fabricv1.LabelGateway] = "true"
	lease.Spec.HolderIdentity = ptr.To(g.cfg.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32((g.cfg.LeaseDuration + time.Second - 1) / time.Second))
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	var err error
	if create {
		err = g.c.Create(ctx, lease)
	} else {
		err = g.c.Update(ctx, lease)
	}
	if err == nil {
		g.lease = lease
	}
	return err
}

// reportStatus carries out a key rotation the FabricGateway asks for and writes its status —
// endpoint, keys, per-peer ports, tunnels, readiness — when it differs from what was last
// written. The FabricGateway is created, owned by the node, if it is not there.
func (g *gw) reportStatus(ctx context.Context) error {
	fg, st, rotateErr, err := g.statusToReport(ctx)
	if err != nil || (g.reported != nil && equality.Semantic.DeepEqual(*g.reported, st)) {
		return errors.Join(rotateErr, err)
	}
	fg.Status = st
	err = g.c.Status().Update(ctx, fg)
	if apierrors.IsConflict(err) {
		// What was read (from the cache) is older than the object: this gateway's own last
		// write not seen yet, or a key rotation asked for meanwhile. Read the object itself
		// and write again; a rotation asked for is carried out next round.
		fresh := &fabricv1.FabricGateway{}
		if err = g.c.Get(ctx, client.ObjectKeyFromObject(fg), fresh); err == nil {
			fresh.Status = st
			err = g.c.Status().Update(ctx, fresh)
		}
	}
	if err != nil {
		g.reported = nil // read again next time
		return errors.Join(rotateErr, fmt.Errorf("reporting in FabricGateway %s: %w", g.cfg.NodeName, err))
	}
	g.reported = st.DeepCopy()
	return rotateErr
}

// statusToReport reads the FabricGateway (creating it if it is not there), carries out a key
// rotation it asks for, and gives the status the gateway has now.
func (g *gw) statusToReport(ctx context.Context) (*fabricv1.FabricGateway, fabricv1.FabricGatewayStatus, error, error) {
	fg := &fabricv1.FabricGateway{}
	err := g.peersFrom.Get(ctx, client.ObjectKey{Name: g.cfg.NodeName}, fg)
	if apierrors.IsNotFound(err) {
		fg = &fabricv1.FabricGateway{ObjectMeta: metav1.ObjectMeta{Name: g.cfg.NodeName,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: g.cfg.NodeName, UID: g.nodeUID}}}}
		if err := g.c.Create(ctx, fg); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fabricv1.FabricGatewayStatus{}, nil, fmt.Errorf("creating FabricGateway %s: %w", g.cfg.NodeName, err)
		}
		g.reported = nil
	} else if err != nil {
		return nil, fabricv1.FabricGatewayStatus{}, nil, err
	}
	// What the tunnel and the failover loop hold, read under its lock.
	g.mu.Lock()
	defer g.mu.Unlock()
	st := fabricv1.FabricGatewayStatus{Endpoint: g.endpoint.String(), PublicKey: g.tun.PublicKey(), Tunnel: g.tunType,
		LastKeyRotation: fg.Status.LastKeyRotation, Conditions: slices.Clone(fg.Status.Conditions)}
	if g.reported != nil {
		st.LastKeyRotation, st.Conditions = g.reported.LastKeyRotation, slices.Clone(g.reported.Conditions)
	}
	var rotateErr error
	if req := fg.Spec.RotateKeyAt; req != "" && req != st.LastKeyRotation {
		if done, err := g.rotateKey(req, time.Now()); done {
			st.LastKeyRotation, rotateErr = req, err
		} else if err != nil {
			rotateErr = err
		}
	}
	if rot, ok := g.tun.(tunnel.KeyRotator); ok {
		if staged, ok := rot.Staged(); ok {
			st.NextPublicKey, st.KeySwitchTime = staged.PublicKey, &metav1.MicroTime{Time: staged.At.UTC()}
		}
	}
	if ports := g.tun.PeerPorts(); len(ports) > 0 {
		st.PeerPorts = map[string]int32{}
		for k, v := range ports {
			st.PeerPorts[k] = int32(v)
		}
	}
	if time.Since(g.tunnelsAt) >= tunnelsEvery {
		// A report that cannot be read keeps the previous one.
		if ts, err := g.tun.Status(ctx); err != nil {
			g.log.Error(err, "tunnel status")
		} else {
			g.report = QuietReport(g.report, TunnelReport(g.applied, ts, g.answering()), g.switched)
		}
		g.tunnelsAt = time.Now()
	}
	st.Tunnels = g.report
	for _, t := range st.Tunnels {
		if t.State == fabricv1.TunnelActive {
			st.ActiveTunnels++
		} else {
			st.StandbyTunnels++
		}
	}
	if g.ready.Load() {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: fabricv1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: "TunnelUp", Message: fmt.Sprintf("the %s tunnel carries traffic to %d peer gateways", g.tunType, len(g.applied))})
	} else {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: fabricv1.ConditionReady, Status: metav1.ConditionFalse,
			Reason: "NoActiveTunnel", Message: "no tunnel to a peer gateway carries traffic: this cluster's nodes send through the other gateways"})
	}
	return fg, st, rotateErr, nil
}

func (g *gw) syncPeers(ctx context.Context) error {
	// Probe every gateway the peers announce, through its tunnel where it has a device of
	// its own (until SetPeers made the device, the probes fail: a new peer gateway starts
	// on standby); send only to those that answer.
	devs, _ := g.tun.(tunnel.PerPeerDevices)
	var targets []health.Target
	var senders []netip.Addr
	for _, p := range g.peers {
		for _, gw := range p.Status.Gateways {
			if ep, err := netip.ParseAddrPort(gw.Endpoint); err == nil {
				senders = append(senders, ep.Addr())
				tg := health.Target{Addr: netip.AddrPortFrom(ep.Addr(), health.DefaultPort)}
				if devs != nil {
					tg.Via = devs.PeerDevice(fabricv1.GatewayPeerName(p.Spec.ClusterID, gw.Node))
				}
				targets = append(targets, tg)
			}
		}
	}
	g.prober.SetTargets(targets)
	peerGateways := make(map[netip.Addr]bool, len(senders))
	for _, a := range senders {
		peerGateways[a] = true
	}
	g.peerGateways.Store(&peerGateways)
	if err := g.allowSenders(senders); err != nil {
		return err
	}
	up := KeySwitchGrace(g.prober.Answering(), g.health, g.peers, time.Now())
	g.recordHealth(ctx, up)
	if err := g.translate(); err != nil {
		return err
	}
	want := DesiredPeers(g.self, g.tunType, g.tun.PeerPorts() != nil, g.peers, answeringIn(up), time.Now())
	active := 0
	for _, p := range want {
		if !p.Standby {
			active++
		}
	}
	// Ready follows the tunnels: with none active to a peer that has candidates for
	// unreadyAfter, this cluster's agents send elsewhere (Standby peers carry nothing).
	now := time.Now()
	if Ready(want) {
		g.activeAt = now
	}
	g.ready.Store(StillReady(want, g.activeAt, now))
	same := reflect.DeepEqual(want, g.applied)
	if same && time.Since(g.appliedAt) < ReassertEvery {
		return nil
	}
	// Unchanged peers are applied again now and then: the driver leaves what is right
	// alone and puts back the routes into its tunnels that someone else removed.
	if err := g.tun.SetPeers(ctx, want); err != nil {
		return err
	}
	g.appliedAt = time.Now()
	if same {
		return nil
	}
	g.log.Info("tunnel peers", "peers", len(want), "active", active)
	g.applied = want
	g.tunnelsAt = time.Time{} // report the change with the next renewal
	return nil
}

// unreadyAfter is how long a gateway that was ready stays ready with no active tunnel: a
// moment when every peer gateway seems silent at once (this node starved of CPU for a few
// hundred milliseconds) must not move this cluster's flows twice; a lasting failure of the
// gateway's path to every peer does.
const unreadyAfter = 300 * time.Millisecond

// StillReady is Ready with unreadyAfter's hold: a gateway whose last active tunnel was at
// activeAt (zero: never) is ready at now.
func StillReady(peers []tunnel.Peer, activeAt, now time.Time) bool {
	return Ready(peers) || !activeAt.IsZero() && now.Sub(activeAt) < unreadyAfter
}

// Ready says whether a gateway with these tunnel peers can carry its cluster's traffic: one
// of them is active, or there is none (nothing to carry, or only peers without a candidate
// gateway: their traffic has nowhere to go from any gateway).
func Ready(peers []tunnel.Peer) bool {
	for _, p := range peers {
		if !p.Standby {
			return true
		}
	}
	return len(peers) == 0
}

// allowSenders lets the peers' gateways, and only them, reach an unauthenticated tunnel's
// port, when that changed.
func (g *gw) allowSenders(addrs []netip.Addr) error {
	if g.encapPort == 0 {
		return nil
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if g.encapPeers != nil && slices.Equal(addrs, g.encapPeers) {
		return nil
	}
	if err := setPeerGateways(addrs); err != nil {
		return err
	}
	g.encapPeers = append([]netip.Addr{}, addrs...)
	return nil
}

// keySwitchGrace is how long around a peer gateway's announced key switch a tunnel that
// answered before counts as answering though its probes fail: during the switch the tunnel
// is down for a moment (PeerKeyLead, a handshake), and failing over in the middle of a
// rotation moves flows between gateways whose keys are changing.
const keySwitchGrace = 2 * time.Second

// KeySwitchGrace returns up with the peer gateways that were answering (before, as last
// recorded) and are within keySwitchGrace of their announced key switch kept up.
func KeySwitchGrace(up, before map[netip.Addr]bool, peers []fabricv1.ClusterPeer, now time.Time) map[netip.Addr]bool {
	out := maps.Clone(up)
	for _, p := range peers {
		for _, gw := range p.Status.Gateways {
			ep, err := netip.ParseAddrPort(gw.Endpoint)
			if err != nil || up[ep.Addr()] || !before[ep.Addr()] || gw.KeySwitchTime == nil {
				continue
			}
			if at := gw.KeySwitchTime.Time; now.After(at.Add(-PeerKeyLead-keySwitchGrace)) && now.Before(at.Add(keySwitchGrace)) {
				out[ep.Addr()] = true
			}
		}
	}
	return out
}

// answering is the health prober's view of a peer gateway.
func (g *gw) answering() func(fabricv1.GatewayStatus) bool { return answeringIn(g.prober.Answering()) }

func answeringIn(up map[netip.Addr]bool) func(fabricv1.GatewayStatus) bool {
	return func(gw fabricv1.GatewayStatus) bool {
		ep, err := netip.ParseAddrPort(gw.Endpoint)
		return err == nil && up[ep.Addr()]
	}
}

// TunnelReport describes the applied peers for the gateway's Lease: state, device, endpoint
// and last handshake from the driver's status (matched by peer name), and whether the peer
// gateway answers probes, sorted by peer. A peer the driver does not report yet (no device
// so far) is listed with what is known.
func TunnelReport(applied []tunnel.Peer, status []tunnel.PeerStatus, answering func(fabricv1.GatewayStatus) bool) []fabricv1.GatewayTunnel {
	byName := map[string]tunnel.PeerStatus{}
	for _, st := range status {
		byName[st.Name] = st
	}
	out := make([]fabricv1.GatewayTunnel, 0, len(applied))
	for _, p := range applied {
		t := fabricv1.GatewayTunnel{Peer: p.Name, State: fabricv1.TunnelActive}
		if p.Standby {
			t.State = fabricv1.TunnelStandby
		}
		if p.Endpoint.IsValid() {
			t.Endpoint = p.Endpoint.String()
			t.Answering = answering != nil && answering(fabricv1.GatewayStatus{Endpoint: t.Endpoint})
		}
		if st, ok := byName[p.Name]; ok {
			t.Device = st.Device
			if !st.LastHandshake.IsZero() {
				t.LastHandshakeTime = &metav1.Time{Time: st.LastHandshake.UTC().Truncate(time.Second)}
			}
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// HandshakeRefresh is how much newer than the published one a tunnel's handshake must be to
// be published (see QuietReport).
const HandshakeRefresh = 4 * time.Minute

// QuietReport is a fresh tunnel report with the handshake times last published kept, unless
// a newer one says something: the first handshake, the first since this gateway switched
// keys (switched), or one HandshakeRefresh after the published one. WireGuard handshakes
// every two minutes while traffic flows (the health probes never stop); publishing each
// would rewrite the gateway's report, and the ClusterNetwork's status, at rest.
func QuietReport(published, fresh []fabricv1.GatewayTunnel, switched time.Time) []fabricv1.GatewayTunnel {
	before := map[string]*metav1.Time{}
	for _, t := range published {
		before[t.Peer] = t.LastHandshakeTime
	}
	out := make([]fabricv1.GatewayTunnel, len(fresh))
	for i, t := range fresh {
		out[i] = t
		old := before[t.Peer]
		if old == nil || t.LastHandshakeTime == nil {
			continue
		}
		newer := t.LastHandshakeTime.Time
		if !newer.Before(old.Add(HandshakeRefresh)) || old.Time.Before(switched) && !newer.Before(switched.Truncate(time.Second)) {
			continue
		}
		out[i].LastHandshakeTime = old
	}
	return out
}

// translate applies the translation for the peers (translate.go) when it changed.
func (g *gw) translate() error {
	script := translateTable(devices[g.tunType], Translations(g.peers))
	if script == g.translated {
		return nil
	}
	if err := applyTranslation(script); err != nil {
		return err
	}
	g.translated = script
	return nil
}

// unrouted are the real ranges behind the peer's aliases: what packets to it carry once
// translated (translate.go), after routing.
func unrouted(p fabricv1.ClusterPeer) []netip.Prefix {
	var out []netip.Prefix
	for _, m := range p.Status.AliasedRanges() {
		out = append(out, m.Remote)
	}
	return out
}

// DesiredPeers gives the tunnel every candidate gateway (same tunnel driver, Probed at now:
// a Lease renewed late is not a failure) of every Accepted peer cluster, each carrying the
// peer's pod and service ranges. Of each peer's gateways, the first maxActive (the peer's,
// by address) of those that answer carry traffic, the others stand by; flows are spread
// across the active ones, and any of them may send to this gateway.
//
// self names this gateway ("<cluster ID>/<node>"). With perPeerPorts (WireGuard: a device
// per peer), a peer gateway is reached on the port it published for self, and with none yet
// the tunnel waits for the peer to reach this end first; otherwise on its endpoint's port.
// answering, when set, is the health prober's view. A peer gateway rotating its key is given
// the next key from PeerKeyLead before its announced switch time on (now is the time of the
// decision).
func DesiredPeers(self string, tun fabricv1.TunnelType, perPeerPorts bool, peers []fabricv1.ClusterPeer, answering func(fabricv1.GatewayStatus) bool, now time.Time) []tunnel.Peer {
	var out []tunnel.Peer
	for _, p := range peers {
		if !p.Status.InForce() {
			continue
		}
		type candidate struct {
			gw fabricv1.GatewayStatus
			ep netip.AddrPort
		}
		var gws []candidate
		for _, gw := range p.Status.Gateways {
			ep, err := netip.ParseAddrPort(gw.Endpoint)
			if gw.Probed(now) && gw.Tunnel == tun && err == nil {
				gws = append(gws, candidate{gw, ep})
			}
		}
		sort.Slice(gws, func(i, j int) bool { return gws[i].ep.Addr().Less(gws[j].ep.Addr()) })
		active := 0
		for _, c := range gws {
			tp := tunnel.Peer{Name: fabricv1.GatewayPeerName(p.Spec.ClusterID, c.gw.Node), PublicKey: c.gw.PublicKey,
				Endpoint: c.ep, Prefixes: p.Status.Prefixes(), Unrouted: unrouted(p)}
			if c.gw.NextPublicKey != "" && c.gw.KeySwitchTime != nil && !now.Before(c.gw.KeySwitchTime.Add(-PeerKeyLead)) {
				tp.PublicKey = c.gw.NextPublicKey
			}
			if perPeerPorts {
				tp.Endpoint = netip.AddrPortFrom(c.ep.Addr(), uint16(c.gw.PeerPorts[self])) // 0: not published yet
			}
			if (answering == nil || answering(c.gw)) && (p.Status.MaxActive == 0 || active < int(p.Status.MaxActive)) {
				active++
			} else {
				tp.Standby = true
			}
			out = append(out, tp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
