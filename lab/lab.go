package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"

	ebpfdp "github.com/weft-net/weft/agent/datapath/ebpf"
	"github.com/weft-net/weft/lab/netlab"
	"github.com/weft-net/weft/lab/proc"
	"github.com/weft-net/weft/lab/router"
)

// Options configure a lab.
type Options struct {
	// Name tells labs on one machine apart (namespace names, cleanup).
	Name            string
	Clusters, Nodes int
	// CNI is the plugin pods are wired with: "reference" (containernetworking ptp +
	// host-local, with routes between nodes installed by the lab) or "weft" (weft installed
	// from WeftManifests during bring-up: its agents wire the pods).
	CNI string
	// WeftManifests is the kustomization that installs weft (config/default), for --cni weft.
	WeftManifests string
	// Datapaths are weft's datapath backends by cluster (--cni weft): cluster i gets the
	// i-th, the last one repeats; empty means ovs. An ebpf cluster's agents pin their
	// programs in a bpffs of the lab's own (BPFFSDir), mounted while the lab runs.
	Datapaths []string
	// Routers are the BGP routers by cluster (--cni weft): "bird", "frr" or "none"; the
	// last repeats, empty means none. A cluster with a router gets spec.bgp (its nodes
	// announce their pod blocks to the router; an ebpf cluster runs without
	// encapsulation) and an external host behind the router.
	Routers []string
	// Overlap gives the last cluster the first one's pod and service ranges, as two
	// clusters made with the same installer defaults have (docs/overlap.md).
	Overlap     bool
	StateDir    string
	APIPortBase int
	// KubeBin holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
	// and kubectl; CoreDNS is the coredns binary; CNIBin the reference CNI plugins; WeftBin
	// weft's binaries; Self the weftctl binary (lab daemon, kubelet); Labtool the light
	// helper (agnhost, pause, loopback forwards).
	KubeBin, CoreDNS, CNIBin, WeftBin, Self, Labtool string
	// Timeout bounds bringing the lab up.
	Timeout time.Duration
}

var validName = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// CNIs the lab can wire pods with.
var CNIs = []string{"reference", "weft"}

// DatapathBackends are the weft datapaths a lab cluster can run.
var DatapathBackends = []string{"ovs", "ebpf"}

// Datapath is the weft datapath backend of the cluster with the given index (from 1).
func (o Options) Datapath(index int) string {
	if len(o.Datapaths) == 0 {
		return "ovs"
	}
	return o.Datapaths[min(index, len(o.Datapaths))-1]
}

// Router is the BGP router of the cluster with the given index (from 1): "" for none.
func (o Options) Router(index int) string {
	if len(o.Routers) == 0 {
		return ""
	}
	r := o.Routers[min(index, len(o.Routers))-1]
	if r == "none" {
		return ""
	}
	return r
}

// BPFFSDir is where a lab mounts its own bpffs: each mount is a separate instance, so labs
// side by side never see each other's pins, and unmounting it frees them all.
func BPFFSDir(stateDir string) string { return filepath.Join(stateDir, "bpffs") }

// Validate checks options and that every binary is where it should be.
func (o Options) Validate() error {
	var errs []error
	if !validName.MatchString(o.Name) {
		errs = append(errs, fmt.Errorf("--name %q: up to 8 lowercase letters and digits", o.Name))
	}
	if o.Clusters < 1 || o.Clusters > 9 || o.Nodes < 1 || o.Nodes > 9 {
		errs = append(errs, fmt.Errorf("--clusters %d --nodes %d: each between 1 and 9", o.Clusters, o.Nodes))
	}
	if o.Overlap && o.Clusters < 2 {
		errs = append(errs, fmt.Errorf("--overlap gives the last cluster the first one's ranges: it needs --clusters 2 or more"))
	}
	if !contains(CNIs, o.CNI) {
		errs = append(errs, fmt.Errorf("--cni %q: the lab knows %s", o.CNI, strings.Join(CNIs, ", ")))
	}
	for _, r := range o.Routers {
		if r != "none" && !contains(router.Kinds, r) {
			errs = append(errs, fmt.Errorf("--router %q: the lab knows %s and none", r, strings.Join(router.Kinds, ", ")))
		} else if r != "none" {
			if err := (router.Config{Kind: r}).Validate(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, d := range o.Datapaths {
		if !contains(DatapathBackends, d) {
			errs = append(errs, fmt.Errorf("--datapath %q: the lab knows %s", d, strings.Join(DatapathBackends, ", ")))
		}
	}
	if o.APIPortBase < 1024 || o.APIPortBase+o.Clusters > 65535 {
		errs = append(errs, fmt.Errorf("--api-port %d: pick a port from 1024 up", o.APIPortBase))
	}
	check := func(path, hint string) {
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			errs = append(errs, fmt.Errorf("missing binary %s (%s)", path, hint))
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"} {
		check(filepath.Join(o.KubeBin, b), "hack/lab-deps.sh builds it")
	}
	check(o.CoreDNS, "hack/lab-deps.sh builds it")
	for _, b := range []string{"ptp", "host-local", "loopback"} {
		check(filepath.Join(o.CNIBin, b), "hack/lab-deps.sh builds it")
	}
	check(o.Self, "the weftctl binary")
	check(o.Labtool, "make build")
	check(filepath.Join(o.WeftBin, "weft-operator"), "make build")
	if o.CNI == "weft" {
		for _, b := range []string{"weft-agent", "weft-cni", "weft-ovs", "weft-gateway"} {
			check(filepath.Join(o.WeftBin, b), "make build")
		}
		if st, err := os.Stat(filepath.Join(o.WeftManifests, "kustomization.yaml")); err != nil || st.IsDir() {
			errs = append(errs, fmt.Errorf("--weft-manifests %q: no kustomization.yaml (point it at config/default)", o.WeftManifests))
		}
		for _, tool := range []string{"ovs-vswitchd", "ovsdb-server", "ovs-ofctl", "ovs-vsctl", "ovsdb-tool"} {
			if _, err := lookPath(tool); err != nil {
				errs = append(errs, fmt.Errorf("missing %s (hack/lab-deps.sh installs openvswitch-switch)", tool))
			}
		}
	}
	for _, tool := range []string{"ip", "nsenter", "nft", "busybox", "socat", "ethtool"} {
		if _, err := lookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("missing %s (hack/lab-deps.sh installs it)", tool))
		}
	}
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("the lab needs root (network namespaces, mounts)"))
	}
	return errors.Join(errs...)
}

// Lab is a running (or starting) lab.
type Lab struct {
	// runCtx lives as long as the lab (the up context ends when the lab is up).
	runCtx context.Context
	opts   Options
	layout *Layout
	sup    *proc.Supervisor
	log    klog.Logger
}

// New plans a lab.
func New(opts Options, log klog.Logger) (*Lab, error) {
	layout, err := NewLayout(opts.Name, opts.StateDir, opts.Clusters, opts.Nodes, opts.APIPortBase)
	if err != nil {
		return nil, err
	}
	if opts.Overlap {
		layout.OverlapLast()
	}
	return &Lab{opts: opts, layout: layout, sup: proc.New(), log: log}, nil
}

// Files in the state directory.
const (
	ReadyFile   = "ready"
	FailedFile  = "failed"
	PIDFile     = "daemon.pid"
	StatusFile  = "status.json"
	Kubeconfig  = "kubeconfig"
	OptionsFile = "options.json"
)

// Run brings the lab up, reports readiness in the state directory, keeps it running until
// ctx ends, and then takes everything down again.
func (l *Lab) Run(ctx context.Context) (err error) {
	start := time.Now()
	defer func() {
		l.sup.StopAll(15 * time.Second)
		if cerr := Cleanup(l.opts.StateDir, l.layout.Prefix); cerr != nil {
			l.log.Error(cerr, "cleaning up")
		}
		if err != nil {
			_ = os.WriteFile(filepath.Join(l.opts.StateDir, FailedFile), []byte(err.Error()+"\n"), 0o644)
			keepPodLogs(l.opts.StateDir, l.layout)
		}
	}()
	l.runCtx = ctx
	upCtx, cancel := context.WithTimeout(ctx, l.opts.Timeout)
	defer cancel()
	if err := l.up(upCtx); err != nil {
		if ctx.Err() == nil && upCtx.Err() != nil {
			return fmt.Errorf("the lab did not come up within %v: %w", l.opts.Timeout, err)
		}
		return err
	}
	l.log.Info("lab is up", "took", time.Since(start).Round(time.Millisecond).String())
	if err := os.WriteFile(filepath.Join(l.opts.StateDir, ReadyFile), []byte(time.Since(start).String()+"\n"), 0o644); err != nil {
		return err
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		l.writeStatus()
		select {
		case <-ctx.Done():
			_ = os.Remove(filepath.Join(l.opts.StateDir, ReadyFile))
			return nil
		case <-t.C:
		}
	}
}

func (l *Lab) up(ctx context.Context) error {
	if err := l.network(); err != nil {
		return fmt.Errorf("lab network: %w", err)
	}
	if err := l.bpffs(); err != nil {
		return err
	}
	if err := l.nicChecksums(); err != nil {
		return err
	}
	if err := l.routers(); err != nil {
		return fmt.Errorf("lab routers: %w", err)
	}
	var merged []string
	for _, c := range l.layout.Clusters {
		if err := l.startCluster(ctx, c); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		merged = append(merged, filepath.Join(c.Dir, "admin.kubeconfig"))
	}
	if err := writeMerged(filepath.Join(l.opts.StateDir, Kubeconfig), merged); err != nil {
		return err
	}
	for _, c := range l.layout.Clusters {
		if err := l.waitReady(ctx, c); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	return nil
}

// bpffs mounts the lab's own bpffs when a cluster runs the ebpf datapath.
func (l *Lab) bpffs() error {
	need := false
	for _, c := range l.layout.Clusters {
		need = need || l.opts.Datapath(c.Index) == "ebpf"
	}
	if !need {
		return nil
	}
	if err := ebpfdp.EnsureBPFFS(BPFFSDir(l.opts.StateDir)); err != nil {
		return fmt.Errorf("the lab's bpffs: %w", err)
	}
	return nil
}

// nicChecksums makes the underlay ports of ebpf clusters' nodes, and of every control plane,
// compute checksums, as a real NIC does, when a cluster of the lab runs the ovs datapath:
// the eBPF datapath hands
// pods' packets to the kernel with their checksums left to the NIC, a lab veth never
// computes them, and a peer cluster's userspace Open vSwitch, which receives them through a
// packet socket, would pass them on unchecked to pods that drop them. A lab of ebpf
// clusters only keeps the veths' offloads, as virtual machines' NICs between them do: the
// kernel then hands unsegmented (GSO) packets from node to node, as a NIC's segmentation
// and receive offload do between physical hosts — without it every packet crosses a
// gateway's userspace WireGuard device on its own (a fifth of the throughput).
//
// The control planes are such senders too: their API servers reach the pods of an ovs
// cluster's nodes directly (watches of pods such as weft-dns, webhooks, kubectl exec through
// pods), and with the veth's offloads those transfers crawled at 0.4 Mbit/s with most of
// their bytes sent again (1.35 Gbit/s and no retransmission without).
func (l *Lab) nicChecksums() error {
	mixed := false
	for _, c := range l.layout.Clusters {
		mixed = mixed || l.opts.Datapath(c.Index) != "ebpf"
	}
	off := func(h Host) error {
		if out, err := exec.Command("ip", "netns", "exec", h.Netns, "ethtool", "-K", "eth0", "tx", "off").CombinedOutput(); err != nil {
			return fmt.Errorf("%s: ethtool -K eth0 tx off: %w: %s", h.Name, err, out)
		}
		return nil
	}
	for _, c := range l.layout.Clusters {
		if mixed {
			if err := off(c.ControlPlane); err != nil {
				return err
			}
		}
		if !mixed || l.opts.Datapath(c.Index) != "ebpf" {
			continue
		}
		for _, n := range c.Nodes {
			if err := off(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// network builds the underlay switch and plugs every control plane and node into it.
func (l *Lab) network() error {
	sw, err := netlab.NewSwitch(l.layout.Underlay)
	if err != nil {
		return err
	}
	for _, c := range l.layout.Clusters {
		for _, h := range append([]Host{c.ControlPlane}, c.Nodes...) {
			if err := netlab.AddNetns(h.Netns); err != nil {
				return err
			}
			if err := sw.Plug(h.Netns, h.Port, WithLength(h.IP)); err != nil {
				return err
			}
			if err := netlab.Sysctl(h.Netns, "net.ipv4.ip_forward", "1"); err != nil {
				return err
			}
			// A default route, as every real node has: locally sent packets to Service IPs
			// need one before kube-proxy's NAT rewrites them. Its gateway is an underlay
			// address nobody holds, so nothing leaves the lab.
			if err := netlab.IP("-n", h.Netns, "route", "replace", "default", "via", UnderlayGateway.String(), "dev", "eth0"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Lab) startCluster(ctx context.Context, c ClusterLayout) error {
	for _, d := range []string{LogDir(l.opts.StateDir, c.Name), filepath.Join(c.Dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	p, err := l.issue(c)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort)))
	if err != nil {
		return fmt.Errorf("API server forward on 127.0.0.1:%d: %w (another lab running? pick --api-port)", c.APIPort, err)
	}
	lf, err := listener.(*net.TCPListener).File()
	_ = listener.Close()
	if err != nil {
		return err
	}
	for _, spec := range []proc.Spec{
		l.etcd(c),
		l.apiserver(c, p),
		{Name: c.Name + "/forward", Netns: c.ControlPlane.Netns, Path: l.opts.Labtool, Restart: true, LogPath: l.logPath(c, "forward"),
			Args: []string{"forward", "--to", net.JoinHostPort(c.ControlPlane.IP.String(), "6443")}, ExtraFiles: []*os.File{lf}},
	} {
		if err := l.sup.Start(spec); err != nil {
			return err
		}
	}
	cs, err := clientFor(p.hostKubeconfig)
	if err != nil {
		return err
	}
	if err := waitAPI(ctx, cs, l.logPath(c, "kube-apiserver")); err != nil {
		return err
	}
	if err := l.bootstrap(ctx, c, p); err != nil {
		return fmt.Errorf("bootstrap objects: %w", err)
	}
	for _, spec := range []proc.Spec{l.controllerManager(c, p), l.scheduler(c, p)} {
		if err := l.sup.Start(spec); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		for _, d := range []string{"root", "state"} {
			if err := os.MkdirAll(filepath.Join(c.NodeDir(n.Name), d), 0o755); err != nil {
				return err
			}
		}
		for _, spec := range []proc.Spec{l.kubelet(c, p, n), l.kubeProxy(c, p, n)} {
			if err := l.sup.Start(spec); err != nil {
				return err
			}
		}
	}
	switch l.opts.CNI {
	case "reference":
		for _, n := range c.Nodes {
			if err := egressNAT(c, n); err != nil {
				return err
			}
		}
		go l.referenceNetwork(l.runCtx, c, cs)
	case "weft":
		if err := l.installWeft(ctx, c, p); err != nil {
			return fmt.Errorf("installing weft: %w", err)
		}
		dyn, err := dynamicFor(p.hostKubeconfig)
		if err != nil {
			return err
		}
		go l.weftNetwork(l.runCtx, c, dyn)
	}
	return nil
}

// dynamicFor is a dynamic client for the cluster of kubeconfig (weft's objects,
// unstructured). It sets no client timeout: that would cut its watches short.
func dynamicFor(kubeconfig string) (dynamic.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

func clientFor(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// waitAPI waits until the API server answers /readyz.
func waitAPI(ctx context.Context, cs *kubernetes.Clientset, logPath string) error {
	var last error
	for {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready (last: %w); see %s", last, logPath)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func writeMerged(path string, files []string) error {
	merged := clientcmdapi.NewConfig()
	for _, f := range files {
		cfg, err := clientcmd.LoadFromFile(f)
		if err != nil {
			return err
		}
		for k, v := range cfg.Clusters {
			merged.Clusters[k] = v
		}
		for k, v := range cfg.AuthInfos {
			merged.AuthInfos[k] = v
		}
		for k, v := range cfg.Contexts {
			merged.Contexts[k] = v
		}
		if merged.CurrentContext == "" {
			merged.CurrentContext = cfg.CurrentContext
		}
	}
	return clientcmd.WriteToFile(*merged, path)
}

// Status is what `weftctl lab status` reads.
type Status struct {
	Updated   time.Time      `json:"updated"`
	Processes []proc.Status  `json:"processes"`
	Clusters  []ClusterState `json:"clusters"`
}

// ClusterState is one cluster's summary.
type ClusterState struct {
	Name, API, PodCIDR, ServiceCIDR string
}

func (l *Lab) writeStatus() {
	st := Status{Updated: time.Now(), Processes: l.sup.Status()}
	for _, c := range l.layout.Clusters {
		st.Clusters = append(st.Clusters, ClusterState{Name: c.Name, API: fmt.Sprintf("https://127.0.0.1:%d", c.APIPort),
			PodCIDR: c.PodCIDR.String(), ServiceCIDR: c.ServiceCIDR.String()})
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	tmp := filepath.Join(l.opts.StateDir, StatusFile+".tmp")
	if os.WriteFile(tmp, data, 0o644) == nil {
		_ = os.Rename(tmp, filepath.Join(l.opts.StateDir, StatusFile))
	}
}

// Supervisor exposes the lab's processes (tests kill and restart them).
func (l *Lab) Supervisor() *proc.Supervisor { return l.sup }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// keepPodLogs copies the container logs of every node's pods into the lab's log directory
// (logs/<cluster>/pods/<node>/<pod UID>/<container>/<restart>.log), which outlives the
// lab's state: when the lab fails, the pods' own words say why.
func keepPodLogs(stateDir string, layout *Layout) {
	for _, c := range layout.Clusters {
		for _, n := range c.Nodes {
			pods := filepath.Join(c.NodeDir(n.Name), "state", "pods")
			files, _ := filepath.Glob(filepath.Join(pods, "*", "logs", "*", "*.log"))
			for _, f := range files {
				rel, err := filepath.Rel(pods, f)
				if err != nil {
					continue
				}
				dst := filepath.Join(LogDir(stateDir, c.Name), "pods", n.Name, strings.Replace(rel, string(filepath.Separator)+"logs"+string(filepath.Separator), string(filepath.Separator), 1))
				data, err := os.ReadFile(f)
				if err != nil || os.MkdirAll(filepath.Dir(dst), 0o755) != nil {
					continue
				}
				_ = os.WriteFile(dst, data, 0o644)
			}
		}
	}
}
