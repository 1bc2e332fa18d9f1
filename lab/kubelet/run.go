package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/log/klogv2"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/lab/images"
)

// KubeletVersion is what lab nodes report.
const KubeletVersion = "v1.37.2"

// Run registers the node and runs its pods until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Port == 0 {
		cfg.Port = 10250
	}
	log := klog.FromContext(ctx).WithValues("node", cfg.NodeName)
	ctx = vklog.WithLogger(ctx, klogv2.New(nil))
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	restCfg.UserAgent = "weft-lab-kubelet/" + cfg.NodeName
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	table, err := images.Lab(images.Config{Dir: cfg.ImageDir, WeftBin: cfg.WeftBin, CoreDNS: cfg.CoreDNS, Multicall: cfg.Multicall})
	if err != nil {
		return fmt.Errorf("image table: %w", err)
	}
	for _, d := range append(cfg.CNIBinDirs()[:1], cfg.CNIConfDir(), cfg.State) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := bindNodeDirs(cfg); err != nil {
		return err
	}
	tlsCfg, err := servingTLS(cfg)
	if err != nil {
		return err
	}

	eb := record.NewBroadcaster()
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer eb.Shutdown()
	recorder := eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: cfg.NodeName})

	p := &Provider{cfg: cfg, client: cs, images: table, recorder: recorder, self: self, capacity: Capacity,
		log: log, runners: map[string]*podRunner{}}
	if err := p.cleanupLeftovers(ctx); err != nil {
		log.Error(err, "leftovers of an earlier run")
	}

	mux := http.NewServeMux()
	n, err := nodeutil.NewNode(cfg.NodeName,
		func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			p.cms, p.secrets, p.services, p.pods = pc.ConfigMaps, pc.Secrets, pc.Services, pc.Pods
			return p, nil, nil
		},
		nodeutil.WithClient(cs),
		nodeutil.AttachProviderRoutes(mux),
		func(c *nodeutil.NodeConfig) error {
			c.NodeSpec = nodeObject(cfg)
			c.HTTPListenAddr = net.JoinHostPort(cfg.NodeIP, strconv.Itoa(cfg.Port))
			c.TLSConfig = tlsCfg
			c.Handler = ttyWithoutStderr(mux)
			c.SkipDownwardAPIResolution = true
			c.EventRecorder = recorder
			c.NumWorkers = 4
			return nil
		},
	)
	if err != nil {
		return err
	}
	log.Info("lab kubelet starting", "ip", cfg.NodeIP, "cni", cfg.CNIConfDir())
	go p.resyncStatuses(ctx, statusResync)
	err = n.Run(ctx)
	p.shutdown()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// shutdown stops every pod's processes (they cannot outlive the kubelet in the lab).
func (p *Provider) shutdown() {
	for _, r := range p.allRunners() {
		for _, c := range append(append([]*containerRunner{}, r.init...), r.containers...) {
			c.stop(0)
		}
	}
}

func servingTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.ServingCert, cfg.ServingKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no CA certificate in %s", cfg.ClientCA)
	}
	// Only clients with a certificate from the cluster CA (the API server) may exec or read logs.
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

func nodeObject(cfg Config) corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": cfg.NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		"lab.weft.dev/node": "true",
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName, Labels: labels},
		Status: corev1.NodeStatus{
			Phase: corev1.NodePending,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", "starting"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
			},
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: cfg.NodeIP}, {Type: corev1.NodeHostName, Address: cfg.NodeName}},
			Capacity:        Capacity,
			Allocatable:     Capacity,
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(cfg.Port)}},
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: KubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
				ContainerRuntimeVersion: "weft-lab://1", OSImage: "weft lab node", KernelVersion: kernelVersion()},
		},
	}
}

func kernelVersion() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// bindNodeDirs mounts the node's own directories over the machine's, inside the kubelet's
// private mount namespace (the lab starts it under `unshare --mount`). It refuses to run in
// the machine's mount namespace, where it would cover the host's directories.
func bindNodeDirs(cfg Config) error {
	self, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getpid()))
	parent, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	if err1 != nil || err2 != nil || self == parent {
		return errors.New("the lab kubelet must run in its own mount namespace (the lab starts it with `unshare --mount --propagation slave`)")
	}
	for _, dir := range NodeLocalDirs {
		src := filepath.Join(cfg.Root, dir)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		created, err := ensureMountPoint(src, dir)
		if err != nil {
			return fmt.Errorf("mount point %s: %w", dir, err)
		}
		if created != "" && cfg.CreatedPaths != "" {
			appendLine(cfg.CreatedPaths, created)
		}
		if err := unix.Mount(src, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s at %s: %w", src, dir, err)
		}
	}
	return nil
}

// ttyWithoutStderr does what the kubelet does with an exec or attach that asks for a TTY
// and stderr (clients of client-go's SPDY executor do): a terminal has one output stream,
// so stderr is dropped — virtual-kubelet refuses the request instead.
func ttyWithoutStderr(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Get("tty") == "1" && q.Get("error") == "1" {
			q.Del("error")
			r.URL.RawQuery = q.Encode()
		}
		next.ServeHTTP(w, r)
	})
}
