// Command weft-dns serves the clusterset zone (clusterset.local) of Multi-Cluster Services:
// names of the ServiceImports in this cluster, answered from the imports and their
// EndpointSlices. The cluster DNS forwards the zone to it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/weft-net/weft/dns/source"
)

func main() {
	cfg := source.DefaultConfig()
	ttl := uint(cfg.TTL)
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "kubeconfig; empty means in-cluster")
	flag.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to answer on (UDP and TCP)")
	flag.StringVar(&cfg.Domain, "domain", cfg.Domain, "the clusterset zone")
	flag.UintVar(&ttl, "ttl", ttl, "TTL of the answers, in seconds")
	flag.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "address of /metrics; 0 disables")
	flag.StringVar(&cfg.SecureMetricsAddr, "secure-metrics-addr", cfg.SecureMetricsAddr, "address of /metrics over TLS, for callers the API server authorizes (Prometheus); 0 disables")
	klog.InitFlags(nil)
	flag.Parse()
	cfg.TTL = uint32(ttl)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := source.Run(klog.NewContext(ctx, klog.Background()), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "weft-dns:", err)
		os.Exit(1)
	}
}
