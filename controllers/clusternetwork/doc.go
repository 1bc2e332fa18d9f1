// Package clusternetwork reconciles the ClusterNetwork singleton: it validates what the CRD
// schema cannot (overlapping ranges, IP families, backends this build lacks) and reports the
// outcome as kstatus conditions. Later phases install the node agents, gateways and DNS.
package clusternetwork
