// Package nft runs nftables scripts (the nft program) for the parts of weft that keep a
// table of their own on a node: the gateways' tunnel filter, the ebpf datapath's overlay
// filter.
package nft

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Path is the nft program: on PATH, or where Debian puts it (not on every container's PATH).
func Path() string {
	if p, err := exec.LookPath("nft"); err == nil {
		return p
	}
	return "/usr/sbin/nft"
}

// Apply runs script as one transaction (nft -f): all of it applies, or none.
func Apply(script string) error {
	cmd := exec.Command(Path(), "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// Set is the declaration of a set of type typ (ipv4_addr, ipv6_addr) with elems, for a
// table's body; interval sets take prefixes.
func Set(name, typ string, interval bool, elems []string) string {
	flags := ""
	if interval {
		flags = " flags interval;"
	}
	s := fmt.Sprintf("\tset %s {\n\t\ttype %s;%s\n", name, typ, flags)
	if len(elems) > 0 {
		s += "\t\telements = { " + strings.Join(elems, ", ") + " }\n"
	}
	return s + "\t}\n"
}

// ByFamily splits addrs into the elements of an ipv4_addr and an ipv6_addr set.
func ByFamily(addrs []netip.Addr) (v4, v6 []string) {
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a.String())
		} else {
			v6 = append(v6, a.String())
		}
	}
	return v4, v6
}
