// Package agent wires the weft node agent: it waits for its node's pod block and the
// cluster's fabric settings, then runs named subsystems fed by one informer cache — node
// network, policy, pod network and CNI server, peer routes and gateway failover, BGP, and
// the uninstall watch. subsystems.go lists them in order: the agent's table of contents.
// cmd/weft-agent is a thin main around Run.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/agent/bgp"
	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ebpf"
	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/agent/policysync"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/podblocks"
	"github.com/weft-net/weft/internal/restcfg"
	"github.com/weft-net/weft/internal/securemetrics"
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
	// HealthAddr serves /healthz, /readyz and /metrics in plain HTTP, on the node's loopback
	// by default; SecureMetricsAddr serves /metrics over TLS to callers the API server
	// authorizes for it (Prometheus). "" or "0" disables either.
	HealthAddr, SecureMetricsAddr string
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
		CNIBinDir: "/opt/cni/bin", StateDir: "/var/lib/weft", OVSRunDir: "/var/run/openvswitch", HealthAddr: "127.0.0.1:10380", SecureMetricsAddr: ":10381",
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
		report: newNodeReport(c, cfg.NodeName), lastKnown: &lastKnownStore{dir: cfg.StateDir}}
	bgpMetrics := bgp.NewMetrics()
	a.metrics.MustRegister(bgpMetrics)
	a.own = newAgentMetrics()
	a.metrics.MustRegister(a.own)
	a.notReady.Store("starting")
	go a.serveHealth(ctx)
	// Loopback metrics are the health server's; the node's network does not wait for them.
	securemetrics.ServeAll(ctx, log, "", cfg.SecureMetricsAddr, a.metrics, restCfg)

	registry := datapath.NewRegistry()
	for _, register := range []func(*datapath.Registry) error{ovs.Register, ebpf.Register} {
		if err := register(registry); err != nil {
			return err
		}
	}
	// One informer cache for the agent's life: its inputs below, then every subsystem.
	a.notReady.Store("waiting for the API server (the agent's first lists)")
	// Should the API server not answer, the node fails over from what it last knew until
	// the first lists are in.
	standby := a.failoverFromLastKnown(ctx, registry)
	shared, err := a.startCacheRetrying(ctx)
	standby()
	if err != nil {
		return err
	}
	in, err := a.waitForInputs(ctx, shared)
	if err != nil {
		return err
	}
	if !in.uninstalling {
		err = a.run(ctx, registry, in, shared, bgpMetrics)
		if !errors.Is(err, errUninstalling) {
			return err
		}
	}
	return a.uninstall(ctx, registry, in)
}

type agentState struct {
	cfg      Config
	restCfg  *rest.Config
	cs       kubernetes.Interface
	c        client.Client
	log      klog.Logger
	notReady atomic.Value // string: why not ready; "" when ready
	metrics  *prometheus.Registry
	own      *agentMetrics // registered in metrics
	report   *nodeReport   // the node's FabricNode status
	// lastKnown keeps the gateways and peer ranges last read, for a restart without an
	// API server (failoverFromLastKnown).
	lastKnown *lastKnownStore
	// blocks are this node's pod blocks (blocksChanged: its FabricNode now names others).
	blocks        []netip.Prefix
	blocksChanged bool
	// remotes are the remote nodes last given to the datapath (remotesSet: once given);
	// refused, the other nodes' blocks last refused.
	remotes    []datapath.RemoteNode
	remotesSet bool
	refused    []fabricv1.RefusedBlock
	// cached reads from the agent's informer cache (set once its first lists are in, before
	// the agent reads anything): the ClusterNetwork, ClusterPeers, nodes and FabricNodes,
	// Services and ServiceImports come from watches, not from a request each.
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

type inputs struct {
	backend fabricv1.DatapathBackend
	node    datapath.Node
	// uninstalling: the ClusterNetwork (cnUID) is being deleted and waits for this node's
	// cleanup; node then has the name and whatever blocks the Node still names.
	uninstalling bool
	cnUID        types.UID
}

// waitForInputs waits until the ClusterNetwork exists and the operator has given this node a
// pod block, and reads the node's address: from the cache, woken by its watches (nothing is
// asked of the API server while it waits).
func (a *agentState) waitForInputs(ctx context.Context, c crcache.Cache) (inputs, error) {
	changed := make(chan struct{}, 1)
	unwatch, err := watchKinds(ctx, c, func() { poke(changed) }, &fabricv1.ClusterNetwork{}, &corev1.Node{}, &fabricv1.FabricNode{})
	defer unwatch()
	if err != nil {
		return inputs{}, err
	}
	logged := ""
	for {
		in, why := a.readInputs(ctx, c)
		if why == nil {
			return in, nil
		}
		a.notReady.Store(why.Error())
		if why.Error() != logged {
			a.log.Info("waiting", "for", why.Error())
			logged = why.Error()
		}
		select {
		case <-ctx.Done():
			return inputs{}, ctx.Err()
		case <-changed:
		}
	}
}

func (a *agentState) readInputs(ctx context.Context, c client.Reader) (inputs, error) {
	cn := &fabricv1.ClusterNetwork{}
	if err := c.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return inputs{}, fmt.Errorf("the ClusterNetwork: %w", err)
	}
	node := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: a.cfg.NodeName}, node); err != nil {
		return inputs{}, fmt.Errorf("node %s: %w", a.cfg.NodeName, err)
	}
	fn := &fabricv1.FabricNode{}
	if err := c.Get(ctx, client.ObjectKey{Name: a.cfg.NodeName}, fn); err != nil && !apierrors.IsNotFound(err) {
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

// datapathOptions are the datapath driver's options from the agent's configuration.
func (a *agentState) datapathOptions(onPolicy func(datapath.PolicyEvent), onDNS func(datapath.DNSAnswer)) datapath.Options {
	return datapath.Options{StateDir: a.cfg.StateDir, OVSDB: "unix:" + filepath.Join(a.cfg.OVSRunDir, "db.sock"),
		OVSRunDir: a.cfg.OVSRunDir, BPFFS: a.cfg.BPFFS, OnPolicyEvent: onPolicy, OnDNSAnswer: onDNS}
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

// startCacheRetrying starts the cache, trying again while the API server does not answer
// (its discovery times out): the agent waits — and its node fails over from what it last
// knew — rather than exit and start over.
func (a *agentState) startCacheRetrying(ctx context.Context) (crcache.Cache, error) {
	wait := time.Second
	for {
		c, err := a.startCache(ctx)
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		a.log.Error(err, "starting the informer cache; trying again", "in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// startCache starts the agent's one informer cache: every kind a subsystem reads (nodes and
// FabricNodes, the ClusterNetwork and ClusterPeers, Services and ServiceImports, the policy
// syncer's inputs). It returns once the cache has its first lists; it stops with ctx.
// Subsystems add their own handlers (fabric.watch).
func (a *agentState) startCache(ctx context.Context) (crcache.Cache, error) {
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
	kinds := append(cachedKinds(), policysync.Objects()...)
	for _, o := range kinds {
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
