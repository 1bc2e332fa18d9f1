package gateway_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway"
	"github.com/weft-net/weft/gateway/tunnel"
)

func peer(id string, ready bool, gws ...fabricv1.GatewayStatus) fabricv1.ClusterPeer {
	status := metav1.ConditionFalse
	if ready {
		status = metav1.ConditionTrue
	}
	return fabricv1.ClusterPeer{Spec: fabricv1.ClusterPeerSpec{ClusterID: id},
		Status: fabricv1.ClusterPeerStatus{PodCIDRs: []string{"10.245.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}, Gateways: gws,
			Conditions: []metav1.Condition{{Type: fabricv1.ConditionAccepted, Status: status}}}}
}

func gw(node, endpoint string, healthy bool) fabricv1.GatewayStatus {
	return fabricv1.GatewayStatus{Node: node, Endpoint: endpoint, PublicKey: "key-" + node, Tunnel: fabricv1.TunnelWireGuard, Healthy: healthy}
}

func TestDesiredPeers(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	w1, w2, w3, w4 := gw("w1", "172.30.2.11:51820", true), gw("w2", "172.30.2.12:51820", true), gw("w3", "172.30.2.13:51820", false), gw("w4", "172.30.2.14:51820", true)
	w1.PeerPorts = map[string]int32{"here/gw-a": 51822, "here/gw-b": 51820}
	west := peer("west", true, w4, w2, w1, w3)
	west.Status.MaxActive = 2
	peers := []fabricv1.ClusterPeer{
		west,
		peer("north", false, gw("n1", "172.30.3.11:51820", true)), // not Ready: skipped
		peer("south", true, gw("s1", "172.30.4.11:51820", false)), // no healthy gateway: skipped
		peer("east", true, fabricv1.GatewayStatus{Node: "e1", Endpoint: "172.30.5.11:4800", Tunnel: fabricv1.TunnelVXLAN, Healthy: true}),
	}
	names := func(ps []tunnel.Peer) (active, standby []string) {
		for _, p := range ps {
			if p.Standby {
				standby = append(standby, p.Name)
			} else {
				active = append(active, p.Name)
			}
		}
		return active, standby
	}
	got := gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, true, peers, nil, now)
	active, standby := names(got)
	// Every healthy gateway of west (w3 is not) is a peer; the first two by address carry
	// traffic (west's maxActive), w4 stands by.
	if fmt.Sprint(active) != "[west/w1 west/w2]" || fmt.Sprint(standby) != "[west/w4]" {
		t.Fatalf("active %v, standby %v; want w1 and w2 active, w4 standing by", active, standby)
	}
	for _, p := range got {
		if len(p.Prefixes) != 2 || p.Prefixes[0] != netip.MustParsePrefix("10.245.0.0/16") || p.Prefixes[1] != netip.MustParsePrefix("10.97.0.0/16") {
			t.Errorf("%s: prefixes %v, want west's pod and service ranges", p.Name, p.Prefixes)
		}
	}
	// Ports: w1 published one for gw-a; w2 did not yet (the tunnel waits for it).
	if got[0].Endpoint != netip.MustParseAddrPort("172.30.2.11:51822") || got[1].Endpoint.Port() != 0 {
		t.Errorf("endpoints %v and %v, want w1's port for gw-a (51822) and none for w2", got[0].Endpoint, got[1].Endpoint)
	}
	if b := gateway.DesiredPeers("here/gw-b", fabricv1.TunnelWireGuard, true, peers, nil, now); b[0].Endpoint.Port() != 51820 {
		t.Errorf("gw-b reaches w1 at %v, want the port w1 published for it (51820)", b[0].Endpoint)
	}
	if one := gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, false, peers, nil, now); one[1].Endpoint != netip.MustParseAddrPort("172.30.2.12:51820") {
		t.Errorf("without per-peer ports, w2 is reached at %v, want its endpoint", one[1].Endpoint)
	}
	// A gateway whose Lease lapsed a minute ago (its API server slow or stopped) is still a
	// candidate: the probes decide. Past GatewayProbeGrace it is dropped.
	late := gw("l1", "172.30.6.11:51820", false)
	late.LastRenewTime = &metav1.MicroTime{Time: now.Add(-time.Minute)}
	latePeers := []fabricv1.ClusterPeer{peer("late", true, late)}
	if active, _ := names(gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, false, latePeers, nil, now)); fmt.Sprint(active) != "[late/l1]" {
		t.Errorf("a gateway renewed late: active %v, want it still used while it answers", active)
	}
	if silent := gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, false, latePeers, func(fabricv1.GatewayStatus) bool { return false }, now); len(silent) != 1 || !silent[0].Standby {
		t.Errorf("a gateway renewed late that does not answer: %+v, want it standing by", silent)
	}
	if gone := gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, false, latePeers, nil, now.Add(fabricv1.GatewayProbeGrace)); len(gone) != 0 {
		t.Errorf("a gateway whose Lease lapsed GatewayProbeGrace ago: %v, want it dropped", gone)
	}
	// A gateway the prober does not hear from stands by, and the next one takes its place.
	silentW1 := func(gw fabricv1.GatewayStatus) bool { return gw.Node != "w1" }
	if active, standby := names(gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, true, peers, silentW1, now)); fmt.Sprint(active) != "[west/w2 west/w4]" || fmt.Sprint(standby) != "[west/w1]" {
		t.Errorf("with w1 silent: active %v, standby %v", active, standby)
	}
	if active, _ := names(gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, true, peers, func(fabricv1.GatewayStatus) bool { return false }, now)); len(active) != 0 {
		t.Errorf("with every gateway silent, active: %v", active)
	}
	// No maxActive published: every answering gateway carries traffic.
	peers[0].Status.MaxActive = 0
	if active, _ := names(gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, true, peers, nil, now)); len(active) != 3 {
		t.Errorf("without maxActive, active: %v", active)
	}
	// A gateway rotating its key keeps the current key until PeerKeyLead before the switch
	// time, then the next.
	peers[0].Status.Gateways[1].NextPublicKey = "next-w2" // west lists w4, w2, w1, w3
	peers[0].Status.Gateways[1].KeySwitchTime = &metav1.MicroTime{Time: now.Add(time.Second)}
	keyOf := func(ps []tunnel.Peer, name string) string {
		for _, p := range ps {
			if p.Name == name {
				return p.PublicKey
			}
		}
		return ""
	}
	for _, c := range []struct {
		at   time.Time
		want string
	}{{now, "key-w2"}, {now.Add(time.Second - gateway.PeerKeyLead - time.Millisecond), "key-w2"},
		{now.Add(time.Second - gateway.PeerKeyLead), "next-w2"}, {now.Add(time.Hour), "next-w2"}} {
		if got := keyOf(gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, true, peers, nil, c.at), "west/w2"); got != c.want {
			t.Errorf("w2's key at switch%+v: %q, want %q", c.at.Sub(now.Add(time.Second)), got, c.want)
		}
	}
	if got := keyOf(gateway.DesiredPeers("here/gw-a", fabricv1.TunnelWireGuard, true, peers, nil, now.Add(time.Hour)), "west/w1"); got != "key-w1" {
		t.Errorf("w1 (not rotating) got key %q", got)
	}
	// VXLAN gateways see only the VXLAN peer.
	if vx := gateway.DesiredPeers("here/gw-a", fabricv1.TunnelVXLAN, false, peers, nil, now); len(vx) != 1 || vx[0].Name != "east/e1" || vx[0].Endpoint.Port() != 4800 {
		t.Errorf("vxlan peers: %+v", vx)
	}
}

func TestTunnelReport(t *testing.T) {
	handshake := time.Date(2026, 1, 1, 12, 0, 0, 700e6, time.UTC)
	applied := []tunnel.Peer{
		{Name: "c2/gw-y", Endpoint: netip.MustParseAddrPort("172.30.2.12:51821"), Standby: true},
		{Name: "c2/gw-x", Endpoint: netip.MustParseAddrPort("172.30.2.11:51820")},
		{Name: "c3/gw-z", Endpoint: netip.MustParseAddrPort("172.30.3.11:0")}, // waits for the peer's port
	}
	status := []tunnel.PeerStatus{
		{Name: "c2/gw-x", Device: "weft-wg1", LastHandshake: handshake},
		{Name: "c2/gw-y", Device: "weft-wg2"},
		{Name: "c9/gone", Device: "weft-wg9", LastHandshake: handshake}, // not applied: not reported
	}
	answering := func(gw fabricv1.GatewayStatus) bool { return gw.Endpoint == "172.30.2.11:51820" }
	got := gateway.TunnelReport(applied, status, answering)
	if len(got) != 3 {
		t.Fatalf("got %d tunnels, want the 3 applied: %+v", len(got), got)
	}
	x, y, z := got[0], got[1], got[2]
	if x.Peer != "c2/gw-x" || x.Device != "weft-wg1" || x.State != fabricv1.TunnelActive || !x.Answering ||
		x.Endpoint != "172.30.2.11:51820" || x.LastHandshakeTime == nil || !x.LastHandshakeTime.Time.Equal(handshake.Truncate(time.Second)) {
		t.Errorf("active tunnel: %+v", x)
	}
	if y.Peer != "c2/gw-y" || y.State != fabricv1.TunnelStandby || y.Answering || y.LastHandshakeTime != nil || y.Device != "weft-wg2" {
		t.Errorf("standby tunnel: %+v", y)
	}
	if z.Peer != "c3/gw-z" || z.Device != "" || z.State != fabricv1.TunnelActive {
		t.Errorf("tunnel without a device yet: %+v", z)
	}
}

// At rest a report keeps the handshake time it published: WireGuard's handshakes every two
// minutes are not news. The first one is, as is one after a key switch, or one long after.
func TestQuietReportKeepsRoutineHandshakes(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }
	tun := func(hs *metav1.Time) []fabricv1.GatewayTunnel {
		return []fabricv1.GatewayTunnel{{Peer: "c2/x", State: fabricv1.TunnelActive, Answering: true, LastHandshakeTime: hs}}
	}
	for _, c := range []struct {
		name             string
		published, fresh *metav1.Time
		switched         time.Time
		want             *metav1.Time
	}{
		{"the first handshake", nil, at(0), time.Time{}, at(0)},
		{"a routine rekey two minutes on", at(0), at(2 * time.Minute), time.Time{}, at(0)},
		{"one a refresh later", at(0), at(gateway.HandshakeRefresh), time.Time{}, at(gateway.HandshakeRefresh)},
		{"the first since this gateway switched keys", at(0), at(30 * time.Second), t0.Add(30 * time.Second), at(30 * time.Second)},
		{"one before the switch", at(0), at(20 * time.Second), t0.Add(30 * time.Second), at(0)},
		{"none any more", at(0), nil, time.Time{}, nil},
	} {
		got := gateway.QuietReport(tun(c.published), tun(c.fresh), c.switched)
		if g := got[0].LastHandshakeTime; (g == nil) != (c.want == nil) || g != nil && !g.Time.Equal(c.want.Time) {
			t.Errorf("%s: published handshake %v, want %v", c.name, g, c.want)
		}
	}
	// A state change goes through at once.
	fresh := tun(at(2 * time.Minute))
	fresh[0].Answering = false
	if got := gateway.QuietReport(tun(at(0)), fresh, time.Time{}); got[0].Answering || !got[0].LastHandshakeTime.Time.Equal(t0) {
		t.Errorf("a tunnel that stopped answering: %+v", got[0])
	}
}

func TestKeySwitchGrace(t *testing.T) {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	a, b := netip.MustParseAddr("172.30.2.11"), netip.MustParseAddr("172.30.2.13")
	peers := []fabricv1.ClusterPeer{{Status: fabricv1.ClusterPeerStatus{Gateways: []fabricv1.GatewayStatus{
		{Node: "n1", Endpoint: "172.30.2.11:51820", KeySwitchTime: &metav1.MicroTime{Time: at}},
		{Node: "n3", Endpoint: "172.30.2.13:51820"},
	}}}}
	before := map[netip.Addr]bool{a: true, b: true}
	for _, c := range []struct {
		name   string
		now    time.Time
		before map[netip.Addr]bool
		want   bool
	}{
		{"silent at the switch, answering before: kept", at, before, true},
		{"silent just before the switch (the peers switch first): kept", at.Add(-gateway.PeerKeyLead - time.Second), before, true},
		{"silent long after the switch: down", at.Add(3 * time.Second), before, false},
		{"silent long before the switch: down", at.Add(-5 * time.Second), before, false},
		{"never answered: not kept", at, map[netip.Addr]bool{b: true}, false},
	} {
		got := gateway.KeySwitchGrace(map[netip.Addr]bool{b: true}, c.before, peers, c.now)
		if got[a] != c.want || !got[b] {
			t.Errorf("%s: %v", c.name, got)
		}
	}
	// A gateway with no switch announced is never kept.
	if got := gateway.KeySwitchGrace(map[netip.Addr]bool{a: true}, before, peers, at); got[b] {
		t.Errorf("a silent gateway without a key switch was kept: %v", got)
	}
}

// A gateway answers its cluster's agents only while one of its tunnels is active (or it has
// none to carry); peer gateways always, since their probes through the tunnel are how a
// tunnel comes to be active on both ends.
func TestReadiness(t *testing.T) {
	active, standby := tunnel.Peer{Name: "west/w1"}, tunnel.Peer{Name: "west/w2", Standby: true}
	for _, c := range []struct {
		peers []tunnel.Peer
		want  bool
	}{{nil, true}, {[]tunnel.Peer{standby}, false}, {[]tunnel.Peer{standby, active}, true}} {
		if got := gateway.Ready(c.peers); got != c.want {
			t.Errorf("Ready(%v) = %v, want %v", c.peers, got, c.want)
		}
	}
	// A gateway that was ready stays so for a moment with no active tunnel (every peer
	// gateway silent at once for a few hundred milliseconds), not for longer; one that never
	// was is not.
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		activeAt time.Time
		want     bool
	}{{time.Time{}, false}, {now.Add(-100 * time.Millisecond), true}, {now.Add(-time.Second), false}} {
		if got := gateway.StillReady([]tunnel.Peer{standby}, c.activeAt, now); got != c.want {
			t.Errorf("StillReady(standby only, last active %v before) = %v, want %v", now.Sub(c.activeAt), got, c.want)
		}
	}
	peerGW, agent := netip.MustParseAddr("172.30.2.11"), netip.MustParseAddr("172.30.1.12")
	for _, c := range []struct {
		ready bool
		from  netip.Addr
		want  bool
	}{{false, peerGW, true}, {false, agent, false}, {true, agent, true}, {true, peerGW, true}} {
		if got := gateway.Answers(c.ready, []netip.Addr{peerGW}, c.from); got != c.want {
			t.Errorf("ready=%v: a probe from %s answered %v, want %v", c.ready, c.from, got, c.want)
		}
	}
}
