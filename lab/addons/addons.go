// Package addons holds the objects every lab cluster starts with: CoreDNS as cluster DNS,
// and RBAC that lets lab kubelets read ConfigMaps and Secrets through informers.
package addons

import (
	_ "embed"
	"strings"
)

//go:embed coredns.yaml
var coreDNS string

//go:embed lab-rbac.yaml
var labRBAC string

// Manifests returns the add-on manifests for a cluster whose DNS Service has dnsIP.
func Manifests(dnsIP, clusterDomain string) string {
	return labRBAC + "\n---\n" + strings.NewReplacer("${DNS_IP}", dnsIP, "${CLUSTER_DOMAIN}", clusterDomain).Replace(coreDNS)
}
