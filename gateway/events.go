package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Event reasons the gateway records on a ClusterPeer when one of the peer's gateways stops
// or resumes answering its health probes (a failover, seen from this side).
const (
	ReasonPeerGatewayDown = "PeerGatewayDown"
	ReasonPeerGatewayUp   = "PeerGatewayUp"
)

// HealthTransition is one peer gateway changing health.
type HealthTransition struct {
	Peer    *fabricv1.ClusterPeer
	Gateway fabricv1.GatewayStatus
	Up      bool
}

// HealthTransitions compares what the prober answers now with what it answered before (by
// address) and gives each peer gateway that went down or came back. A gateway that has never
// answered gives nothing (a new gateway, or this one just started): before holds only
// gateways seen up — true while up, false once down — and is updated to now.
func HealthTransitions(peers []fabricv1.ClusterPeer, before map[netip.Addr]bool, now map[netip.Addr]bool) []HealthTransition {
	var out []HealthTransition
	seen := map[netip.Addr]bool{}
	for i := range peers {
		for _, gw := range peers[i].Status.Gateways {
			ep, err := netip.ParseAddrPort(gw.Endpoint)
			if err != nil || seen[ep.Addr()] {
				continue
			}
			seen[ep.Addr()] = true
			was, known := before[ep.Addr()]
			up := now[ep.Addr()]
			if known && was != up {
				out = append(out, HealthTransition{Peer: &peers[i], Gateway: gw, Up: up})
			}
			if known || up {
				before[ep.Addr()] = up
			}
		}
	}
	for a := range before {
		if !seen[a] {
			delete(before, a)
		}
	}
	return out
}

// healthEvent is the Event recording t, from node. The API server keeps events about
// cluster-scoped objects such as a ClusterPeer in the default namespace.
func healthEvent(t HealthTransition, node string, now time.Time) *corev1.Event {
	typ, reason := corev1.EventTypeWarning, ReasonPeerGatewayDown
	msg := fmt.Sprintf("peer gateway %s (%s) stopped answering health probes from %s; its flows move to the peer's other gateways",
		fabricv1.GatewayPeerName(t.Peer.Spec.ClusterID, t.Gateway.Node), t.Gateway.Endpoint, node)
	if t.Up {
		typ, reason = corev1.EventTypeNormal, ReasonPeerGatewayUp
		msg = fmt.Sprintf("peer gateway %s (%s) answers health probes from %s again and takes its share of the flows",
			fabricv1.GatewayPeerName(t.Peer.Spec.ClusterID, t.Gateway.Node), t.Gateway.Endpoint, node)
	}
	ts := metav1.NewTime(now)
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: t.Peer.Name + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{APIVersion: fabricv1.GroupVersion.String(), Kind: "ClusterPeer",
			Name: t.Peer.Name, UID: t.Peer.UID, ResourceVersion: t.Peer.ResourceVersion},
		Type: typ, Reason: reason, Message: msg,
		Source:         corev1.EventSource{Component: "weft-gateway", Host: node},
		FirstTimestamp: ts, LastTimestamp: ts, Count: 1,
		ReportingController: "fabric.weft.dev/weft-gateway", ReportingInstance: node,
	}
}

// recordHealth records the transitions since the last call as Events, in the background:
// failover never waits for the API server. A transition is also reported in the
// FabricGateway's tunnels at the next publishing round, not with the next periodic report:
// the ClusterPeer's Ready follows it.
func (g *gw) recordHealth(ctx context.Context, now map[netip.Addr]bool) {
	for _, t := range HealthTransitions(g.peers, g.health, now) {
		g.tunnelsAt = time.Time{}
		ev := healthEvent(t, g.cfg.NodeName, time.Now())
		g.log.Info("peer gateway health", "peer", t.Peer.Name, "gateway", t.Gateway.Node, "up", t.Up)
		g.metrics.transition(t.Peer.Name, t.Gateway.Node, t.Up)
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := g.c.Create(ctx, ev); err != nil {
				g.log.Error(err, "recording event", "reason", ev.Reason)
			}
		}()
	}
}
