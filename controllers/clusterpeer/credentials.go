package clusterpeer

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// requestTimeout bounds every request to a peer, so an unreachable peer never blocks a worker
// for long.
const requestTimeout = 10 * time.Second

// restConfigFromKubeconfig turns a peer kubeconfig into a client configuration. Only
// self-contained kubeconfigs are accepted: an exec plugin or auth provider would run code in
// the operator, and a file reference would read the operator's own files (its service account
// token, for one), so both are refused.
func restConfigFromKubeconfig(data []byte) (*rest.Config, error) {
	if len(data) == 0 {
		return nil, errors.New("the kubeconfig is empty")
	}
	raw, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	if raw.CurrentContext == "" && len(raw.Contexts) == 1 {
		for name := range raw.Contexts {
			raw.CurrentContext = name
		}
	}
	ctx, ok := raw.Contexts[raw.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("the kubeconfig has no current context (current-context %q, %d contexts)",
			raw.CurrentContext, len(raw.Contexts))
	}
	if err := checkSelfContained(raw, ctx); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("unusable kubeconfig: %w", err)
	}
	cfg.Timeout = requestTimeout
	cfg.UserAgent = "weft-operator/clusterpeer"
	return cfg, nil
}

func checkSelfContained(raw *clientcmdapi.Config, ctx *clientcmdapi.Context) error {
	cluster, ok := raw.Clusters[ctx.Cluster]
	if !ok {
		return fmt.Errorf("the current context names cluster %q, which the kubeconfig does not define", ctx.Cluster)
	}
	if cluster.CertificateAuthority != "" {
		return errors.New("the kubeconfig refers to a CA file; inline it as certificate-authority-data")
	}
	if cluster.ProxyURL != "" {
		return errors.New("the kubeconfig sets a proxy-url; peers are reached directly")
	}
	user, ok := raw.AuthInfos[ctx.AuthInfo]
	if !ok {
		return fmt.Errorf("the current context names user %q, which the kubeconfig does not define", ctx.AuthInfo)
	}
	switch {
	case user.Exec != nil:
		return errors.New("the kubeconfig uses an exec credential plugin, which is not allowed for peers; use a token or client certificate")
	case user.AuthProvider != nil:
		return errors.New("the kubeconfig uses an auth provider, which is not allowed for peers; use a token or client certificate")
	case user.TokenFile != "", user.ClientCertificate != "", user.ClientKey != "":
		return errors.New("the kubeconfig refers to credential files; inline them (token, client-certificate-data, client-key-data)")
	case user.Impersonate != "":
		return errors.New("the kubeconfig impersonates another user, which is not allowed for peers")
	}
	return nil
}

// RESTConfig turns the kubeconfig of a ClusterPeer's Secret into a client configuration,
// refusing what is not self-contained (see restConfigFromKubeconfig). Other controllers
// reading peers use it.
func RESTConfig(kubeconfig []byte) (*rest.Config, error) { return restConfigFromKubeconfig(kubeconfig) }
