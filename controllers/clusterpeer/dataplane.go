package clusterpeer

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Reasons of a ClusterPeer's Ready condition about the data plane.
const (
	// ReasonTunnelsUp: a tunnel from this cluster to a gateway of the peer answers health
	// probes (and, for WireGuard, has handshaken): traffic can flow.
	ReasonTunnelsUp = "TunnelsUp"
	// ReasonAwaitingTunnels: the tunnels to the peer are being set up (ports not learnt, no
	// handshake, no answer yet); the message says what is awaited.
	ReasonAwaitingTunnels = "AwaitingTunnels"
	// ReasonAwaitingGateways: this cluster has gateway nodes, but none renews its Lease.
	ReasonAwaitingGateways = "AwaitingGateways"
	// ReasonNoGateways: this cluster or the peer has no gateway node at all.
	ReasonNoGateways = "NoGateways"
	// ReasonTunnelMismatch: the two clusters' gateways use different tunnel drivers.
	ReasonTunnelMismatch = "TunnelMismatch"
	// ReasonAwaitingPeerView: this cluster's ranges overlap the peer's, and the peer has not
	// published how it sees them yet: what its gateways would send here, and what this
	// cluster's would send there, would carry addresses the other side cannot tell apart.
	ReasonAwaitingPeerView = "AwaitingPeerView"
)

// unseen are this cluster's ranges that overlap one of the peer's and that the peer does not
// say how it sees (status.seenAs): until it does, traffic between the overlapping ranges
// cannot be translated.
func unseen(own *fabricv1.ClusterNetwork, p *fabricv1.ClusterPeer) []string {
	var theirs []netip.Prefix
	for _, m := range p.Status.Ranges() {
		theirs = append(theirs, m.Remote)
	}
	var out []string
	for _, o := range ownPrefixes(own) {
		seen := false
		for _, a := range p.Status.SeenAs {
			if from, _, ok := a.Prefixes(); ok && from == o {
				seen = true
			}
		}
		for _, t := range theirs {
			if !seen && t.Overlaps(o) {
				out = append(out, o.String())
				break
			}
		}
	}
	return out
}

// dataPlaneState is what Ready says of the paths to a peer.
type dataPlaneState struct {
	up      bool
	stalled bool // waiting cannot help: a user must change something
	reason  string
	message string
	// tunnelsUp of tunnels count this cluster's live gateways' tunnels to the peer's
	// gateways, and those of them that carry traffic (answer probes; handshaken).
	tunnelsUp, tunnels int
}

// dataPlane judges, from this cluster's side, whether traffic can flow to the peer: what its
// gateways report of their tunnels to the peer's gateways (own.status.gateways, written by
// the gateways every few seconds and at once when a probe result changes), against what the
// peer advertises. Only gateways renewing their Lease count: a dead gateway's last report
// says nothing of now.
func dataPlane(own *fabricv1.ClusterNetwork, p *fabricv1.ClusterPeer) dataPlaneState {
	id := p.Spec.ClusterID
	tun := own.Spec.Gateways.Tunnel
	if tun == "" {
		tun = fabricv1.TunnelWireGuard
	}
	if len(own.Status.Gateways) == 0 {
		return dataPlaneState{stalled: true, reason: ReasonNoGateways,
			message: "this cluster has no gateway: label a node fabric.weft.dev/gateway=true"}
	}
	if len(p.Status.Gateways) == 0 {
		return dataPlaneState{stalled: true, reason: ReasonNoGateways,
			message: fmt.Sprintf("peer %s advertises no gateway: label a node of it fabric.weft.dev/gateway=true", id)}
	}
	theirs := map[fabricv1.TunnelType]bool{}
	for _, g := range p.Status.Gateways {
		theirs[g.Tunnel] = true
	}
	if !theirs[tun] {
		return dataPlaneState{stalled: true, reason: ReasonTunnelMismatch,
			message: fmt.Sprintf("this cluster's gateways use the %s tunnel, peer %s's use %s: set spec.gateways.tunnel of both ClusterNetworks to the same driver",
				tun, id, joinTunnels(theirs))}
	}
	handshakes := tun == fabricv1.TunnelWireGuard
	var healthy, total, up, noPort, noHandshake, silent int
	for _, g := range own.Status.Gateways {
		if !g.Healthy {
			continue
		}
		healthy++
		for _, t := range g.Tunnels {
			if !strings.HasPrefix(t.Peer, id+"/") {
				continue
			}
			total++
			ep, err := netip.ParseAddrPort(t.Endpoint)
			switch {
			case t.Answering && (!handshakes || t.LastHandshakeTime != nil):
				up++
			case err != nil || ep.Port() == 0:
				noPort++
			case handshakes && t.LastHandshakeTime == nil:
				noHandshake++
			default:
				silent++
			}
		}
	}
	switch {
	case healthy == 0:
		return dataPlaneState{reason: ReasonAwaitingGateways,
			message: fmt.Sprintf("none of this cluster's %d gateways renews its Lease", len(own.Status.Gateways))}
	case up > 0:
		return dataPlaneState{up: true, reason: ReasonTunnelsUp, tunnelsUp: up, tunnels: total,
			message: fmt.Sprintf("%d of %d %s tunnels to peer %s's gateways answer health probes", up, total, tun, id)}
	case total == 0:
		return dataPlaneState{reason: ReasonAwaitingTunnels,
			message: fmt.Sprintf("this cluster's gateways report no tunnel to peer %s yet", id)}
	}
	var what []string
	if noPort > 0 {
		what = append(what, fmt.Sprintf("%d wait for the port the peer's gateway listens on for them", noPort))
	}
	if noHandshake > 0 {
		what = append(what, fmt.Sprintf("%d have not handshaken (keys or the underlay between the gateways)", noHandshake))
	}
	if silent > 0 {
		what = append(what, fmt.Sprintf("%d get no answer to health probes", silent))
	}
	return dataPlaneState{reason: ReasonAwaitingTunnels, tunnels: total,
		message: fmt.Sprintf("no tunnel to peer %s carries traffic yet: of %d, %s", id, total, strings.Join(what, ", "))}
}

func joinTunnels(set map[fabricv1.TunnelType]bool) string {
	var out []string
	for t := range set {
		if t == "" {
			t = "an unknown driver"
		}
		out = append(out, string(t))
	}
	sort.Strings(out)
	return strings.Join(out, " and ")
}

// dataPlaneDigest is what of a ClusterNetwork's status dataPlane reads: the controller
// looks at the peers again only when it changes.
func dataPlaneDigest(cn *fabricv1.ClusterNetwork) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|", cn.Spec.Gateways.Tunnel)
	for _, g := range cn.Status.Gateways {
		fmt.Fprintf(&b, "%s:%t[", g.Node, g.Healthy)
		for _, t := range g.Tunnels {
			fmt.Fprintf(&b, "%s %s %t %t,", t.Peer, t.Endpoint, t.Answering, t.LastHandshakeTime != nil)
		}
		b.WriteString("]")
	}
	return b.String()
}
