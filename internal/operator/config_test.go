package operator

import (
	"flag"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigFlagsAndValidation(t *testing.T) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.AddFlags(fs)
	if err := fs.Parse([]string{"--namespace=fabric", "--webhook-host=127.0.0.1", "--webhook-host=op.example.com",
		"--peer-resync=45s", "--leader-elect", "--kube-api-qps=50", "--kube-api-burst=80"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid flags refused: %v", err)
	}
	if cfg.Namespace != "fabric" || cfg.PeerResync != 45*time.Second || !cfg.LeaderElect || cfg.KubeAPIQPS != 50 || cfg.KubeAPIBurst != 80 {
		t.Errorf("flags not bound: %+v", cfg)
	}
	dns, ips := cfg.Webhook.CertNames(cfg.Namespace)
	wantDNS := []string{"weft-webhook-service.fabric.svc", "weft-webhook-service.fabric.svc.cluster.local", "op.example.com"}
	if !slices.Equal(dns, wantDNS) || len(ips) != 1 || !ips[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("certificate names = %v %v, want %v [127.0.0.1]", dns, ips, wantDNS)
	}

	bad := DefaultConfig()
	bad.Namespace = ""
	bad.PeerResync = time.Millisecond
	bad.Webhook.Port = 70000
	bad.Webhook.CertDir = ""
	bad.KubeAPIBurst = 10
	err := bad.Validate()
	for _, want := range []string{"--namespace is empty", "--peer-resync 1ms is below 1s", "--webhook-port 70000", "--webhook-cert-dir is empty",
		"--kube-api-burst 10 at least as much"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to report %q", err, want)
		}
	}

	off := DefaultConfig()
	off.Webhook = WebhookConfig{Disabled: true}
	if err := off.Validate(); err != nil {
		t.Errorf("a disabled webhook needs no webhook settings, got %v", err)
	}
}
