// Package gateway holds weft-gateway: the processes on gateway nodes that carry traffic to
// peer clusters. Its parts live in subpackages; tunnel is the seam for tunnel drivers.
package gateway
