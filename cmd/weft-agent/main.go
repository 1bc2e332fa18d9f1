// Command weft-agent runs on every node (a DaemonSet the operator installs): it owns the
// node's datapath and serves the weft-cni plugin.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent"
)

func main() {
	cfg := agent.DefaultConfig()
	flag.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's name (default from NODE_NAME)")
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "kubeconfig; empty means in-cluster")
	flag.StringVar(&cfg.CNISocket, "cni-socket", cfg.CNISocket, "unix socket weft-cni talks to")
	flag.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "where the CNI configuration is written")
	flag.StringVar(&cfg.CNIBinDir, "cni-bin-dir", cfg.CNIBinDir, "where weft-cni is installed")
	flag.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "agent state on the node (IPAM records)")
	flag.StringVar(&cfg.PolicyLog, "policy-log", cfg.PolicyLog, "file that gets one line per connection a logged policy rule matched (empty: the agent log only)")
	flag.StringVar(&cfg.OVSRunDir, "ovs-run-dir", cfg.OVSRunDir, "Open vSwitch run directory (db.sock, bridge sockets)")
	flag.StringVar(&cfg.HealthAddr, "health-addr", cfg.HealthAddr, "address of /healthz, /readyz and /metrics; 0 disables")
	flag.StringVar(&cfg.SecureMetricsAddr, "secure-metrics-addr", cfg.SecureMetricsAddr, "address of /metrics over TLS, for callers the API server authorizes (Prometheus); 0 disables")
	flag.StringVar(&cfg.BPFFS, "bpffs", cfg.BPFFS, "bpffs directory for the ebpf datapath's pins (mounted there if it is not one)")
	flag.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "the agent's namespace, where BGP password Secrets are read (default from POD_NAMESPACE)")
	klog.InitFlags(nil)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := agent.Run(klog.NewContext(ctx, klog.Background()), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "weft-agent:", err)
		os.Exit(1)
	}
}
