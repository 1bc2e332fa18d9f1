package gatewaystatus

import (
	"encoding/json"
	"sort"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// defaultLeaseDuration applies to a gateway Lease that states none.
const defaultLeaseDuration = 2 * time.Second

// gatewaysFromLeases turns gateway Leases into status entries, sorted by node, and says how
// soon the first healthy one expires (0: none healthy).
func gatewaysFromLeases(leases []coordinationv1.Lease, now time.Time) ([]fabricv1.GatewayStatus, time.Duration) {
	var out []fabricv1.GatewayStatus
	var next time.Duration
	for _, l := range leases {
		node := ""
		if l.Spec.HolderIdentity != nil {
			node = *l.Spec.HolderIdentity
		}
		if node == "" {
			continue
		}
		gw := fabricv1.GatewayStatus{Node: node, Endpoint: l.Annotations[fabricv1.AnnotationGatewayEndpoint],
			PublicKey: l.Annotations[fabricv1.AnnotationGatewayPublicKey],
			Tunnel:    fabricv1.TunnelType(l.Annotations[fabricv1.AnnotationGatewayTunnel])}
		if next := l.Annotations[fabricv1.AnnotationGatewayNextPublicKey]; next != "" {
			if at, err := time.Parse(time.RFC3339Nano, l.Annotations[fabricv1.AnnotationGatewayKeySwitchTime]); err == nil {
				gw.NextPublicKey, gw.KeySwitchTime = next, &metav1.MicroTime{Time: at}
			}
		}
		if raw := l.Annotations[fabricv1.AnnotationGatewayPeerPorts]; raw != "" {
			var ports map[string]int32
			if err := json.Unmarshal([]byte(raw), &ports); err == nil && len(ports) > 0 {
				gw.PeerPorts = ports
			}
		}
		if raw := l.Annotations[fabricv1.AnnotationGatewayTunnels]; raw != "" {
			var tunnels []fabricv1.GatewayTunnel
			if err := json.Unmarshal([]byte(raw), &tunnels); err == nil && len(tunnels) > 0 {
				gw.Tunnels = tunnels
			}
		}
		if l.Spec.RenewTime != nil {
			renew := *l.Spec.RenewTime
			gw.LastRenewTime = &renew
			if left := leaseLeft(&l, now); left > 0 {
				gw.Healthy = true
				if next == 0 || left < next {
					next = left
				}
			}
		}
		out = append(out, gw)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, next
}

// leaseLeft is how long a Lease stays valid from now (≤ 0: expired or never renewed).
func leaseLeft(l *coordinationv1.Lease, now time.Time) time.Duration {
	if l.Spec.RenewTime == nil {
		return 0
	}
	d := defaultLeaseDuration
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return l.Spec.RenewTime.Add(d).Sub(now)
}

func leaseExpired(l *coordinationv1.Lease, now time.Time) bool { return leaseLeft(l, now) <= 0 }

// keepRenewTimes gives the gateways in fresh whose entry differs from the published one
// only by the renewal time the published renewal time: lastRenewTime is refreshed when an
// entry changes for another reason (health, endpoint, keys, tunnels), not at every renewal.
func keepRenewTimes(published, fresh []fabricv1.GatewayStatus) []fabricv1.GatewayStatus {
	byNode := map[string]fabricv1.GatewayStatus{}
	for _, g := range published {
		byNode[g.Node] = g
	}
	out := make([]fabricv1.GatewayStatus, len(fresh))
	for i, g := range fresh {
		out[i] = g
		old, ok := byNode[g.Node]
		if !ok || old.LastRenewTime == nil {
			continue
		}
		a, b := old, g
		a.LastRenewTime, b.LastRenewTime = nil, nil
		if equality.Semantic.DeepEqual(a, b) {
			out[i].LastRenewTime = old.LastRenewTime
		}
	}
	return out
}
