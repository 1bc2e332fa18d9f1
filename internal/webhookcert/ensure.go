package webhookcert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options says where the certificate lives and what it must cover.
type Options struct {
	// Namespace and SecretName of the Secret that holds CA and certificate.
	Namespace, SecretName string
	// CertDir receives tls.crt and tls.key for the webhook server.
	CertDir string
	// DNSNames and IPs the serving certificate must cover.
	DNSNames []string
	IPs      []net.IP
	// WebhookConfigurations are ValidatingWebhookConfiguration names whose caBundle is set.
	WebhookConfigurations []string

	// CAValidity and CertValidity are lifetimes of new certificates; RenewBefore is how long
	// before expiry they are replaced. Zero values mean 10 years, 1 year and 30 days.
	CAValidity, CertValidity, RenewBefore time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.CAValidity == 0 {
		o.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if o.CertValidity == 0 {
		o.CertValidity = 365 * 24 * time.Hour
	}
	if o.RenewBefore == 0 {
		o.RenewBefore = 30 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Ensure makes the Secret hold a usable certificate, writes it to CertDir and injects the CA.
// Replicas may call it at once: creation and update races resolve through the API server
// (AlreadyExists and Conflict lead to a re-read), so all of them end with the same Secret.
func Ensure(ctx context.Context, c client.Client, o Options) error {
	o.defaults()
	var b bundle
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		b, err = ensureSecret(ctx, c, o)
		if err == nil || !(apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err)) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("webhook certificate Secret %s/%s: %w", o.Namespace, o.SecretName, err)
	}
	if err := writeFiles(o.CertDir, b); err != nil {
		return fmt.Errorf("writing webhook certificate to %s: %w", o.CertDir, err)
	}
	for _, name := range o.WebhookConfigurations {
		if err := injectCA(ctx, c, name, b.CACert); err != nil {
			return fmt.Errorf("injecting CA into ValidatingWebhookConfiguration %s: %w", name, err)
		}
	}
	return nil
}

func ensureSecret(ctx context.Context, c client.Client, o Options) (bundle, error) {
	now := o.Now()
	secret := &corev1.Secret{}
	err := c.Get(ctx, types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName}, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return bundle{}, err
	}
	exists := err == nil
	current := bundleFrom(secret.Data)
	caOK, problem := current.usable(o.DNSNames, o.IPs, now, o.RenewBefore)
	if exists && problem == nil {
		return current, nil
	}

	next := current
	if !exists || !caOK {
		if next.CACert, next.CAKey, err = newCA(now, o.CAValidity); err != nil {
			return bundle{}, err
		}
	}
	if next.Cert, next.Key, err = newLeaf(next.CACert, next.CAKey, o.DNSNames, o.IPs, now, o.CertValidity); err != nil {
		return bundle{}, err
	}
	log := ctrl.LoggerFrom(ctx).WithValues("secret", o.Namespace+"/"+o.SecretName)
	if !exists {
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.SecretName,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "weft-operator"}},
			Type: corev1.SecretTypeTLS,
			Data: next.data(),
		}
		if err := c.Create(ctx, secret); err != nil {
			return bundle{}, err
		}
		log.Info("created webhook serving certificate")
		return next, nil
	}
	secret.Data = next.data()
	if err := c.Update(ctx, secret); err != nil {
		return bundle{}, err
	}
	log.Info("renewed webhook serving certificate", "why", problem.Error(), "newCA", !caOK)
	return next, nil
}

// writeFiles replaces tls.crt and tls.key when they differ, each by an atomic rename; the
// webhook server's certificate watcher reloads them.
func writeFiles(dir string, b bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{keyCert: b.Cert, keyKey: b.Key} {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && sameBytes(old, data) {
			continue
		}
		tmp, err := os.CreateTemp(dir, "."+name+".*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			_ = os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			_ = os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}

func injectCA(ctx context.Context, c client.Client, name string, ca []byte) error {
	cfg := &admissionv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).Info("webhook configuration not found yet; will retry", "name", name)
			return nil
		}
		return err
	}
	before := cfg.DeepCopy()
	changed := false
	for i := range cfg.Webhooks {
		if !sameBytes(cfg.Webhooks[i].ClientConfig.CABundle, ca) {
			cfg.Webhooks[i].ClientConfig.CABundle = ca
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return c.Patch(ctx, cfg, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
}

// Rotator calls Ensure every Interval (default one minute) on every replica, so a renewed
// certificate reaches every replica's files and a cleared caBundle is restored.
type Rotator struct {
	Client   client.Client
	Options  Options
	Interval time.Duration
}

// Start runs until ctx ends. Errors are logged and retried on the next tick.
func (r *Rotator) Start(ctx context.Context) error {
	interval := r.Interval
	if interval == 0 {
		interval = time.Minute
	}
	log := ctrl.LoggerFrom(ctx).WithName("webhookcert")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := Ensure(ctx, r.Client, r.Options); err != nil {
				log.Error(err, "keeping the webhook certificate")
			}
		}
	}
}

// NeedLeaderElection is false: every replica serves webhooks and needs the files.
func (r *Rotator) NeedLeaderElection() bool { return false }
