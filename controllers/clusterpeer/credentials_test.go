package clusterpeer

import (
	"strings"
	"testing"
)

const kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: peer
  cluster:
    server: https://127.0.0.1:6443
    CLUSTER
users:
- name: reader
  user:
    USER
contexts:
- name: peer
  context: {cluster: peer, user: reader}
CURRENT
`

func kubeconfig(cluster, user, current string) []byte {
	r := strings.NewReplacer("CLUSTER", cluster, "USER", user, "CURRENT", current)
	return []byte(r.Replace(kubeconfigTmpl))
}

func TestRestConfigFromKubeconfig(t *testing.T) {
	cases := []struct {
		name    string
		data    []byte
		wantErr string // substring; empty means success
	}{
		{"token, single context without current-context", kubeconfig("insecure-skip-tls-verify: true", "token: abc", ""), ""},
		{"explicit current context", kubeconfig("insecure-skip-tls-verify: true", "token: abc", "current-context: peer"), ""},
		{"empty", nil, "empty"},
		{"not yaml", []byte("{{{"), "not a kubeconfig"},
		{"unknown current context", kubeconfig("insecure-skip-tls-verify: true", "token: abc", "current-context: other"), "no current context"},
		{"exec plugin", kubeconfig("insecure-skip-tls-verify: true", "exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}", ""), "exec credential plugin"},
		{"token file", kubeconfig("insecure-skip-tls-verify: true", "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token", ""), "credential files"},
		{"client cert file", kubeconfig("insecure-skip-tls-verify: true", "client-certificate: /etc/x.crt", ""), "credential files"},
		{"ca file", kubeconfig("certificate-authority: /etc/ca.crt", "token: abc", ""), "CA file"},
		{"proxy", kubeconfig("proxy-url: http://10.0.0.1:3128", "token: abc", ""), "proxy-url"},
		{"impersonation", kubeconfig("insecure-skip-tls-verify: true", "as: system:admin\n    token: abc", ""), "impersonates"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := restConfigFromKubeconfig(c.data)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if cfg.Host != "https://127.0.0.1:6443" || cfg.BearerToken != "abc" || cfg.Timeout != requestTimeout {
					t.Errorf("config: host=%q token=%q timeout=%v", cfg.Host, cfg.BearerToken, cfg.Timeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}
