// Package agent wires the weft node agent: it reads its node's pod block and the cluster's
// fabric settings, initializes the datapath, serves the weft-cni plugin, installs the plugin
// and its configuration once it can serve, and keeps the datapath's view of the other nodes
// current. cmd/weft-agent is a thin main around Run.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/agent/bgp"
	"github.com/weft-net/weft/agent/cniserver"
	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ebpf"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/agent/ipam"
	"github.com/weft-net/weft/agent/podnet"
	"github.com/weft-net/weft/agent/policysync"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/health"
	"github.com/weft-net/weft/internal/podblocks"
	"github.com/weft-net/weft/internal/restcfg"
)

// Config is the agent's configuration; every field has a flag in cmd/weft-agent.
type Config struct {
	NodeName   string
	Kubeconfig string // empty: in-cluster
	CNISocket  string
	CNIConfDir string
	CNIBinDir  string
	StateDir   string
	OVSRunDir  string
	HealthAddr string
	// PolicyLog is the file that gets a line per connection a logged policy rule matched
	// (empty: the agent's log only).
	PolicyLog string
	// Namespace is the agent's namespace: BGP peers' password Secrets are read there.
	Namespace string
	// BPFFS is where the ebpf datapath pins its programs and maps (mounted if needed).
	BPFFS string
}

// DefaultConfig suits the DaemonSet the operator installs.
func DefaultConfig() Config {
	return Config{NodeName: os.Getenv("NODE_NAME"), CNISocket: "/var/run/weft/cni.sock", CNIConfDir: "/etc/cni/net.d",
		CNIBinDir: "/opt/cni/bin", StateDir: "/var/lib/weft", OVSRunDir: "/var/run/openvswitch", HealthAddr: ":10380",
		PolicyLog: "/var/lib/weft/policy.log", Namespace: os.Getenv("POD_NAMESPACE"), BPFFS: "/sys/fs/bpf"}
}

// ConfFile is the name of the CNI configuration the agent writes.
const ConfFile = "10-weft.conflist"

// Run runs the agent until ctx ends. On the way out it withdraws the CNI configuration (new
// pods wait for the next agent) and leaves the datapath forwarding.
func Run(ctx context.Context, cfg Config) error {
	log := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	if cfg.NodeName == "" {
		return errors.New("the node name is empty (set NODE_NAME or --node-name)")
	}
	restCfg, err := restcfg.Load(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, fabricv1.AddToScheme, mcsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	a := &agentState{cfg: cfg, cs: cs, c: c, restCfg: restCfg, log: log, metrics: prometheus.NewRegistry(),
		report: newNodeReport(c, cfg.NodeName)}
	bgpMetrics := bgp.NewMetrics()
	a.metrics.MustRegister(bgpMetrics)
	a.notReady.Store("starting")
	go a.serveHealth(ctx)

	registry := datapath.NewRegistry()
	for _, register := range []func(*datapath.Registry) error{ovs.Register, ebpf.Register} {
		if err := register(registry); err != nil {
			return err
		}
	}
	in, err := a.waitForInputs(ctx)
	if err != nil {
		return err
	}
	if !in.uninstalling {
		err = a.run(ctx, registry, in, bgpMetrics)
		if !errors.Is(err, errUninstalling) {
			return err
		}
	}
	return a.uninstall(ctx, registry, in)
}

// errUninstalling ends run when the ClusterNetwork is being deleted: weft is being
// uninstalled, and the agent removes it from the node.
var errUninstalling = errors.New("the ClusterNetwork is being deleted")

// uninstalling says whether the ClusterNetwork's deletion waits for the agents' cleanup.
func uninstalling(cn *fabricv1.ClusterNetwork) bool {
	return !cn.DeletionTimestamp.IsZero() && slices.Contains(cn.Finalizers, fabricv1.FinalizerNodeCleanup)
}

// run serves the node until the context ends or the ClusterNetwork is being deleted.
func (a *agentState) run(ctx context.Context, registry *datapath.Registry, in inputs, bgpMetrics *bgp.Metrics) error {
	cfg, log, cs := a.cfg, a.log, a.cs
	// Everything run starts ends with it (an uninstall follows on the parent context).
	ctx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	if err := a.publishCapabilities(ctx, registry, in.backend); err != nil {
		log.Error(err, "publishing the datapath capabilities of this node")
	}
	plog := newPolicyLog(cfg.PolicyLog, log)
	defer plog.close()
	var policies atomic.Pointer[policysync.Syncer] // set once the policy inputs are read
	learnDNS := func(ans datapath.DNSAnswer) {
		if s := policies.Load(); s != nil {
			s.LearnDNS(ctx, ans)
		}
	}
	dp, err := registry.New(string(in.backend), a.datapathOptions(plog.event, learnDNS))
	if err != nil {
		return err
	}
	defer dp.Close()
	if err := a.initDatapath(ctx, dp, in.node); err != nil {
		return err
	}
	log.Info("datapath initialized", "mode", dp.Capabilities().Mode, "blocks", in.node.PodCIDRs)
	store, err := ipam.Open(filepath.Join(cfg.StateDir, "ipam"))
	if err != nil {
		return err
	}
	defer store.Close()
	store.SetBlocks(in.node.PodCIDRs)
	a.blocks = in.node.PodCIDRs

	// One informer cache feeds every part of the agent: nodes and their FabricNodes (remote
	// nodes, BGP), the ClusterNetwork and ClusterPeers (peer routes), and the policy's inputs.
	// The pods of this node come from an informer of their own, filtered by the API server.
	nodesChanged := make(chan struct{}, 1)
	shared, err := a.startCache(ctx, func() { poke(nodesChanged) })
	if err != nil {
		return err
	}
	defer func() { a.cached = nil }() // the cache stops with run's context
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	pods := factory.Core().V1().Pods()
	_ = pods.Informer() // register before Start, or it never runs
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return ctx.Err()
	}

	h := &podnet.Handler{IPAM: store, Datapath: dp, Ready: a.ready,
		Pod: func(_ context.Context, ns, name string) (*corev1.Pod, error) { return pods.Lister().Pods(ns).Get(name) }}
	live, _ := pods.Lister().List(labels.Everything())
	if err := h.Reconcile(ctx, derefPods(live)); err != nil {
		log.Error(err, "reconciling addresses and wiring with the pods on this node")
	}
	// Policy: until the first sync the datapath enforces the policy it saved last time.
	syncer, err := a.startPolicy(ctx, shared, dp)
	if err != nil {
		return err
	}
	policies.Store(syncer)
	h.Wired = func(ctx context.Context) error {
		// A datapath that enforces no policy starts pods anyway; the node does not report
		// the policies realized (their status says on how many nodes they are).
		if err := syncer.Sync(ctx); err != nil && !errors.Is(err, datapath.ErrPolicyUnsupported) {
			return err
		}
		return nil
	}
	if err := a.syncRemotes(ctx, dp); err != nil {
		log.Error(err, "programming remote nodes")
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopRun() // before wg.Wait
	serveErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr <- (&cniserver.Server{Handler: h, Socket: cfg.CNISocket}).Serve(ctx)
	}()
	if err := a.installPlugin(); err != nil {
		return err
	}
	if err := a.writeConf(); err != nil {
		return err
	}
	defer a.removeConf()
	a.notReady.Store("")
	log.Info("weft-agent is ready", "datapath", dp.Capabilities().Mode, "blocks", in.node.PodCIDRs, "encapsulation", in.node.Encapsulation)
	if err := a.report.ready(ctx, metav1.ConditionTrue, "Serving", fmt.Sprintf("the %s datapath serves %v", in.backend, in.node.PodCIDRs)); err != nil {
		log.Error(err, "reporting the node ready")
	}

	// Gateways are probed directly (every 50 ms): a dead one leaves the routes in well under
	// a second, without waiting for its Lease to expire.
	probeConn, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return fmt.Errorf("gateway health probes: %w", err)
	}
	gwChanged := make(chan struct{}, 1)
	prober := health.NewProber(probeConn, health.Options{OnChange: func(gw health.Target, up bool) {
		log.Info("gateway health", "gateway", gw, "up", up)
		poke(gwChanged)
	}})
	proberCtx, stopProber := context.WithCancel(ctx)
	defer stopProber() // before wg.Wait: Run may end without ctx ending (the CNI server failed)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := prober.Run(proberCtx); err != nil {
			log.Error(err, "gateway health probes stopped")
		}
	}()
	peerTick := time.NewTicker(time.Second)
	defer peerTick.Stop()
	var peerRoutes *datapath.PeerRoutes
	var read *peerInputs // the last read of the ClusterNetwork and ClusterPeers
	// syncPeers programs the routes to peer clusters; reread says whether to read the API
	// first (every second) or to reuse the last read (on a health change: failover must
	// not wait for the API server).
	syncPeers := func(reread bool) {
		if reread || read == nil {
			got, err := a.readPeerInputs(ctx)
			if err != nil {
				log.Error(err, "reading peer clusters and gateways")
				return
			}
			read = &got
		}
		want := read.routes(in.node.Name, in.node.IP, prober)
		if peerRoutes != nil && reflect.DeepEqual(*peerRoutes, want) {
			return
		}
		start := time.Now()
		if err := dp.SetPeerRoutes(ctx, want); err != nil {
			log.Error(err, "programming routes to peer clusters")
			return
		}
		log.Info("routes to peer clusters", "prefixes", want.Prefixes, "gateways", want.Gateways, "localGateway", want.LocalGateway,
			"took", time.Since(start).Round(time.Millisecond))
		peerRoutes = &want
	}
	speaker := newBGPNode(a, bgpMetrics)
	defer speaker.stopForRestart()
	syncBGP := func() {
		if read != nil {
			speaker.sync(ctx, read.cn, a.listNodes)
		}
	}
	for {
		select {
		case <-peerTick.C:
			syncPeers(true)
			if read != nil && uninstalling(read.cn) {
				// Polite: the BGP peers withdraw the node's routes at once.
				speaker.off(ctx, "weft is being uninstalled")
				return errUninstalling
			}
			syncBGP()
		case <-gwChanged:
			syncPeers(false)
		case <-ctx.Done():
			a.notReady.Store("stopping")
			return nil
		case err := <-serveErr:
			return fmt.Errorf("CNI server: %w", err)
		case <-nodesChanged:
			if err := a.syncRemotes(ctx, dp); err != nil {
				log.Error(err, "programming remote nodes")
			}
			syncBGP()
		}
	}
}

type agentState struct {
	cfg      Config
	restCfg  *rest.Config
	cs       kubernetes.Interface
	c        client.Client
	log      klog.Logger
	notReady atomic.Value // string: why not ready; "" when ready
	metrics  *prometheus.Registry
	report   *nodeReport // the node's FabricNode status
	// blocks are this node's pod blocks (blocksChanged: its FabricNode now names others).
	blocks        []netip.Prefix
	blocksChanged bool
	// remotes are the remote nodes last given to the datapath (remotesSet: once given);
	// refused, the other nodes' blocks last refused.
	remotes    []datapath.RemoteNode
	remotesSet bool
	refused    []fabricv1.RefusedBlock
	// cached reads from the agent's informer cache while run runs (nil before): what the
	// agent reads every second — the ClusterNetwork, ClusterPeers, nodes, Services and
	// ServiceImports — comes from watches, not from a request each to the API server.
	cached client.Reader
}

// readTimeout bounds a periodic read (from the cache: only a kind's first read waits).
const readTimeout = 5 * time.Second

// reader is where the agent's periodic reads go: the informer cache once it runs.
func (a *agentState) reader() client.Reader {
	if a.cached != nil {
		return a.cached
	}
	return a.c
}

func (a *agentState) ready() error {
	if why, _ := a.notReady.Load().(string); why != "" {
		return errors.New(why)
	}
	return nil
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

type inputs struct {
	backend fabricv1.DatapathBackend
	node    datapath.Node
	// uninstalling: the ClusterNetwork (cnUID) is being deleted and waits for this node's
	// cleanup; node then has the name and whatever blocks the Node still names.
	uninstalling bool
	cnUID        types.UID
}

// waitForInputs waits until the ClusterNetwork exists and the operator has given this node a
// pod block, and reads the node's address.
func (a *agentState) waitForInputs(ctx context.Context) (inputs, error) {
	lastLog := time.Time{}
	for {
		in, why := a.readInputs(ctx)
		if why == nil {
			return in, nil
		}
		a.notReady.Store(why.Error())
		if time.Since(lastLog) > 10*time.Second {
			a.log.Info("waiting", "for", why.Error())
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return inputs{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *agentState) readInputs(ctx context.Context) (inputs, error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := a.c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return inputs{}, fmt.Errorf("the ClusterNetwork: %w", err)
	}
	node, err := a.cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return inputs{}, fmt.Errorf("node %s: %w", a.cfg.NodeName, err)
	}
	fn := &fabricv1.FabricNode{}
	if err := a.c.Get(ctx, client.ObjectKey{Name: a.cfg.NodeName}, fn); err != nil && !apierrors.IsNotFound(err) {
		return inputs{}, fmt.Errorf("FabricNode %s: %w", a.cfg.NodeName, err)
	}
	backend := cn.Spec.Datapath.Backend
	if backend == "" {
		backend = fabricv1.DatapathOVS
	}
	blocks, valid := podblocks.Of(cn).Own(fn.Spec.PodCIDRs)
	if uninstalling(cn) {
		return inputs{backend: backend, uninstalling: true, cnUID: cn.UID,
			node: datapath.Node{Name: a.cfg.NodeName, IP: internalIP(node), PodCIDRs: blocks}}, nil
	}
	ip := internalIP(node)
	if !ip.IsValid() {
		return inputs{}, fmt.Errorf("node %s has no InternalIP yet", a.cfg.NodeName)
	}
	if !valid {
		if len(fn.Spec.PodCIDRs) > 0 {
			return inputs{}, fmt.Errorf("valid pod blocks for node %s: its FabricNode claims %v, not from the cluster's podCIDRs %v (the operator replaces it)",
				a.cfg.NodeName, fn.Spec.PodCIDRs, cn.Spec.PodCIDRs)
		}
		return inputs{}, fmt.Errorf("a pod block for node %s from the operator (FabricNode %s)", a.cfg.NodeName, a.cfg.NodeName)
	}
	encap := string(cn.Spec.Datapath.Encapsulation)
	if encap == "" {
		encap = string(fabricv1.EncapsulationGeneve)
	}
	return inputs{backend: backend, cnUID: cn.UID, node: datapath.Node{Name: a.cfg.NodeName, IP: ip, PodCIDRs: blocks,
		Encapsulation: encap, MTU: int(cn.Spec.Datapath.MTU)}}, nil
}

// uninstall removes weft from the node — the CNI configuration, the datapath, the routes
// BGP imported, the node's BGPNode — retrying until it all went, then says so on the Node
// (the operator lets the ClusterNetwork go once every agent did) and waits for its end.
func (a *agentState) uninstall(ctx context.Context, registry *datapath.Registry, in inputs) error {
	log := a.log.WithValues("datapath", in.backend)
	a.notReady.Store("weft is being uninstalled")
	log.Info("the ClusterNetwork is being deleted: removing weft from this node")
	a.removeConf()
	dp, err := registry.New(string(in.backend), a.datapathOptions(nil, nil))
	if err != nil {
		return err
	}
	defer dp.Close()
	backoff := 500 * time.Millisecond
	for {
		start := time.Now()
		err := a.removeFromNode(ctx, dp, in)
		if err == nil {
			log.Info("weft removed from this node", "took", time.Since(start).Round(time.Millisecond))
			break
		}
		log.Error(err, "removing weft from this node; retrying", "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	a.notReady.Store("weft was uninstalled from this node")
	<-ctx.Done()
	return nil
}

func (a *agentState) removeFromNode(ctx context.Context, dp datapath.Datapath, in inputs) error {
	if err := dp.Uninstall(ctx, in.node); err != nil {
		return fmt.Errorf("datapath: %w", err)
	}
	if err := (bgp.KernelRoutes{}).Sync(nil, nil); err != nil {
		return fmt.Errorf("routes BGP peers announced: %w", err)
	}
	_ = os.Remove(filepath.Join(a.cfg.StateDir, speakerMark))
	err := a.c.Delete(ctx, &fabricv1.BGPNode{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("the node's BGPNode: %w", err)
	}
	if err := a.report.ready(ctx, metav1.ConditionFalse, "Uninstalled", "weft was removed from this node"); err != nil {
		return err
	}
	return a.report.set(ctx, "cleanup", fabricv1.FabricNodeCleanup{ClusterNetworkUID: string(in.cnUID), Time: metav1.Now()})
}

// datapathOptions are the datapath driver's options from the agent's configuration.
func (a *agentState) datapathOptions(onPolicy func(datapath.PolicyEvent), onDNS func(datapath.DNSAnswer)) datapath.Options {
	return datapath.Options{StateDir: a.cfg.StateDir, OVSDB: "unix:" + filepath.Join(a.cfg.OVSRunDir, "db.sock"),
		OVSRunDir: a.cfg.OVSRunDir, BPFFS: a.cfg.BPFFS, OnPolicyEvent: onPolicy, OnDNSAnswer: onDNS}
}

// peerInputs are what routes to peer clusters are computed from.
type peerInputs struct {
	cn    *fabricv1.ClusterNetwork
	peers []fabricv1.ClusterPeer
}

func (a *agentState) readPeerInputs(ctx context.Context) (peerInputs, error) {
	// A cache's first read of a kind waits for its watch to sync: never longer than this
	// (the loop that calls it also fails over).
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	cn := &fabricv1.ClusterNetwork{}
	if err := a.reader().Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return peerInputs{}, err
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := a.reader().List(ctx, peers); err != nil {
		return peerInputs{}, err
	}
	return peerInputs{cn: cn, peers: peers.Items}, nil
}

// routes are the ranges of the connected peer clusters and this cluster's active gateway
// nodes (their endpoint addresses are their node addresses): healthy, answering the
// prober, at most maxActive.
func (p peerInputs) routes(node string, nodeIP netip.Addr, prober *health.Prober) datapath.PeerRoutes {
	r := PeerRoutes(node, p.cn, p.peers)
	targets := make([]health.Target, 0, len(r.Gateways))
	for _, g := range r.Gateways {
		targets = append(targets, health.Target{Addr: netip.AddrPortFrom(g, health.DefaultPort)})
	}
	prober.SetTargets(targets)
	up := prober.Answering()
	return ActivePeerRoutes(r, nodeIP, int(p.cn.Spec.Gateways.MaxActive), func(g netip.Addr) bool { return up[g] })
}

// PeerRoutes computes what the datapath needs to reach peer clusters: their pod and service
// ranges (Ready peers only) and this cluster's healthy gateways, sorted.
func PeerRoutes(node string, cn *fabricv1.ClusterNetwork, peers []fabricv1.ClusterPeer) datapath.PeerRoutes {
	var r datapath.PeerRoutes
	for _, gw := range cn.Status.Gateways {
		if !gw.Healthy {
			continue
		}
		if gw.Node == node {
			r.LocalGateway = true
		}
		if ep, err := netip.ParseAddrPort(gw.Endpoint); err == nil {
			r.Gateways = append(r.Gateways, ep.Addr())
		}
	}
	for _, p := range peers {
		if !meta.IsStatusConditionTrue(p.Status.Conditions, "Ready") {
			continue
		}
		r.Prefixes = append(r.Prefixes, p.Status.Prefixes()...)
	}
	sort.Slice(r.Gateways, func(i, j int) bool { return r.Gateways[i].Less(r.Gateways[j]) })
	sort.Slice(r.Prefixes, func(i, j int) bool { return r.Prefixes[i].String() < r.Prefixes[j].String() })
	return r
}

// ActivePeerRoutes narrows the gateways (sorted by address) to the active ones: the first
// maxActive (0: no cap) that answer. Flows are spread across them (active-active); each
// gateway reaches every gateway of the peer clusters, so no pairing is needed. This node
// hands peer traffic to its own kernel only while it is one of the active gateways; a
// standby gateway node sends its traffic to the active ones like any other node.
func ActivePeerRoutes(r datapath.PeerRoutes, nodeIP netip.Addr, maxActive int, answers func(netip.Addr) bool) datapath.PeerRoutes {
	var active []netip.Addr
	local := false
	for _, g := range r.Gateways {
		if maxActive > 0 && len(active) == maxActive {
			break
		}
		if answers(g) {
			active = append(active, g)
			local = local || g == nodeIP
		}
	}
	r.Gateways = active
	r.LocalGateway = local
	return r
}

func internalIP(n *corev1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}

// datapathStartGrace is how long the datapath may take to become ready (Open vSwitch
// starting beside the agent) before retries are logged as errors.
const datapathStartGrace = 30 * time.Second

// initDatapath retries Init with backoff: Open vSwitch may start after the agent, which is
// no error (logged as information) unless it lasts.
func (a *agentState) initDatapath(ctx context.Context, dp datapath.Datapath, node datapath.Node) error {
	backoff, start := 500*time.Millisecond, time.Now()
	for {
		err := dp.Init(ctx, node)
		if err == nil {
			return nil
		}
		a.notReady.Store("datapath: " + err.Error())
		if time.Since(start) < datapathStartGrace {
			a.log.Info("the datapath is not ready yet; retrying", "reason", err.Error(), "in", backoff)
		} else {
			a.log.Error(err, "initializing the datapath; retrying", "in", backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// installPlugin copies weft-cni (shipped next to the agent binary) into the CNI directory,
// atomically, so the runtime never executes a half-written file.
func (a *agentState) installPlugin() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	src := filepath.Join(filepath.Dir(self), "weft-cni")
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("the weft-cni binary should ship beside weft-agent: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(a.cfg.CNIBinDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(a.cfg.CNIBinDir, ".weft-cni-")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := errors.Join(tmp.Chmod(0o755), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(a.cfg.CNIBinDir, "weft-cni"))
}

func (a *agentState) confPath() string { return filepath.Join(a.cfg.CNIConfDir, ConfFile) }

// writeConf announces the network to the container runtime: only now can pods be wired.
func (a *agentState) writeConf() error {
	conf := fmt.Sprintf(`{
  "cniVersion": "1.1.0",
  "name": "weft",
  "plugins": [
    {"type": "weft-cni", "socket": %q}
  ]
}
`, a.cfg.CNISocket)
	if err := os.MkdirAll(a.cfg.CNIConfDir, 0o755); err != nil {
		return err
	}
	tmp := a.confPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, a.confPath())
}

func (a *agentState) removeConf() { _ = os.Remove(a.confPath()) }

func (a *agentState) serveHealth(ctx context.Context) {
	if a.cfg.HealthAddr == "" || a.cfg.HealthAddr == "0" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	srv := &http.Server{Addr: a.cfg.HealthAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error(err, "health server")
	}
}

func derefPods(ps []*corev1.Pod) []corev1.Pod {
	out := make([]corev1.Pod, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

// startCache starts the agent's informer cache: nodes and FabricNodes (a change calls
// nodesChanged), and the policy syncer's inputs (it adds its own handlers, policyWatch).
// It returns once the cache has its first lists; it stops with ctx.
func (a *agentState) startCache(ctx context.Context, nodesChanged func()) (crcache.Cache, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, fabricv1.AddToScheme, mcsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	c, err := crcache.New(a.restCfg, crcache.Options{Scheme: scheme, DefaultTransform: crcache.TransformStripManagedFields()})
	if err != nil {
		return nil, err
	}
	for _, o := range []client.Object{&corev1.Node{}, &fabricv1.FabricNode{}} {
		inf, err := c.GetInformer(ctx, o)
		if err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { nodesChanged() }, UpdateFunc: func(any, any) { nodesChanged() }, DeleteFunc: func(any) { nodesChanged() },
		}); err != nil {
			return nil, err
		}
	}
	for _, o := range policysync.Objects() {
		if _, err := c.GetInformer(ctx, o); err != nil {
			return nil, err
		}
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			a.log.Error(err, "the agent's informer cache stopped")
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the agent's informer cache did not sync: %w", ctx.Err())
	}
	a.cached = c
	return c, nil
}

// listNodes lists the nodes from the cache (BGP's input).
func (a *agentState) listNodes(labels.Selector) ([]*corev1.Node, error) {
	nodes := &corev1.NodeList{}
	if err := a.reader().List(context.Background(), nodes); err != nil {
		return nil, err
	}
	out := make([]*corev1.Node, len(nodes.Items))
	for i := range nodes.Items {
		out[i] = &nodes.Items[i]
	}
	return out, nil
}

// startPolicy starts the policy syncer on the agent's cache: a first sync, then a sync on
// every change.
func (a *agentState) startPolicy(ctx context.Context, c crcache.Cache, dp datapath.Datapath) (*policysync.Syncer, error) {
	s := &policysync.Syncer{Node: a.cfg.NodeName, Datapath: dp, Reader: c, Report: a.report.realizedPolicies, Log: a.log.WithName("policy")}
	if err := s.Watch(ctx, c); err != nil {
		return nil, err
	}
	if err := s.Sync(ctx); err != nil {
		a.log.Error(err, "first policy sync; the saved policy stays enforced")
	}
	go s.Run(ctx) // reports the first sync's policies too
	return s, nil
}

// publishCapabilities reports in the node's FabricNode the backend it runs and what each
// datapath backend can do there.
func (a *agentState) publishCapabilities(ctx context.Context, registry *datapath.Registry, backend fabricv1.DatapathBackend) error {
	var caps []fabricv1.DatapathCapability
	for _, name := range registry.Names() {
		dp, err := registry.New(name, datapath.Options{})
		if err != nil {
			return err
		}
		c := fabricv1.DatapathCapability{Backend: fabricv1.DatapathBackend(name)}
		for _, e := range dp.Capabilities().Encapsulations {
			c.Encapsulations = append(c.Encapsulations, fabricv1.Encapsulation(e))
		}
		caps = append(caps, c)
	}
	sort.Slice(caps, func(i, j int) bool { return caps[i].Backend < caps[j].Backend })
	return errors.Join(a.report.set(ctx, "datapath", backend), a.report.set(ctx, "capabilities", caps))
}
