package ovs

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/weft-net/weft/agent/datapath/ovs/openflow"
)

// Flow mods of a few shapes — what a gateway failing over, or coming back, changes — are
// sent through the driver's own OpenFlow connection: spawning ovs-ofctl costs 15–30 ms idle
// and up to half a second on a loaded node, on the path that decides how long a failover
// takes. Anything else still goes through ovs-ofctl.

// nativeFlowMods encodes mods (flowDiff's "add FLOW" and "delete_strict KEY" lines) for the
// OpenFlow connection, looking port names up with port. It reports false if any of them
// has a shape it does not know.
func nativeFlowMods(mods []string, port func(name string) (uint32, bool)) ([]openflow.FlowMod, bool) {
	out := make([]openflow.FlowMod, 0, len(mods))
	for _, m := range mods {
		cmd, flow, _ := strings.Cut(m, " ")
		var fm openflow.FlowMod
		switch cmd {
		case "add":
			fm.Command = openflow.FlowAdd
		case "delete_strict":
			fm.Command = openflow.FlowDeleteStrict
		default:
			return nil, false
		}
		match, actions, hasActions := strings.Cut(flow, ",actions=")
		if hasActions == (fm.Command == openflow.FlowDeleteStrict) || !parseMatch(&fm, match, port) {
			return nil, false
		}
		if hasActions && !parseActions(&fm, actions, port) {
			return nil, false
		}
		out = append(out, fm)
	}
	return out, true
}

// parseMatch reads table, priority and the match fields weft's gateway flows use.
func parseMatch(fm *openflow.FlowMod, s string, port func(string) (uint32, bool)) bool {
	var ip, ipField bool
	var fields []openflow.Field
	for _, tok := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(tok, "=")
		switch k {
		case "table":
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return false
			}
			fm.Table = uint8(n)
		case "priority":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return false
			}
			fm.Priority = uint16(n)
		case "ip":
			ip = v == "" && !strings.Contains(tok, "=")
		case "in_port":
			p, ok := port(v)
			if !ok {
				return false
			}
			fields = append(fields, openflow.InPort(p))
		case "reg1":
			n, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				return false
			}
			fields = append(fields, openflow.Reg(1, uint32(n)))
		case "nw_src", "nw_dst":
			p, ok := ipv4Prefix(v)
			if !ok {
				return false
			}
			ipField = true
			if k == "nw_src" {
				fields = append(fields, openflow.IPv4Src(p))
			} else {
				fields = append(fields, openflow.IPv4Dst(p))
			}
		default:
			return false
		}
	}
	if ip {
		// The switch wants a field's prerequisites first: in_port, registers, then IP.
		fm.Match = append(fm.Match, openflow.EthType(0x0800))
	} else if ipField {
		return false
	}
	fm.Match = append(fm.Match, fields...)
	return true
}

func ipv4Prefix(v string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(v); err == nil && p.Addr().Is4() {
		return p, true
	}
	if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
		return netip.PrefixFrom(a, 32), true
	}
	return netip.Prefix{}, false
}

// parseActions reads the actions weft's gateway flows use.
func parseActions(fm *openflow.FlowMod, s string, port func(string) (uint32, bool)) bool {
	if s == "drop" {
		return true
	}
	for _, a := range splitActions(s) {
		switch {
		case strings.HasPrefix(a, "set_field:"):
			v, field, ok := strings.Cut(strings.TrimPrefix(a, "set_field:"), "->")
			if !ok {
				return false
			}
			f, ok := setField(field, v)
			if !ok {
				return false
			}
			fm.Actions = append(fm.Actions, openflow.SetField(f))
		case strings.HasPrefix(a, "output:"):
			p, ok := port(strings.TrimPrefix(a, "output:"))
			if !ok {
				return false
			}
			fm.Actions = append(fm.Actions, openflow.Output(p))
		case strings.HasPrefix(a, "goto_table:"):
			n, err := strconv.ParseUint(strings.TrimPrefix(a, "goto_table:"), 10, 8)
			if err != nil || n == 0 {
				return false
			}
			fm.GotoTable = uint8(n)
		case strings.HasPrefix(a, "multipath(") && strings.HasSuffix(a, ")"):
			mp, ok := multipath(strings.TrimSuffix(strings.TrimPrefix(a, "multipath("), ")"))
			if !ok {
				return false
			}
			fm.Actions = append(fm.Actions, mp)
		default:
			return false
		}
	}
	return true
}

// splitActions splits an action list at the commas outside parentheses.
func splitActions(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func setField(field, v string) (openflow.Field, bool) {
	switch field {
	case "tun_dst":
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return openflow.Field{}, false
		}
		return openflow.TunIPv4Dst(a), true
	case "tun_id":
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			return openflow.Field{}, false
		}
		return openflow.TunnelID(n), true
	case "eth_dst", "eth_src":
		mac, err := net.ParseMAC(v)
		if err != nil || len(mac) != 6 {
			return openflow.Field{}, false
		}
		if field == "eth_src" {
			return openflow.EthSrc(mac), true
		}
		return openflow.EthDst(mac), true
	}
	return openflow.Field{}, false
}

// multipath reads "symmetric_l3l4+udp,BASIS,hrw,N,ARG,NXM_NX_REGr[a..b]", the one shape
// the forwarding table uses.
func multipath(s string) (openflow.Action, bool) {
	p := strings.Split(s, ",")
	if len(p) != 6 || p[0] != "symmetric_l3l4+udp" || p[2] != "hrw" {
		return nil, false
	}
	basis, err1 := strconv.ParseUint(p[1], 10, 16)
	n, err2 := strconv.Atoi(p[3])
	arg, err3 := strconv.ParseUint(p[4], 10, 32)
	var reg, lo, hi int
	if _, err := fmt.Sscanf(p[5], "NXM_NX_REG%d[%d..%d]", &reg, &lo, &hi); err1 != nil || err2 != nil || err3 != nil || err != nil ||
		n < 1 || n > 1<<16 || hi < lo || hi-lo >= 32 || 1<<(hi-lo+1) < n {
		return nil, false
	}
	const symmetricL3L4UDP, hrw = 3, 2 // NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, NX_MP_ALG_HRW
	return openflow.Multipath(symmetricL3L4UDP, uint16(basis), hrw, n, uint32(arg), reg, lo, hi-lo+1), true
}
