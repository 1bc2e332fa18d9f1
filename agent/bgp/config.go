package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Inputs are what one node's speaker configuration is computed from.
type Inputs struct {
	Spec *fabricv1.BGPSpec
	// Node is this node, NodeIP its InternalIP and Blocks its pod blocks.
	Node   *corev1.Node
	NodeIP netip.Addr
	Blocks []netip.Prefix
	// Nodes are the cluster's nodes (peers chosen by node selector) with their addresses.
	Nodes   []*corev1.Node
	NodeIPs map[string]netip.Addr
	// ServiceCIDRs, ServiceImportVIPs and LoadBalancerIPs are announced when the spec asks.
	ServiceCIDRs      []netip.Prefix
	ServiceImportVIPs []netip.Addr
	LoadBalancerIPs   []netip.Addr
	// Password reads a peer's password Secret.
	Password func(fabricv1.LocalSecretKeyRef) (string, error)
	// Restarting: a speaker ran on this node before (graceful restart's restart flag).
	Restarting bool
}

// ErrNotSelected says the node runs no speaker (spec.bgp.nodeSelector).
var ErrNotSelected = errors.New("this node is not selected to run a BGP speaker")

// Desired computes the node's speaker configuration. A peer whose password cannot be read
// is kept with its Error set (reported, not configured); a node that the selector leaves
// out gets ErrNotSelected.
func Desired(in Inputs) (Config, error) {
	spec := in.Spec
	if spec == nil {
		return Config{}, errors.New("spec.bgp is not set")
	}
	if len(spec.NodeSelector) > 0 && !labels.SelectorFromSet(spec.NodeSelector).Matches(labels.Set(in.Node.Labels)) {
		return Config{}, ErrNotSelected
	}
	cfg := Config{ASN: uint32(spec.ASN), ListenPort: spec.ListenPort, NextHop: in.NodeIP,
		GracefulRestart: spec.GracefulRestart.Enabled, RestartTime: uint32(spec.GracefulRestart.RestartTimeSeconds),
		Restarting: in.Restarting && spec.GracefulRestart.Enabled, Communities: append([]string(nil), spec.Communities...)}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = 179
	}
	if cfg.GracefulRestart && cfg.RestartTime == 0 {
		cfg.RestartTime = 120
	}
	switch spec.RouterIDSource {
	case "PodGateway":
		for _, b := range in.Blocks {
			if b.Addr().Is4() {
				cfg.RouterID = b.Masked().Addr().Next()
			}
		}
	default:
		if in.NodeIP.Is4() {
			cfg.RouterID = in.NodeIP
		}
	}
	if !cfg.RouterID.IsValid() {
		return Config{}, fmt.Errorf("no IPv4 router ID from %s (routerIDSource %q)", in.Node.Name, spec.RouterIDSource)
	}
	for _, p := range spec.Peers {
		base := Peer{Name: p.Name, ASN: uint32(p.ASN), Port: uint16(p.Port), Passive: p.Passive, MaxPrefixes: int(p.MaxPrefixes),
			HoldTime: uint64(p.HoldTimeSeconds), Keepalive: uint64(p.KeepaliveSeconds)}
		if base.Port == 0 {
			base.Port = 179
		}
		if p.BFD != nil {
			iv, mult := p.BFD.MinIntervalMilliseconds, p.BFD.Multiplier
			if iv == 0 {
				iv = 300
			}
			if mult == 0 {
				mult = 3
			}
			base.BFD = &BFD{Interval: time.Duration(iv) * time.Millisecond, Multiplier: uint32(mult)}
		}
		if p.PasswordSecretRef != nil {
			if in.Password == nil {
				base.Error = "no way to read the password Secret"
			} else if pw, err := in.Password(*p.PasswordSecretRef); err != nil {
				base.Error = err.Error()
			} else {
				base.Password = pw
			}
		}
		switch {
		case p.Address != "":
			a, err := netip.ParseAddr(p.Address)
			if err != nil {
				base.Error = fmt.Sprintf("address %q: %v", p.Address, err)
			}
			base.Address = a
			cfg.Peers = append(cfg.Peers, base)
		case p.NodeSelector != nil:
			sel, err := metav1.LabelSelectorAsSelector(p.NodeSelector)
			if err != nil {
				return Config{}, fmt.Errorf("peer %s: node selector: %w", p.Name, err)
			}
			for _, n := range in.Nodes {
				ip := in.NodeIPs[n.Name]
				if n.Name == in.Node.Name || !ip.IsValid() || !sel.Matches(labels.Set(n.Labels)) {
					continue
				}
				peer := base
				peer.Name, peer.Address = p.Name+"/"+n.Name, ip
				cfg.Peers = append(cfg.Peers, peer)
			}
		}
	}
	sort.Slice(cfg.Peers, func(i, j int) bool { return cfg.Peers[i].Address.Less(cfg.Peers[j].Address) })
	// What to announce, with a next hop of the prefix's family: IPv4 prefixes only while
	// the node's address is IPv4 (and IPv6 likewise).
	var prefixes []netip.Prefix
	if spec.Advertise.PodBlocks {
		prefixes = append(prefixes, in.Blocks...)
	}
	if spec.Advertise.ServiceCIDRs {
		prefixes = append(prefixes, in.ServiceCIDRs...)
	}
	if spec.Advertise.ServiceImportVIPs {
		for _, a := range in.ServiceImportVIPs {
			prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if spec.Advertise.LoadBalancerIPs {
		for _, a := range in.LoadBalancerIPs {
			prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		p = p.Masked()
		if seen[p] || p.Addr().Is4() != in.NodeIP.Is4() {
			continue
		}
		seen[p] = true
		cfg.Prefixes = append(cfg.Prefixes, p)
	}
	sort.Slice(cfg.Prefixes, func(i, j int) bool { return cfg.Prefixes[i].String() < cfg.Prefixes[j].String() })
	return cfg, nil
}
