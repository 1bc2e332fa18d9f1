// Command weft-gateway runs on every gateway node (a DaemonSet the operator installs on the
// nodes ClusterNetwork.spec.gateways.nodeSelector picks): it carries traffic to the peer
// clusters through its tunnel.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/weft-net/weft/gateway"
)

func main() {
	cfg := gateway.DefaultConfig()
	flag.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's name (default from NODE_NAME)")
	flag.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "the operator's namespace (default from POD_NAMESPACE)")
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "kubeconfig; empty means in-cluster")
	flag.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "where the gateway keeps its private key")
	flag.DurationVar(&cfg.Interval, "interval", cfg.Interval, "how often the Lease is renewed and peers are synced")
	flag.DurationVar(&cfg.LeaseDuration, "lease-duration", cfg.LeaseDuration, "how long the Lease lasts without renewal")
	flag.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "address of /metrics (per peer gateway: probes, tunnel bytes, handshakes, failovers; tunnel filter drops); 0 disables")
	flag.StringVar(&cfg.SecureMetricsAddr, "secure-metrics-addr", cfg.SecureMetricsAddr, "address of /metrics over TLS, for callers the API server authorizes (Prometheus); 0 disables")
	klog.InitFlags(nil)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := gateway.Run(klog.NewContext(ctx, klog.Background()), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "weft-gateway:", err)
		os.Exit(1)
	}
}
