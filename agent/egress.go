package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/nft"
)

// egressTable is the nftables table that gives pods' traffic leaving the cluster its node's
// address. It lives in the node's kernel: it keeps working while the agent or an API server
// is away, and only the agent's next change (or uninstall) replaces it.
const egressTable = "weft-egress"

// egressNAT keeps the node's masquerade for pods' traffic leaving the cluster
// (spec.egress). Both datapaths hand such traffic to the node's kernel (ovs through its
// gateway port, ebpf by passing it up), so one nftables table serves both.
type egressNAT struct {
	a       *agentState
	applied string // the script last applied: an unchanged one is not applied again
}

func (e *egressNAT) start(ctx context.Context, f *fabric) error {
	changed := make(chan struct{}, 1)
	poke(changed)
	if err := f.watch(ctx, func() { poke(changed) }, &fabricv1.ClusterNetwork{}, &fabricv1.ClusterPeer{}); err != nil {
		return err
	}
	f.spawn(func() {
		var retry <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-retry:
			}
			retry = nil
			if err := e.sync(ctx, f); err != nil {
				e.a.log.Error(err, "masquerading pods' traffic leaving the cluster; retrying")
				retry = time.After(time.Second)
			}
		}
	})
	return nil
}

func (e *egressNAT) sync(ctx context.Context, f *fabric) error {
	cn := &fabricv1.ClusterNetwork{}
	if err := f.cache.Get(ctx, client.ObjectKey{Name: fabricv1.ClusterNetworkName}, cn); err != nil {
		return err
	}
	peers := &fabricv1.ClusterPeerList{}
	if err := f.cache.List(ctx, peers); err != nil {
		return err
	}
	script := egressRules(cn, peers.Items)
	if script == e.applied {
		return nil
	}
	if err := nft.Apply(script); err != nil {
		return err
	}
	e.applied = script
	e.a.log.Info("pods' traffic leaving the cluster", "masquerade", cn.Spec.Egress.MasqueradeEnabled(), "exceptCIDRs", cn.Spec.Egress.ExceptCIDRs)
	return nil
}

// egressRules is the script that makes the node's egress table what cn and peers say: pods'
// IPv4 traffic to anywhere outside the fabric leaves with the node's address. The fabric is
// this cluster's pod and Service ranges, every peer's ranges (advertised and as seen here:
// the aliases in use, not the whole alias pool) and spec.egress.exceptCIDRs. Connections
// the kernel already rewrote the destination of (a Service's backend, a gateway's
// translation) are left to whoever did. With masquerade off, the table is removed.
func egressRules(cn *fabricv1.ClusterNetwork, peers []fabricv1.ClusterPeer) string {
	podCIDRs := fabricv1.CIDRPrefixes(cn.Spec.PodCIDRs...)
	pods := v4Prefixes(podCIDRs)
	if !cn.Spec.Egress.MasqueradeEnabled() || len(pods) == 0 {
		return egressReset
	}
	fabric := slices.Concat(podCIDRs, fabricv1.CIDRPrefixes(cn.Spec.ServiceCIDRs...), fabricv1.CIDRPrefixes(cn.Spec.Egress.ExceptCIDRs...))
	for i := range peers {
		for _, m := range peers[i].Status.Ranges() {
			fabric = append(fabric, m.Remote, m.Local)
		}
	}
	return egressReset + fmt.Sprintf(`table ip %s {
%s%s	chain postrouting {
		type nat hook postrouting priority srcnat + 10; policy accept;
		ip saddr != @pods return
		ip daddr @fabric return
		ct status dnat return comment "a Service's backend or a gateway's translation: rewritten already"
		counter masquerade comment "pods' traffic leaving the cluster: the node's address"
	}
}
`, egressTable, nft.Set("pods", "ipv4_addr", true, pods), nft.Set("fabric", "ipv4_addr", true, v4Prefixes(fabric)))
}

// v4Prefixes are the IPv4 prefixes of ps as nft set elements, sorted, without duplicates
// or prefixes inside another (an interval set refuses overlapping elements).
func v4Prefixes(ps []netip.Prefix) []string {
	var v4 []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && p.Addr().Unmap().Is4() {
			v4 = append(v4, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
		}
	}
	// Widest first, so that a prefix is checked against every wider one kept before it.
	slices.SortFunc(v4, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var kept []netip.Prefix
	for _, p := range v4 {
		if !slices.ContainsFunc(kept, func(k netip.Prefix) bool { return k.Contains(p.Addr()) }) {
			kept = append(kept, p)
		}
	}
	slices.SortFunc(kept, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	out := make([]string, len(kept))
	for i, p := range kept {
		out[i] = p.String()
	}
	return out
}

// egressReset removes the egress table (declaring it first, so that a missing one is no
// error): the start of every script, and the whole of one with masquerade off.
var egressReset = fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", egressTable)

// removeEgress removes the node's egress table (uninstall).
func removeEgress() error { return nft.Apply(egressReset) }
