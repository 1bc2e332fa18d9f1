package clusterpeer

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netguard"
)

// hostAddr is an address of this cluster a peer's range must not cover.
type hostAddr struct {
	addr netip.Addr
	what string
}

// localAddrs are this cluster's node addresses and its API server's, from the cache.
func (r *Reconciler) localAddrs(ctx context.Context) ([]hostAddr, error) {
	var out []hostAddr
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return nil, err
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out = append(out, hostAddr{ip.Unmap(), "node " + n.Name + "'s address " + ip.String()})
			}
		}
	}
	apiServer := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, apiServer, client.InNamespace(metav1.NamespaceDefault),
		client.MatchingLabels{discoveryv1.LabelServiceName: "kubernetes"}); err != nil {
		return nil, err
	}
	for _, s := range apiServer.Items {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					out = append(out, hostAddr{ip.Unmap(), "the API server's address " + ip.String()})
				}
			}
		}
	}
	return out, nil
}

// refuseReason says why a peer may not claim p ("" if it may): a default route, a range
// covering a special or local address, or one outside the peer's spec.allowedCIDRs.
func refuseReason(p netip.Prefix, local []hostAddr, allowed []fabricv1.CIDR) string {
	// Its ranges become routes on every node and gateway here and WireGuard's allowed IPs:
	// a range covering any of these would send this cluster's own traffic into the tunnel.
	if why := netguard.Refuse(p); why != "" {
		return why
	}
	for _, a := range local {
		if p.Contains(a.addr) {
			return "covers " + a.what
		}
	}
	if len(allowed) > 0 {
		for _, c := range allowed {
			if a, err := netip.ParsePrefix(string(c)); err == nil && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
				return ""
			}
		}
		return "lies outside spec.allowedCIDRs"
	}
	return ""
}

// boundRanges keeps, of cidrs (a peer's ranges of one kind), those it may claim; refused
// lists the others, each with why.
func boundRanges(kind string, cidrs []string, local []hostAddr, allowed []fabricv1.CIDR) (kept, refused []string) {
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			refused = append(refused, fmt.Sprintf("%s range %q is not a CIDR", kind, c))
			continue
		}
		if why := refuseReason(p.Masked(), local, allowed); why != "" {
			refused = append(refused, fmt.Sprintf("%s range %s %s", kind, c, why))
			continue
		}
		kept = append(kept, c)
	}
	return kept, refused
}
