package operator

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/images"
	"github.com/weft-net/weft/internal/version"
)

// Config is the operator's configuration. Every field has a flag; defaults suit an in-cluster
// Deployment installed from config/default.
type Config struct {
	// Namespace the operator runs in: its Secrets, leader-election Lease, webhook Service.
	Namespace string
	// MetricsAddr serves /metrics; ProbeAddr serves /healthz and /readyz. "0" disables.
	MetricsAddr, ProbeAddr string
	// LeaderElect makes replicas elect one leader for the controllers.
	LeaderElect bool

	Webhook WebhookConfig

	// PeerResync is how often a connected ClusterPeer is read again.
	PeerResync time.Duration

	// KubeAPIQPS and KubeAPIBurst limit the requests the operator sends to its cluster's
	// API server (client-go's token bucket). Sized for bulk: a thousand imports take a few
	// thousand writes, and the API server's own priority and fairness protects it; at rest
	// the operator sends almost nothing whatever they are.
	KubeAPIQPS   float64
	KubeAPIBurst int

	// AgentImage and OVSImage run on every node (the weft-agent DaemonSet).
	AgentImage, OVSImage string
	// GatewayImage runs on gateway nodes (the weft-gateway DaemonSet); empty installs none.
	GatewayImage string
	// DNSImage answers the clusterset zone (the weft-dns Deployment); empty installs none.
	DNSImage string

	// SeveralInProcess lets tests run several operators (one per test API server) in one
	// process; controller-runtime otherwise refuses a second controller of the same name.
	// No flag.
	SeveralInProcess bool
}

// WebhookConfig configures the admission webhook server and its certificate.
type WebhookConfig struct {
	// Disabled turns the webhook server off (the CRD's CEL rules and the Tier controller
	// still catch bad input, only later).
	Disabled bool
	Port     int
	CertDir  string
	// CertsProvided means someone else writes tls.crt and tls.key into CertDir and the CA
	// into the webhook configuration (OLM, cert-manager): the operator keeps no Secret and
	// never touches caBundle; the server reloads the files when they change.
	CertsProvided bool
	// ServiceName is the webhook Service; its in-cluster DNS names go into the certificate.
	ServiceName string
	// Hosts are extra names or IPs for the certificate (a webhook reached by URL).
	Hosts []string
	// SecretName holds the CA and certificate shared by replicas.
	SecretName string
	// ConfigurationName is the ValidatingWebhookConfiguration whose caBundle is managed.
	ConfigurationName string
}

// DefaultConfig returns the defaults the flags start from.
func DefaultConfig() Config {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "weft-system"
	}
	return Config{
		Namespace: ns,
		// The operator runs on the host network (it installs the pod network), so its
		// ports are ones nothing else on a node is likely to hold. Metrics answer only
		// callers the API server authorizes; the probes, unauthenticated, answer only on
		// the node's loopback (the kubelet probes 127.0.0.1).
		MetricsAddr:  ":10371",
		ProbeAddr:    "127.0.0.1:10372",
		PeerResync:   10 * time.Second,
		KubeAPIQPS:   100,
		KubeAPIBurst: 200,
		AgentImage:   images.Ref("weft-agent", version.Version),
		OVSImage:     images.Ref("weft-ovs", version.Version),
		GatewayImage: images.Ref("weft-gateway", version.Version),
		DNSImage:     images.Ref("weft-dns", version.Version),
		Webhook: WebhookConfig{
			Port:              10370,
			CertDir:           "/tmp/weft-webhook-certs",
			ServiceName:       "weft-webhook-service",
			SecretName:        "weft-webhook-cert",
			ConfigurationName: "weft-validating-webhook-configuration",
		},
	}
}

// AddFlags binds the configuration to flags.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "namespace the operator runs in (default from POD_NAMESPACE)")
	fs.StringVar(&c.MetricsAddr, "metrics-bind-address", c.MetricsAddr, "address of /metrics; 0 disables")
	fs.StringVar(&c.ProbeAddr, "health-probe-bind-address", c.ProbeAddr, "address of /healthz and /readyz; 0 disables")
	fs.BoolVar(&c.LeaderElect, "leader-elect", c.LeaderElect, "elect a leader among replicas")
	fs.DurationVar(&c.PeerResync, "peer-resync", c.PeerResync, "how often connected peers are read again")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", c.KubeAPIQPS, "requests per second the operator may send to its API server, on average")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", c.KubeAPIBurst, "requests the operator may send to its API server at once, above --kube-api-qps")
	fs.StringVar(&c.AgentImage, "agent-image", c.AgentImage, "image of the weft-agent container on every node")
	fs.StringVar(&c.OVSImage, "ovs-image", c.OVSImage, "image of the Open vSwitch container on every node")
	fs.StringVar(&c.GatewayImage, "gateway-image", c.GatewayImage, "image of weft-gateway on gateway nodes (empty: no gateways)")
	fs.StringVar(&c.DNSImage, "dns-image", c.DNSImage, "image of weft-dns, the clusterset zone's server (empty: none)")
	fs.BoolVar(&c.Webhook.Disabled, "webhook-disabled", c.Webhook.Disabled, "do not serve admission webhooks")
	fs.IntVar(&c.Webhook.Port, "webhook-port", c.Webhook.Port, "port of the admission webhook server")
	fs.StringVar(&c.Webhook.CertDir, "webhook-cert-dir", c.Webhook.CertDir, "directory the webhook certificate is written to")
	fs.Func("webhook-certs", `who provides the webhook certificate: "self" (the operator's own CA, kept in --webhook-secret-name and injected into --webhook-configuration-name) or "provided" (tls.crt/tls.key in --webhook-cert-dir come from OLM or cert-manager)`, func(s string) error {
		switch s {
		case "self":
			c.Webhook.CertsProvided = false
		case "provided":
			c.Webhook.CertsProvided = true
		default:
			return fmt.Errorf("%q is neither self nor provided", s)
		}
		return nil
	})
	fs.StringVar(&c.Webhook.ServiceName, "webhook-service-name", c.Webhook.ServiceName, "Service in front of the webhook server")
	fs.StringVar(&c.Webhook.SecretName, "webhook-secret-name", c.Webhook.SecretName, "Secret that keeps the webhook CA and certificate")
	fs.StringVar(&c.Webhook.ConfigurationName, "webhook-configuration-name", c.Webhook.ConfigurationName, "ValidatingWebhookConfiguration whose caBundle the operator manages")
	fs.Func("webhook-host", "extra DNS name or IP for the webhook certificate (repeatable)", func(s string) error {
		c.Webhook.Hosts = append(c.Webhook.Hosts, s)
		return nil
	})
}

// Validate reports every invalid field at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("--namespace is empty"))
	}
	if c.AgentImage == "" || c.OVSImage == "" {
		errs = append(errs, errors.New("--agent-image and --ovs-image are required"))
	}
	if c.PeerResync < time.Second {
		errs = append(errs, fmt.Errorf("--peer-resync %v is below 1s", c.PeerResync))
	}
	if c.KubeAPIQPS <= 0 || float64(c.KubeAPIBurst) < c.KubeAPIQPS {
		errs = append(errs, fmt.Errorf("--kube-api-qps %v must be above 0 and --kube-api-burst %d at least as much", c.KubeAPIQPS, c.KubeAPIBurst))
	}
	if !c.Webhook.Disabled {
		if c.Webhook.Port <= 0 || c.Webhook.Port > 65535 {
			errs = append(errs, fmt.Errorf("--webhook-port %d is not a port", c.Webhook.Port))
		}
		for name, v := range map[string]string{"--webhook-cert-dir": c.Webhook.CertDir,
			"--webhook-service-name": c.Webhook.ServiceName, "--webhook-secret-name": c.Webhook.SecretName,
			"--webhook-configuration-name": c.Webhook.ConfigurationName} {
			if v == "" {
				errs = append(errs, fmt.Errorf("%s is empty", name))
			}
		}
	}
	return errors.Join(errs...)
}

// CertNames are the DNS names and IPs the webhook certificate covers.
func (w WebhookConfig) CertNames(namespace string) ([]string, []net.IP) {
	svc := w.ServiceName + "." + namespace
	dns := []string{svc + ".svc", svc + ".svc.cluster.local"}
	var ips []net.IP
	for _, h := range w.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h = strings.TrimSpace(h); h != "" {
			dns = append(dns, h)
		}
	}
	return dns, ips
}
