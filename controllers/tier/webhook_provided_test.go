package tier_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/cmd/weft-operator/manager"
	"github.com/weft-net/weft/cmd/weft-operator/manager/managertest"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/testenv"
)

// writeProvidedCertificate plays OLM or cert-manager: a CA of its own and a serving
// certificate for 127.0.0.1 in dir as tls.crt/tls.key. It returns the CA's PEM.
func writeProvidedCertificate(t *testing.T, dir string) []byte {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "olm-test-ca"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "weft-operator-service"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: leafDER}, "tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// Under OLM (the bundle runs the operator with --webhook-certs=provided) the operator serves
// the certificate it is given and leaves the webhook configuration's caBundle to OLM.
// (This file sorts after suite_test.go: TestTiers starts the first operator of the process.)
func TestProvidedCertificateIsServedAndCABundleLeftAlone(t *testing.T) {
	ctx := context.Background()
	testenv.Eventually(t, 20*time.Second, func() error { _, err := getTier("application"); return err })
	dir := t.TempDir()
	caPEM := writeProvidedCertificate(t, dir)

	setCA := func() {
		vwc := &admissionv1.ValidatingWebhookConfiguration{}
		testenv.Eventually(t, 10*time.Second, func() error {
			if err := env.Client.Get(ctx, client.ObjectKey{Name: webhookConfig}, vwc); err != nil {
				return err
			}
			for i := range vwc.Webhooks {
				vwc.Webhooks[i].ClientConfig.CABundle = caPEM
			}
			return env.Client.Update(ctx, vwc)
		})
	}
	managertest.Start(t, env, func(cfg *operator.Config) {
		cfg.Webhook.CertsProvided = true
		cfg.Webhook.CertDir = dir
		cfg.SeveralInProcess = true
	})
	setCA() // managertest.Start applied config/dev's configuration, which has no caBundle

	// The API server trusts only the provided CA, so an admission answer proves the
	// operator serves the provided certificate.
	testenv.Eventually(t, 30*time.Second, func() error {
		err := env.Client.Create(ctx, newTier("provided-dup", 250))
		if err == nil {
			t.Fatal("a second tier with priority 250 was admitted")
		}
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "already held") {
			return fmt.Errorf("want the webhook's refusal, got %w", err)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the self-managed mode would have injected its CA by now
	vwc := &admissionv1.ValidatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: webhookConfig}, vwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range vwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			t.Errorf("webhook %s: caBundle was changed by the operator", w.Name)
		}
	}
}

func TestProvidedModeRefusesAMissingCertificate(t *testing.T) {
	cfg := operator.DefaultConfig()
	cfg.MetricsAddr, cfg.ProbeAddr = "0", "0"
	cfg.Webhook.Port = testenv.FreePort(t)
	cfg.Webhook.CertsProvided = true
	cfg.Webhook.CertDir = t.TempDir()
	cfg.SeveralInProcess = true
	_, err := manager.NewManager(context.Background(), cfg, env.Config)
	if err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Fatalf("NewManager with an empty provided cert dir: %v, want an error naming tls.crt", err)
	}
}
