// Package securemetrics serves a component's Prometheus metrics to the network as
// Kubernetes' own components do: over TLS, answering only callers the API server
// authenticates (a bearer token, TokenReview) and authorizes for get on the non-resource
// URL /metrics (SubjectAccessReview) — ClusterRole weft-metrics-reader grants it. A
// component's loopback listener, if it keeps one, stays for node-local readers.
package securemetrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
)

// Disabled says whether addr turns the listener off ("" or "0").
func Disabled(addr string) bool { return addr == "" || addr == "0" }

// Serve listens on addr and serves g at /metrics, over TLS with a self-signed certificate
// made at start (scrapers skip verification or pin nothing, as for the kubelet's), to
// callers cfg's API server lets read /metrics, until ctx ends. It returns the address it
// listens on once it does.
func Serve(ctx context.Context, log logr.Logger, addr string, g prometheus.Gatherer, cfg *rest.Config) (net.Addr, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("secure metrics: %w", err)
	}
	filter, err := filters.WithAuthenticationAndAuthorization(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("secure metrics: %w", err)
	}
	h, err := filter(log, promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	if err != nil {
		return nil, fmt.Errorf("secure metrics: %w", err)
	}
	cert, err := selfSigned()
	if err != nil {
		return nil, fmt.Errorf("secure metrics: %w", err)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("secure metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		// HTTP/1.1 only, as controller-runtime's metrics server: no HTTP/2 stream floods.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	go func() {
		if err := srv.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "serving metrics", "addr", addr)
		}
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return l.Addr(), nil
}

// selfSigned makes a P-256 key and a certificate for it, valid for ten years.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "weft-metrics"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ServeLocal serves g at /metrics in plain HTTP on addr — a loopback address, for the
// node's or the pod's own readers — until ctx ends. It returns once listening.
func ServeLocal(ctx context.Context, log logr.Logger, addr string, g prometheus.Gatherer) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "serving metrics", "addr", addr)
		}
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return nil
}

// ServeAll serves g on local in plain HTTP (a loopback address) and on secure over TLS to
// authorized callers, each unless Disabled. A port it cannot have is logged, not returned:
// a component's work does not wait for its metrics.
func ServeAll(ctx context.Context, log logr.Logger, local, secure string, g prometheus.Gatherer, cfg *rest.Config) {
	if !Disabled(local) {
		if err := ServeLocal(ctx, log, local, g); err != nil {
			log.Error(err, "not serving metrics")
		}
	}
	if !Disabled(secure) {
		if _, err := Serve(ctx, log, secure, g, cfg); err != nil {
			log.Error(err, "not serving metrics")
		}
	}
}
