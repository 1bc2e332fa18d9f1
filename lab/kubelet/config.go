package kubelet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Config configures one lab kubelet (one node).
type Config struct {
	NodeName   string
	NodeIP     string
	Kubeconfig string
	// Root is the node's "host filesystem": hostPath volumes resolve under it (except the
	// paths in realHostPaths), and so do the CNI directories.
	Root string
	// State keeps pods' runtime files (volumes, logs, CNI records).
	State string
	// CNIBinDir is where CNI plugins are looked up (besides Root/opt/cni/bin).
	CNIBinDir string
	// ServingCert, ServingKey and ClientCA secure the kubelet API (exec, logs).
	ServingCert, ServingKey, ClientCA string
	// ClusterDNS and ClusterDomain go into pods' resolv.conf.
	ClusterDNS    string
	ClusterDomain string
	// ImageDir, WeftBin, CoreDNS and Multicall build the image table (see lab/images).
	ImageDir, WeftBin, CoreDNS, Multicall string
	// CreatedPaths records mount points created on the machine, for the lab to remove.
	CreatedPaths string
	// Labels are added to the Node.
	Labels map[string]string
	// Port of the kubelet API.
	Port int
	// NetnsPrefix starts the names of this node's pod network namespaces (the node name is
	// appended), so a restarted kubelet finds and removes its leftovers and nothing else.
	NetnsPrefix string
	// HostMountNS is the machine's mount namespace (the lab daemon's): pod network namespaces
	// are mounted there, so every view (the lab, other nodes, containers) sees them.
	HostMountNS string
	// BPFFS is where the hostPath /sys/fs/bpf leads: the lab's own bpffs (pins of one lab
	// never meet another's).
	BPFFS string
}

// CNIConfDir is the node's CNI configuration directory.
func (c Config) CNIConfDir() string { return filepath.Join(c.Root, "etc", "cni", "net.d") }

// CNIBinDirs are the directories CNI plugins are looked up in, the node's own first.
func (c Config) CNIBinDirs() []string {
	return []string{filepath.Join(c.Root, "opt", "cni", "bin"), c.CNIBinDir}
}

// Validate reports every missing or bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is empty"))
	}
	if net.ParseIP(c.NodeIP) == nil {
		errs = append(errs, fmt.Errorf("--node-ip %q is not an IP", c.NodeIP))
	}
	if net.ParseIP(c.ClusterDNS) == nil {
		errs = append(errs, fmt.Errorf("--cluster-dns %q is not an IP", c.ClusterDNS))
	}
	for flag, path := range map[string]string{"--kubeconfig": c.Kubeconfig, "--serving-cert": c.ServingCert,
		"--serving-key": c.ServingKey, "--client-ca": c.ClientCA, "--coredns": c.CoreDNS, "--multicall": c.Multicall} {
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", flag, err))
		}
	}
	if c.Root == "" || c.State == "" || c.ImageDir == "" {
		errs = append(errs, errors.New("--root, --state and --image-dir are required"))
	}
	return errors.Join(errs...)
}

// realHostPaths are hostPath prefixes that mean the machine's own paths, not the node root:
// kernel interfaces and namespaces are shared by every lab node.
var realHostPaths = []string{"/proc", "/sys", "/dev", "/run/netns", "/lib/modules"}

// HostPath maps a hostPath volume's path to where it lives for this node. /var/run is /run,
// as on every current Linux (there it is a symlink).
func (c Config) HostPath(p string) string {
	clean := filepath.Clean("/" + p)
	if clean == "/var/run" || strings.HasPrefix(clean, "/var/run/") {
		clean = "/run" + strings.TrimPrefix(clean, "/var/run")
	}
	if c.BPFFS != "" && (clean == "/sys/fs/bpf" || strings.HasPrefix(clean, "/sys/fs/bpf/")) {
		return filepath.Join(c.BPFFS, strings.TrimPrefix(clean, "/sys/fs/bpf"))
	}
	for _, real := range realHostPaths {
		if clean == real || strings.HasPrefix(clean, real+"/") {
			return clean
		}
	}
	return filepath.Join(c.Root, clean)
}

// NodeLocalDirs are the directories that belong to a node, not the machine: the lab kubelet
// runs in its own mount namespace where each is the node root's directory bind-mounted at
// the real path, so CNI plugins the kubelet runs and containers with hostPath volumes see
// the same node-local files (the CNI socket weft-agent serves, Open vSwitch's sockets, ...).
var NodeLocalDirs = []string{"/etc/cni", "/opt/cni", "/var/lib/cni", "/run/weft", "/var/lib/weft",
	"/run/openvswitch", "/var/lib/openvswitch", "/var/log/openvswitch", "/etc/openvswitch"}
