// Package kubelet is the lab's kubelet, built on the virtual-kubelet node library: it
// registers a Node with a Ready condition and a Lease, and runs pods as Linux namespaces
// instead of containers. Each pod gets a network namespace set up through the CNI plugin
// configured in the node's CNI directory (the real CNI protocol); each container is a process
// in that namespace and in its own mount and UTS namespaces, where volumes (ConfigMaps,
// Secrets, service-account tokens, emptyDirs, hostPaths) are bind-mounted at their paths.
// Images map to programs on this machine through lab/images. It serves exec and logs
// for `kubectl exec` and `kubectl logs`, runs probes, honours restartPolicy and deletion.
//
// It is a test tool: no image pulls, no resource isolation, no cgroups.
package kubelet
