package ovs

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/weft-net/weft/agent/datapath/ovs/openflow"
)

// TestNativeFlowModsMatchOVSCtl encodes every flow of a gateway-using node's table that has
// a native shape, as an add and as a delete, and has ovs-ofctl decode the bytes: each must
// read exactly as ovs-ofctl's own parse of the flow's text. The flows a failover changes
// (the multipath choice, the per-gateway tunnel flows, the drop without gateways) must all
// be native.
func TestNativeFlowModsMatchOVSCtl(t *testing.T) {
	ofctl, err := exec.LookPath("ovs-ofctl")
	if err != nil {
		t.Fatal("ovs-ofctl is not installed (make test-deps installs Open vSwitch)")
	}
	ports := map[string]uint32{"weft-gw0": 2, "weft-tun0": 1, "w01": 7}
	port := func(n string) (uint32, bool) { p, ok := ports[n]; return p, ok }
	numbered := func(flow string) string {
		for n, p := range ports {
			flow = regexp.MustCompile(`\b(in_port=|output:)`+regexp.QuoteMeta(n)+`\b`).ReplaceAllString(flow, "${1}"+strconv.Itoa(int(p)))
		}
		return flow
	}

	var flows []string
	s := state()
	s.peers = peerFlows{prefixes: []netip.Prefix{netip.MustParsePrefix("10.250.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")},
		gateways: []netip.Addr{netip.MustParseAddr("172.30.1.12"), netip.MustParseAddr("172.30.1.13")}}
	flows = append(flows, s.flows()...)
	s.peers.gateways = nil
	flows = append(flows, s.flows()...)
	s.peers.localGateway = true
	flows = append(flows, s.flows()...)

	var native []string
	var msgs []byte
	for _, f := range flows {
		for _, mod := range []string{"add " + f, "delete_strict " + flowKey(f)} {
			m, ok := nativeFlowMods([]string{mod}, port)
			if !ok {
				continue
			}
			native = append(native, mod)
			msgs = append(msgs, openflow.BundleMessages(1, 1, m)[1]...)
		}
	}
	for _, want := range []string{
		"add table=10,priority=60,ip,nw_dst=10.250.0.0/16,actions=multipath(symmetric_l3l4+udp,0,hrw,2,0,NXM_NX_REG1[0..15]),goto_table:30",
		"add table=30,priority=100,reg1=1,ip,actions=set_field:172.30.1.13->tun_dst,set_field:1->tun_id,set_field:0a:58:00:00:00:01->eth_dst,output:weft-tun0",
		"delete_strict table=30,priority=100,reg1=1,ip",
		"add table=10,priority=60,ip,nw_dst=10.250.0.0/16,actions=drop",
		"add table=10,priority=60,ip,nw_dst=10.250.0.0/16,actions=set_field:0a:58:0a:f4:01:01->eth_dst,output:weft-gw0",
	} {
		if !slices.Contains(native, want) {
			t.Errorf("not encoded natively: %s", want)
		}
	}
	// Shapes the encoder does not know are left to ovs-ofctl.
	for _, f := range []string{
		"table=0,priority=200,in_port=weft-tun0,ip,actions=ct(table=3,zone=4065)",
		"table=251,priority=100,reg4=0x1/0x1,actions=resubmit(,20)",
		"table=30,priority=100,reg1=1,ip,actions=output:weft-nosuchport",
	} {
		if _, ok := nativeFlowMods([]string{"add " + f}, port); ok {
			t.Errorf("encoded natively, but it has a shape the encoder does not know: %s", f)
		}
	}

	file := filepath.Join(t.TempDir(), "mods")
	if err := os.WriteFile(file, msgs, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ofctl, "ofp-parse", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ovs-ofctl ofp-parse: %v: %s", err, out)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "OFPT_FLOW_MOD") {
			got = append(got, l)
		}
	}
	if len(got) != len(native) {
		t.Fatalf("ovs-ofctl read %d flow mods of %d:\n%s", len(got), len(native), out)
	}
	xid := regexp.MustCompile(`\(xid=0x[0-9a-f]+\)`)
	for i, mod := range native {
		cmd, flow, _ := strings.Cut(mod, " ")
		text := numbered(flow)
		if cmd == "delete_strict" {
			text += ",actions=drop" // parse-flow reads adds only
		}
		ref, err := exec.Command(ofctl, "-O", "OpenFlow13", "parse-flow", text).CombinedOutput()
		if err != nil {
			t.Fatalf("ovs-ofctl parse-flow %s: %v: %s", flow, err, ref)
		}
		want := lastLine(string(ref))
		if cmd == "delete_strict" {
			want = strings.Replace(want, ": ADD ", ": DEL_STRICT ", 1)
		}
		if xid.ReplaceAllString(got[i], "") != xid.ReplaceAllString(want, "") {
			t.Errorf("%s\n encoded: %s\n ovs-ofctl: %s", mod, got[i], want)
		}
	}
	t.Logf("%d of %d flow mods encoded natively, each read back as ovs-ofctl reads its text", len(native), 2*len(flows))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
