package clusterpeer

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Per-peer limits on what a peer may advertise: what it says becomes tunnels, routes and
// probes on every node here, so one peer (hostile, or broken) must not be able to make that
// unbounded. Documented in docs/api.md.
const (
	// MaxPeerGateways is how many gateways a peer may advertise.
	MaxPeerGateways = 64
	// MaxPeerRanges is how many pod ranges, and how many service ranges, a peer may advertise.
	MaxPeerRanges = 16
	// MaxPeerPorts is how many per-peer ports one gateway may advertise.
	MaxPeerPorts = 1024
	// MaxPeerTunnels is how many tunnel states one gateway may advertise.
	MaxPeerTunnels = 1024
)

// checkAdvertisement says what is wrong with what a peer advertises, "" when nothing: too
// many gateways or ranges, ranges that are not CIDRs, gateways without a name, with an
// endpoint that is not a unicast address and port or that lies in this cluster's own pod or
// service ranges, or with keys that are not WireGuard keys.
func checkAdvertisement(info peerInfo, own []netip.Prefix) string {
	if n := len(info.Gateways); n > MaxPeerGateways {
		return fmt.Sprintf("it advertises %d gateways; at most %d are accepted", n, MaxPeerGateways)
	}
	for kind, cidrs := range map[string][]string{"pod": info.PodCIDRs, "service": info.ServiceCIDRs} {
		if len(cidrs) > MaxPeerRanges {
			return fmt.Sprintf("it advertises %d %s ranges; at most %d are accepted", len(cidrs), kind, MaxPeerRanges)
		}
		for _, c := range cidrs {
			if _, err := netip.ParsePrefix(c); err != nil {
				return fmt.Sprintf("its %s range %q is not a CIDR", kind, c)
			}
		}
	}
	seen := map[string]bool{}
	for i, gw := range info.Gateways {
		name := gw.Node
		if name == "" || len(name) > 253 {
			return fmt.Sprintf("its gateway #%d has no valid node name", i+1)
		}
		if seen[name] {
			return fmt.Sprintf("it advertises gateway %s twice", name)
		}
		seen[name] = true
		if gw.Endpoint != "" {
			ap, err := netip.ParseAddrPort(gw.Endpoint)
			switch {
			case err != nil:
				return fmt.Sprintf("gateway %s's endpoint %q is not an address and port", name, gw.Endpoint)
			case ap.Port() == 0 || !ap.Addr().Unmap().IsGlobalUnicast():
				return fmt.Sprintf("gateway %s's endpoint %s is not a unicast address and port", name, gw.Endpoint)
			}
			for _, p := range own {
				if p.Contains(ap.Addr().Unmap()) {
					return fmt.Sprintf("gateway %s's endpoint %s lies in this cluster's range %s", name, gw.Endpoint, p)
				}
			}
		}
		for what, key := range map[string]string{"public key": gw.PublicKey, "next public key": gw.NextPublicKey} {
			if key == "" {
				continue
			}
			if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 32 {
				return fmt.Sprintf("gateway %s's %s is not a WireGuard key", name, what)
			}
		}
		if n := len(gw.PeerPorts); n > MaxPeerPorts {
			return fmt.Sprintf("gateway %s advertises %d peer ports; at most %d are accepted", name, n, MaxPeerPorts)
		}
		for peer, port := range gw.PeerPorts {
			if port < 1 || port > 65535 {
				return fmt.Sprintf("gateway %s's port for %s is %d", name, peer, port)
			}
		}
		if n := len(gw.Tunnels); n > MaxPeerTunnels {
			return fmt.Sprintf("gateway %s advertises %d tunnels; at most %d are accepted", name, n, MaxPeerTunnels)
		}
	}
	return ""
}

// ownPrefixes are this cluster's pod and service ranges.
func ownPrefixes(cn *fabricv1.ClusterNetwork) []netip.Prefix {
	return fabricv1.CIDRPrefixes(append(slices.Clone(cn.Spec.PodCIDRs), cn.Spec.ServiceCIDRs...)...)
}
