// Package restcfg loads the API server configuration of weft's node and cluster workloads:
// from a kubeconfig file when one is named, else in-cluster.
package restcfg

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load reads kubeconfig, or the pod's in-cluster configuration when kubeconfig is "".
func Load(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}
