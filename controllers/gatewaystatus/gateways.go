package gatewaystatus

import (
	"maps"
	"slices"
	"sort"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// defaultLeaseDuration applies to a gateway Lease that states none.
const defaultLeaseDuration = 2 * time.Second

// gatewaysFromLeases turns gateway Leases (liveness) and the gateways' FabricGateways (what
// they announce, by node) into status entries, sorted by node, and says how soon the first
// healthy one expires (0: none healthy). A gateway without a FabricGateway yet is listed
// with its health only.
func gatewaysFromLeases(leases []coordinationv1.Lease, announced map[string]*fabricv1.FabricGateway, now time.Time) ([]fabricv1.GatewayStatus, time.Duration) {
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
		gw := fabricv1.GatewayStatus{Node: node}
		if fg := announced[node]; fg != nil {
			st := fg.Status
			gw.Endpoint, gw.PublicKey, gw.Tunnel = st.Endpoint, st.PublicKey, st.Tunnel
			if st.NextPublicKey != "" && st.KeySwitchTime != nil {
				gw.NextPublicKey, gw.KeySwitchTime = st.NextPublicKey, st.KeySwitchTime.DeepCopy()
			}
			if len(st.PeerPorts) > 0 {
				gw.PeerPorts = maps.Clone(st.PeerPorts)
			}
			if len(st.Tunnels) > 0 {
				gw.Tunnels = slices.Clone(st.Tunnels)
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

// withoutRetired drops the gateways that stopped renewing their Lease and whose node is gone
// or no longer selected for gateways (labels, the nodes' by name; selector, the
// ClusterNetwork's spec.gateways.nodeSelector or its default): a node taken out of the
// gateways is not a gateway that stopped. A stopped gateway on a node still selected stays,
// not healthy: that one is a failure.
func withoutRetired(gws []fabricv1.GatewayStatus, labels map[string]map[string]string, selector map[string]string) []fabricv1.GatewayStatus {
	if len(selector) == 0 {
		selector = map[string]string{fabricv1.LabelGateway: "true"}
	}
	var out []fabricv1.GatewayStatus
	for _, g := range gws {
		l, exists := labels[g.Node]
		selected := exists
		for k, v := range selector {
			if l[k] != v {
				selected = false
			}
		}
		if g.Healthy || selected {
			out = append(out, g)
		}
	}
	return out
}

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
