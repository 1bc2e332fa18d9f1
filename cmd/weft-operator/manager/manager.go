// Package manager wires the weft-operator: the controller-runtime manager with every
// controller and webhook registered, and the webhook certificate. cmd/weft-operator is a
// thin main around it; tests start the same operator in-process (managertest). Its
// configuration and scheme are internal/operator's.
package manager

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusternetwork"
	"github.com/weft-net/weft/controllers/clusterpeer"
	"github.com/weft-net/weft/controllers/fabricpolicy"
	"github.com/weft-net/weft/controllers/gatewaystatus"
	"github.com/weft-net/weft/controllers/mcs"
	"github.com/weft-net/weft/controllers/nodeipam"
	"github.com/weft-net/weft/controllers/peeraliases"
	"github.com/weft-net/weft/controllers/tier"
	"github.com/weft-net/weft/internal/apiretry"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/render"
	"github.com/weft-net/weft/internal/webhookcert"
)

// Backends are the datapath backends this build implements.
var Backends = []fabricv1.DatapathBackend{fabricv1.DatapathOVS, fabricv1.DatapathEBPF}

// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=weft-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=weft-system,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",namespace=weft-system,resources=secrets,verbs=create;update
// The operator manages the caBundle of its own webhook configuration only (the default name:
// with --webhook-configuration-name, grant update/patch of that name instead).
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=update;patch,resourceNames=weft-validating-webhook-configuration

// /metrics is served over TLS to those the API server authenticates and authorizes (get on
// the non-resource URL /metrics: ClusterRole weft-metrics-reader), never to anyone who
// reaches the port.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// NewManagerWhenReachable is NewManager, waiting while the API server does not answer
// (stopped, restarting, unreachable): an operator that exited instead would be restarted by
// the kubelet with a growing back-off, and could sit in it for minutes after the API server
// came back. Any other error is returned at once.
func NewManagerWhenReachable(ctx context.Context, cfg operator.Config, restCfg *rest.Config, log logr.Logger) (ctrl.Manager, error) {
	backoff := time.Second
	for {
		mgr, err := NewManager(ctx, cfg, restCfg)
		if err == nil || !apiretry.Transient(err) {
			return mgr, err
		}
		log.Info("the API server does not answer yet; waiting for it", "reason", err.Error(), "retryIn", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
		// A failed attempt may have registered some controllers' names in this process.
		cfg.SeveralInProcess = true
	}
}

// NewManager builds the manager with every controller and webhook registered.
func NewManager(ctx context.Context, cfg operator.Config, restCfg *rest.Config) (ctrl.Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	scheme := operator.NewScheme()
	restCfg = rest.CopyConfig(restCfg)
	restCfg.QPS, restCfg.Burst = float32(cfg.KubeAPIQPS), cfg.KubeAPIBurst
	opts := ctrl.Options{
		Scheme: scheme,
		Metrics: metricsserver.Options{BindAddress: cfg.MetricsAddr, SecureServing: true,
			FilterProvider: filters.WithAuthenticationAndAuthorization},
		HealthProbeBindAddress:  cfg.ProbeAddr,
		LeaderElection:          cfg.LeaderElect,
		LeaderElectionID:        "weft-operator.fabric.weft.dev",
		LeaderElectionNamespace: cfg.Namespace,
		// The binary exits right after the manager stops, so releasing the lease is safe and
		// lets the next replica take over at once instead of after the lease expires.
		LeaderElectionReleaseOnCancel: true,
		Controller:                    ctrlconfig.Controller{SkipNameValidation: ptr.To(cfg.SeveralInProcess)},
		// The operator watches Secrets and its DaemonSets only in its own namespace (least
		// privilege: peer credentials elsewhere are read one by one).
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:         {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
			&appsv1.DaemonSet{}:      {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
			&coordinationv1.Lease{}:  {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
			&fabricv1.ExportRecord{}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
		}},
	}
	if !cfg.Webhook.Disabled {
		opts.WebhookServer = webhook.NewServer(webhook.Options{Port: cfg.Webhook.Port, CertDir: cfg.Webhook.CertDir})
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	if !cfg.Webhook.Disabled {
		if err := setupWebhooks(ctx, cfg, restCfg, mgr); err != nil {
			return nil, err
		}
	}
	if err := (&clusternetwork.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Options: clusternetwork.Options{Backends: Backends, Namespace: cfg.Namespace,
			Images: render.Images{Agent: cfg.AgentImage, OVS: cfg.OVSImage, Gateway: cfg.GatewayImage, DNS: cfg.DNSImage}}}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("clusternetwork controller: %w", err)
	}
	if err := (&gatewaystatus.Reconciler{Client: mgr.GetClient(), Namespace: cfg.Namespace}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("gateway status controller: %w", err)
	}
	if err := (&peeraliases.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("peer aliases controller: %w", err)
	}
	if err := (&nodeipam.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("node IPAM controller: %w", err)
	}
	if err := (&tier.Reconciler{Client: mgr.GetClient()}).SetupWithManager(ctx, mgr); err != nil {
		return nil, fmt.Errorf("tier controller: %w", err)
	}
	if err := fabricpolicy.Setup(ctx, mgr); err != nil {
		return nil, fmt.Errorf("fabricpolicy controllers: %w", err)
	}
	if err := (&clusterpeer.Reconciler{Client: mgr.GetClient(),
		Options: clusterpeer.Options{Resync: cfg.PeerResync, Namespace: cfg.Namespace}}).SetupWithManager(ctx, mgr); err != nil {
		return nil, fmt.Errorf("clusterpeer controller: %w", err)
	}
	view := &mcs.View{Client: mgr.GetClient(), Namespace: cfg.Namespace, Scheme: mgr.GetScheme()}
	mcsMetrics := mcs.NewMetrics(mgr.GetClient(), view)
	registerMetrics(clusterpeer.NewMetrics(mgr.GetClient()), mcsMetrics)
	if err := mcs.Setup(mgr, view, mcsMetrics); err != nil {
		return nil, err
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	ready := healthz.Ping
	if !cfg.Webhook.Disabled {
		ready = mgr.GetWebhookServer().StartedChecker()
	}
	if err := mgr.AddReadyzCheck("readyz", ready); err != nil {
		return nil, err
	}
	return mgr, nil
}

// setupWebhooks makes sure the serving certificate exists before the webhook server starts
// (it reads the files at start), keeps it fresh unless someone else provides it, and
// registers the webhooks.
func setupWebhooks(ctx context.Context, cfg operator.Config, restCfg *rest.Config, mgr ctrl.Manager) error {
	if cfg.Webhook.CertsProvided {
		for _, f := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(cfg.Webhook.CertDir, f)); err != nil {
				return fmt.Errorf("--webhook-certs=provided, but the certificate is not there: %w", err)
			}
		}
	} else if err := ownCertificate(ctx, cfg, restCfg, mgr); err != nil {
		return err
	}
	if err := tier.SetupWebhookWithManager(mgr); err != nil {
		return fmt.Errorf("tier webhook: %w", err)
	}
	return nil
}

// ownCertificate issues the webhook certificate from the operator's own CA, injects the CA
// into the webhook configuration and keeps both fresh.
func ownCertificate(ctx context.Context, cfg operator.Config, restCfg *rest.Config, mgr ctrl.Manager) error {
	direct, err := client.New(restCfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	dns, ips := cfg.Webhook.CertNames(cfg.Namespace)
	certOpts := webhookcert.Options{
		Namespace: cfg.Namespace, SecretName: cfg.Webhook.SecretName, CertDir: cfg.Webhook.CertDir,
		DNSNames: dns, IPs: ips, WebhookConfigurations: []string{cfg.Webhook.ConfigurationName},
	}
	if err := webhookcert.Ensure(ctx, direct, certOpts); err != nil {
		return err
	}
	return mgr.Add(&webhookcert.Rotator{Client: direct, Options: certOpts})
}

// registered are the operator's collectors registered with controller-runtime's registry,
// which is the process's: a manager made again in the same process (tests) replaces them.
var (
	registeredMu sync.Mutex
	registered   []prometheus.Collector
)

func registerMetrics(cs ...prometheus.Collector) {
	registeredMu.Lock()
	defer registeredMu.Unlock()
	for _, c := range registered {
		metrics.Registry.Unregister(c)
	}
	metrics.Registry.MustRegister(cs...)
	registered = cs
}
