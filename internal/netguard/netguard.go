// Package netguard says which prefixes another party (a peer cluster, a BGP router) may
// never make this cluster route to it: a default route, and any range covering loopback,
// link-local (the cloud metadata address), multicast or reserved addresses.
package netguard

import "net/netip"

// Special are the ranges no party may claim.
var Special = []struct {
	Prefix netip.Prefix
	What   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "the unspecified network 0.0.0.0/8"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback 127.0.0.0/8"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local 169.254.0.0/16 (the cloud metadata address)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast 224.0.0.0/4"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved 240.0.0.0/4 (broadcast)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address ::"},
	{netip.MustParsePrefix("::1/128"), "loopback ::1"},
	{netip.MustParsePrefix("fe80::/10"), "link-local fe80::/10"},
	{netip.MustParsePrefix("ff00::/8"), "multicast ff00::/8"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "the cloud metadata address fd00:ec2::254"},
}

// Refuse says why p may never be claimed ("" if it may): a default route, or a range
// covering one of Special.
func Refuse(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "is a default route"
	}
	for _, s := range Special {
		if p.Overlaps(s.Prefix) {
			return "covers " + s.What
		}
	}
	return ""
}
