package pki

import (
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kubeconfig builds a kubeconfig for one identity with inline credentials.
func (ca *CA) Kubeconfig(context, server string, id Pair) (*clientcmdapi.Config, error) {
	cert, err := os.ReadFile(id.Cert)
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(id.Key)
	if err != nil {
		return nil, err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[context] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca.CertPEM()}
	cfg.AuthInfos[context] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts[context] = &clientcmdapi.Context{Cluster: context, AuthInfo: context}
	cfg.CurrentContext = context
	return cfg, nil
}

// WriteKubeconfig writes a kubeconfig for one identity to path.
func (ca *CA) WriteKubeconfig(path, context, server string, id Pair) error {
	cfg, err := ca.Kubeconfig(context, server, id)
	if err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}
