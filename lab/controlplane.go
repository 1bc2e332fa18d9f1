package lab

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/weft-net/weft/lab/pki"
	"github.com/weft-net/weft/lab/proc"
)

// clusterPKI issues a cluster's certificates and kubeconfigs (once; re-used on the next up).
type clusterPKI struct {
	ca             *pki.CA
	apiserver      pki.Pair
	kubeletClient  pki.Pair
	admin          pki.Pair
	saKey, saPub   string
	kubeconfigDir  string
	hostKubeconfig string
}

func (l *Lab) issue(c ClusterLayout) (*clusterPKI, error) {
	ca, err := pki.LoadOrCreateCA(filepath.Join(c.Dir, "pki"), c.Name+"-ca")
	if err != nil {
		return nil, err
	}
	p := &clusterPKI{ca: ca, kubeconfigDir: filepath.Join(c.Dir, "kubeconfigs")}
	if err := os.MkdirAll(p.kubeconfigDir, 0o700); err != nil {
		return nil, err
	}
	ips := []net.IP{c.ControlPlane.IP.AsSlice(), net.ParseIP("127.0.0.1"), c.ServiceIP(1).AsSlice()}
	dns := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	if p.apiserver, err = ca.Server("apiserver", dns, ips); err != nil {
		return nil, err
	}
	if p.kubeletClient, err = ca.Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return nil, err
	}
	if p.admin, err = ca.Client("admin", "weft-lab-admin", "system:masters"); err != nil {
		return nil, err
	}
	if p.saKey, p.saPub, err = ca.ServiceAccountKey(); err != nil {
		return nil, err
	}
	inLab := "https://" + net.JoinHostPort(c.ControlPlane.IP.String(), "6443")
	for name, user := range map[string]string{
		"controller-manager": "system:kube-controller-manager", "scheduler": "system:kube-scheduler", "kube-proxy": "system:kube-proxy",
	} {
		id, err := ca.Client(name, user)
		if err != nil {
			return nil, err
		}
		if err := ca.WriteKubeconfig(filepath.Join(p.kubeconfigDir, name+".kubeconfig"), c.Name, inLab, id); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		id, err := ca.Client("kubelet-"+n.Name, "system:node:"+n.Name, "system:nodes")
		if err != nil {
			return nil, err
		}
		if err := ca.WriteKubeconfig(filepath.Join(p.kubeconfigDir, n.Name+".kubeconfig"), c.Name, inLab, id); err != nil {
			return nil, err
		}
		if _, err := ca.Server("kubelet-serving-"+n.Name, []string{n.Name}, []net.IP{n.IP.AsSlice()}); err != nil {
			return nil, err
		}
	}
	p.hostKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	host := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort))
	return p, ca.WriteKubeconfig(p.hostKubeconfig, c.Name, host, p.admin)
}

func (l *Lab) bin(name string) string { return filepath.Join(l.opts.KubeBin, name) }

func (l *Lab) etcd(c ClusterLayout) proc.Spec {
	return proc.Spec{
		Name: c.Name + "/etcd", Netns: c.ControlPlane.Netns, Path: l.bin("etcd"), LogPath: l.logPath(c, "etcd"), Restart: true,
		Args: []string{"--name=default", "--data-dir=" + filepath.Join(c.Dir, "etcd"),
			"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=default=http://127.0.0.1:2380", "--logger=zap", "--log-level=warn"},
	}
}

func (l *Lab) apiserver(c ClusterLayout, p *clusterPKI) proc.Spec {
	return proc.Spec{
		Name: c.Name + "/kube-apiserver", Netns: c.ControlPlane.Netns, Path: l.bin("kube-apiserver"),
		LogPath: l.logPath(c, "kube-apiserver"), Restart: true,
		Args: []string{
			"--advertise-address=" + c.ControlPlane.IP.String(), "--bind-address=0.0.0.0", "--secure-port=6443",
			"--etcd-servers=http://127.0.0.1:2379",
			"--service-cluster-ip-range=" + c.ServiceCIDR.String(),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + p.saPub, "--service-account-signing-key-file=" + p.saKey,
			"--tls-cert-file=" + p.apiserver.Cert, "--tls-private-key-file=" + p.apiserver.Key,
			"--client-ca-file=" + p.ca.CertFile(),
			"--authorization-mode=Node,RBAC",
			"--kubelet-client-certificate=" + p.kubeletClient.Cert, "--kubelet-client-key=" + p.kubeletClient.Key,
			"--kubelet-certificate-authority=" + p.ca.CertFile(), "--kubelet-preferred-address-types=InternalIP",
			// Webhooks and aggregated APIs are called at their endpoints: the control plane
			// namespace runs no kube-proxy.
			"--enable-aggregator-routing=true",
			"--allow-privileged=true", "--profiling=false", "--v=1",
		},
	}
}

func (l *Lab) controllerManager(c ClusterLayout, p *clusterPKI) proc.Spec {
	return proc.Spec{
		Name: c.Name + "/kube-controller-manager", Netns: c.ControlPlane.Netns, Path: l.bin("kube-controller-manager"),
		LogPath: l.logPath(c, "kube-controller-manager"), Restart: true,
		Args: []string{
			"--kubeconfig=" + filepath.Join(p.kubeconfigDir, "controller-manager.kubeconfig"),
			// Elected, as in any real control plane, and for the same reason: a controller
			// manager that cannot reach its API server for longer than the renew deadline
			// exits (the lab restarts it) and starts over from what it lists once the API
			// server answers. Unelected, it kept its clock on the kubelets' leases across an
			// API server outage, marked every node and pod not Ready the moment the API server
			// resumed, and the pods' Services lost their endpoints for a moment — which no
			// real cluster does. The lease is shorter than kube's default (15 s, renewed
			// within 10 s) so that a restarted controller manager leads again within 10 s.
			"--leader-elect=true", "--leader-elect-lease-duration=10s", "--leader-elect-renew-deadline=8s",
			"--leader-elect-retry-period=2s", "--bind-address=127.0.0.1", "--secure-port=10257",
			"--use-service-account-credentials=true", "--service-account-private-key-file=" + p.saKey,
			"--root-ca-file=" + p.ca.CertFile(),
			"--cluster-signing-cert-file=" + p.ca.CertFile(), "--cluster-signing-key-file=" + filepath.Join(p.ca.Dir, "ca.key"),
			// With weft as the CNI, weft gives nodes their pod blocks.
			"--allocate-node-cidrs=" + fmt.Sprint(l.opts.CNI != "weft"), "--cluster-cidr=" + c.PodCIDR.String(), "--node-cidr-mask-size=24",
			"--service-cluster-ip-range=" + c.ServiceCIDR.String(), "--cluster-name=" + c.Name, "--v=1",
		},
	}
}

func (l *Lab) scheduler(c ClusterLayout, p *clusterPKI) proc.Spec {
	return proc.Spec{
		Name: c.Name + "/kube-scheduler", Netns: c.ControlPlane.Netns, Path: l.bin("kube-scheduler"),
		LogPath: l.logPath(c, "kube-scheduler"), Restart: true,
		Args: []string{"--kubeconfig=" + filepath.Join(p.kubeconfigDir, "scheduler.kubeconfig"),
			"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259", "--v=1"},
	}
}

func (l *Lab) kubeProxy(c ClusterLayout, p *clusterPKI, n Host) proc.Spec {
	return proc.Spec{
		Name: n.Name + "/kube-proxy", Netns: n.Netns, Path: l.bin("kube-proxy"), LogPath: l.logPath(c, n.Name+"-kube-proxy"), Restart: true,
		Args: []string{"--kubeconfig=" + filepath.Join(p.kubeconfigDir, "kube-proxy.kubeconfig"),
			"--proxy-mode=nftables", "--hostname-override=" + n.Name, "--cluster-cidr=" + c.PodCIDR.String(),
			"--conntrack-max-per-core=0", "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256", "--v=1"},
	}
}

func (l *Lab) kubelet(c ClusterLayout, p *clusterPKI, n Host) proc.Spec {
	dir := c.NodeDir(n.Name)
	serving := filepath.Join(p.ca.Dir, "kubelet-serving-"+n.Name)
	var labels []string
	// With weft as the CNI, the first node of each cluster is its gateway.
	if l.opts.CNI == "weft" && len(c.Nodes) > 0 && c.Nodes[0].Name == n.Name {
		labels = append(labels, "--node-labels=fabric.weft.dev/gateway=true")
	}
	return proc.Spec{
		Name: n.Name + "/kubelet", Netns: n.Netns, Path: l.opts.Self, LogPath: l.logPath(c, n.Name+"-kubelet"), Restart: true,
		OwnMounts: true,
		Args: append([]string{"lab", "kubelet",
			"--node-name=" + n.Name, "--node-ip=" + n.IP.String(),
			"--kubeconfig=" + filepath.Join(p.kubeconfigDir, n.Name+".kubeconfig"),
			"--root=" + filepath.Join(dir, "root"), "--state=" + filepath.Join(dir, "state"),
			"--cni-bin-dir=" + l.opts.CNIBin,
			"--serving-cert=" + serving + ".crt", "--serving-key=" + serving + ".key", "--client-ca=" + p.ca.CertFile(),
			"--cluster-dns=" + c.ServiceIP(10).String(), "--cluster-domain=cluster.local",
			"--image-dir=" + filepath.Join(l.opts.StateDir, "images", n.Name), "--weft-bin=" + l.opts.WeftBin,
			"--coredns=" + l.opts.CoreDNS, "--multicall=" + l.opts.Labtool,
			"--created-paths=" + filepath.Join(l.opts.StateDir, "created-paths"),
			"--netns-prefix=" + l.layout.PodNetnsPrefix(),
			fmt.Sprintf("--host-mount-ns=/proc/%d/ns/mnt", os.Getpid()),
			"--bpffs=" + BPFFSDir(l.opts.StateDir),
		}, labels...),
	}
}

func (l *Lab) logPath(c ClusterLayout, name string) string {
	return filepath.Join(LogDir(l.opts.StateDir, c.Name), name+".log")
}

func (c ClusterLayout) String() string {
	return fmt.Sprintf("%s (pods %s, services %s, API 127.0.0.1:%d)", c.Name, c.PodCIDR, c.ServiceCIDR, c.APIPort)
}
