package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/dns"
	"github.com/weft-net/weft/internal/restcfg"
	"github.com/weft-net/weft/internal/securemetrics"
)

// Config configures weft-dns.
type Config struct {
	Kubeconfig string // "" means in-cluster
	Listen     string // host:port for UDP and TCP
	Domain     string // the clusterset zone
	TTL        uint32
	// MetricsAddr serves /metrics in plain HTTP ("" or "0": not served); by default on the
	// pod's loopback only. SecureMetricsAddr serves them over TLS to callers the API server
	// authorizes for /metrics (Prometheus); "" or "0" disables.
	MetricsAddr, SecureMetricsAddr string
}

// DefaultConfig serves clusterset.local on port 53 with a 5 s TTL, and its metrics on
// 127.0.0.1:9153 and, to authorized callers, on :9154.
func DefaultConfig() Config {
	return Config{Listen: ":53", Domain: "clusterset.local", TTL: 5, MetricsAddr: "127.0.0.1:9153", SecureMetricsAddr: ":9154"}
}

// Run watches the cluster's ServiceImports and imported EndpointSlices and answers from
// them until ctx ends. It answers NXDOMAIN for everything until the first read is done.
func Run(ctx context.Context, cfg Config) error {
	log := klog.FromContext(ctx)
	rc, err := restcfg.Load(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), mcsv1.AddToScheme(scheme)); err != nil {
		return err
	}
	imported, err := labels.NewRequirement(mcsv1.LabelSourceCluster, selection.Exists, nil)
	if err != nil {
		return err
	}
	c, err := cache.New(rc, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&discoveryv1.EndpointSlice{}: {Label: labels.NewSelector().Add(*imported)}}})
	if err != nil {
		return err
	}
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() }, UpdateFunc: func(any, any) { poke() }, DeleteFunc: func(any) { poke() }}
	for _, o := range []client.Object{&mcsv1.ServiceImport{}, &discoveryv1.EndpointSlice{}} {
		inf, err := c.GetInformer(ctx, o)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	go func() { _ = c.Start(ctx) }()
	a := dns.NewAnswerer(cfg.Domain, cfg.TTL)
	reg := prometheus.NewRegistry()
	reg.MustRegister(dns.NewStats(a))
	securemetrics.ServeAll(ctx, log, cfg.MetricsAddr, cfg.SecureMetricsAddr, reg, rc) // answering does not wait for them
	served := make(chan error, 1)
	go func() {
		served <- dns.Serve(ctx, cfg.Listen, a, func(udp, tcp net.Addr) {
			log.Info("weft-dns answering", "zone", cfg.Domain, "udp", udp, "tcp", tcp)
		})
	}()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("weft-dns: the caches did not sync")
	}
	poke()
	var took time.Duration
	for {
		select {
		case <-ctx.Done():
			return <-served
		case err := <-served:
			return err
		case <-changed:
		}
		// Gather a burst of changes into one snapshot: 20 ms, or longer when building one
		// takes long (a thousand imports arriving at once would otherwise have the zone
		// rebuilt for each, at a cost growing with the zone).
		time.Sleep(snapshotGap(took))
		start := time.Now()
		imports, slices := &mcsv1.ServiceImportList{}, &discoveryv1.EndpointSliceList{}
		// Read only, never kept: no copies of the cache's objects.
		if err := errors.Join(c.List(ctx, imports, client.UnsafeDisableDeepCopy), c.List(ctx, slices, client.UnsafeDisableDeepCopy)); err != nil {
			log.Error(err, "reading imports")
			continue
		}
		z := ZoneFrom(imports.Items, slices.Items)
		a.Set(z)
		took = time.Since(start)
		log.V(1).Info("zone updated", "services", z.Len(), "took", took)
	}
}

// snapshotGap is how long to gather changes before building a snapshot, after the last one
// took took: 20 ms, or four times that, at most 250 ms (a zone update is that late at most,
// and building snapshots takes at most a fifth of a core).
func snapshotGap(took time.Duration) time.Duration {
	return min(max(20*time.Millisecond, 4*took), 250*time.Millisecond)
}
