package v1alpha1

// Annotations weft reads or writes on core objects.
const (
	// AnnotationPodCIDRs on a Node is the pod blocks weft allocated to it, comma-separated
	// (one per IP family). The operator writes it; the node's agent reads it.
	AnnotationPodCIDRs = "fabric.weft.dev/pod-cidrs"
	// AnnotationPodIP on a Pod asks for a fixed address; it must lie in its node's block.
	AnnotationPodIP = "fabric.weft.dev/ip"
)
