package ebpf

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/weft-net/weft/internal/nft"
)

// overlayTable is the nftables table that keeps the VXLAN port to the cluster's nodes.
const overlayTable = "weft-overlay"

// overlayRules replaces the overlay filter: the kernel's VXLAN device takes packets from
// anyone who can reach its port, and would hand their inner packets to the pods; only the
// other nodes' addresses may send to it. What else arrives there is dropped and counted
// (nft list table inet weft-overlay). One nft transaction: never half applied.
func overlayRules(nodes []netip.Addr) string {
	v4, v6 := nft.ByFamily(nodes)
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
%[2]s%[3]s	chain input {
		type filter hook input priority filter - 1; policy accept;
		meta nfproto ipv4 udp dport %[4]d ip saddr != @nodes4 counter drop comment "VXLAN from no node of the cluster"
		meta nfproto ipv6 udp dport %[4]d ip6 saddr != @nodes6 drop
	}
}
`, overlayTable, nft.Set("nodes4", "ipv4_addr", false, v4), nft.Set("nodes6", "ipv6_addr", false, v6), vxlanPort)
}

// syncOverlayFilter lets the remote nodes, and only them, reach the VXLAN port, when that
// changed.
func (d *Driver) syncOverlayFilter() error {
	var nodes []netip.Addr
	for _, r := range d.remotes {
		nodes = append(nodes, r.IP)
	}
	slices.SortFunc(nodes, netip.Addr.Compare)
	nodes = slices.Compact(nodes)
	if d.overlayNodes != nil && slices.Equal(nodes, d.overlayNodes) {
		return nil
	}
	if err := nft.Apply(overlayRules(nodes)); err != nil {
		return fmt.Errorf("nft (the VXLAN port kept to the cluster's nodes): %w", err)
	}
	d.overlayNodes = append([]netip.Addr{}, nodes...)
	return nil
}

// removeOverlayFilter deletes the table (uninstall).
func removeOverlayFilter() error {
	out, err := exec.Command(nft.Path(), "delete", "table", "inet", overlayTable).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("nft delete table inet %s: %w: %s", overlayTable, err, out)
	}
	return nil
}
