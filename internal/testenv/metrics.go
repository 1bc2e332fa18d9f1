package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// MetricsServedOnlyToReaders checks that url, a TLS /metrics endpoint, answers only a caller
// cfg's API server authenticates and authorizes: nothing without a token (401), nothing to a
// service account without the weft-metrics-reader role (403), and to one with it, an answer
// holding want.
func MetricsServedOnlyToReaders(t testing.TB, cfg *rest.Config, url, want string) {
	t.Helper()
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := "weft-system"
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	// Two service accounts: the server caches a refusal for a while, so the one refused is
	// not the one then granted the role.
	tokens := map[string]string{}
	for _, sa := range []string{"metrics-nobody", "prometheus"} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}},
			metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens[sa] = tr.Status.Token
	}
	token := tokens["prometheus"]
	if code, _, err := GetAs(url, ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token: %d %v, want 401", code, err)
	}
	if code, _, err := GetAs(url, tokens["metrics-nobody"]); err != nil || code != http.StatusForbidden {
		t.Errorf("GET /metrics as a service account without the reader role: %d %v, want 403", code, err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "weft-metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-weft-metrics"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, func() error {
		code, body, err := GetAs(url, token)
		if err != nil || code != http.StatusOK || !strings.Contains(body, want) {
			return fmt.Errorf("GET /metrics as a reader: %d, holds %q: %v: %w", code, want, strings.Contains(body, want), err)
		}
		return nil
	})
}

// GetAs GETs url over TLS (the server's certificate is its own: not verified) with a
// bearer token ("" for none), as Prometheus scrapes.
func GetAs(url, token string) (int, string, error) { return GetAsVia(nil, url, token) }

// GetAsVia is GetAs with connections made by dial (nil: the default), such as one from
// inside a network namespace.
func GetAsVia(dial func(ctx context.Context, network, addr string) (net.Conn, error), url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the component's self-signed certificate
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
