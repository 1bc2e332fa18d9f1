// Package clusternetwork reconciles the ClusterNetwork singleton: it validates what the CRD
// schema cannot (overlapping ranges, IP families, backends this build lacks), installs what
// the spec asks for — the node agents, the gateways, weft-dns and the cluster DNS's clusterset
// zone, whose objects internal/render builds — and reports the outcome as kstatus conditions.
package clusternetwork
