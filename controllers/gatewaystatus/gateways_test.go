package gatewaystatus

import (
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestGatewaysFromLeases(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	announced := map[string]*fabricv1.FabricGateway{}
	lease := func(node string, renewedAgo time.Duration, seconds int32) coordinationv1.Lease {
		l := coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: fabricv1.GatewayLeaseName(node)},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node)}}
		if node != "gw-d" { // gw-d has not announced itself yet
			announced[node] = &fabricv1.FabricGateway{ObjectMeta: metav1.ObjectMeta{Name: node}, Status: fabricv1.FabricGatewayStatus{
				Endpoint: node + ":51820", PublicKey: "key-" + node, Tunnel: fabricv1.TunnelWireGuard}}
		}
		if renewedAgo >= 0 {
			l.Spec.RenewTime = &metav1.MicroTime{Time: now.Add(-renewedAgo)}
		}
		if seconds > 0 {
			l.Spec.LeaseDurationSeconds = ptr.To(seconds)
		}
		return l
	}
	anonymous := lease("", 0, 2)
	withPorts := lease("gw-a", 500*time.Millisecond, 2)
	a := &announced["gw-a"].Status
	a.PeerPorts = map[string]int32{"c2/gw-x": 51820, "c2/gw-y": 51821}
	a.Tunnels = []fabricv1.GatewayTunnel{
		{Peer: "c2/gw-x", Device: "weft-wg1", Endpoint: "10.0.0.1:51820", State: fabricv1.TunnelActive, Answering: true,
			LastHandshakeTime: &metav1.Time{Time: now.Add(-30 * time.Second)}},
		{Peer: "c2/gw-y", State: fabricv1.TunnelStandby}}
	a.NextPublicKey, a.KeySwitchTime = "next-gw-a", &metav1.MicroTime{Time: now.Add(15250 * time.Millisecond)}
	badPorts := lease("gw-b", 0, 0)
	announced["gw-b"].Status.NextPublicKey = "next-gw-b" // no time: no rotation
	gws, next := gatewaysFromLeases([]coordinationv1.Lease{
		lease("gw-c", 5*time.Second, 2), // expired
		withPorts,                       // 1.5 s left
		badPorts,                        // default 2 s left
		lease("gw-d", -1, 2),            // never renewed
		anonymous,                       // no holder: ignored
	}, announced, now)
	if len(gws) != 4 {
		t.Fatalf("got %d gateways, want 4: %+v", len(gws), gws)
	}
	want := []struct {
		node    string
		healthy bool
	}{{"gw-a", true}, {"gw-b", true}, {"gw-c", false}, {"gw-d", false}}
	for i, w := range want {
		if gws[i].Node != w.node || gws[i].Healthy != w.healthy {
			t.Errorf("gateway %d = %s healthy=%v, want %s healthy=%v", i, gws[i].Node, gws[i].Healthy, w.node, w.healthy)
		}
	}
	if gws[0].Endpoint != "gw-a:51820" || gws[0].PublicKey != "key-gw-a" || gws[0].Tunnel != fabricv1.TunnelWireGuard {
		t.Errorf("announcement not carried: %+v", gws[0])
	}
	if len(gws[0].PeerPorts) != 2 || gws[0].PeerPorts["c2/gw-y"] != 51821 || gws[1].PeerPorts != nil {
		t.Errorf("peer ports: %v and %v, want gw-a's two and none for gw-b", gws[0].PeerPorts, gws[1].PeerPorts)
	}
	if gws[3].Node != "gw-d" || gws[3].Endpoint != "" || gws[3].PublicKey != "" {
		t.Errorf("gw-d has not announced itself, yet: %+v", gws[3])
	}
	if tun := gws[0].Tunnels; len(tun) != 2 || tun[0].Peer != "c2/gw-x" || tun[0].State != fabricv1.TunnelActive || !tun[0].Answering ||
		tun[0].LastHandshakeTime == nil || !tun[0].LastHandshakeTime.Equal(&metav1.Time{Time: now.Add(-30 * time.Second)}) ||
		tun[1].State != fabricv1.TunnelStandby || tun[1].LastHandshakeTime != nil {
		t.Errorf("tunnels of gw-a not carried: %+v", tun)
	}
	if gws[0].NextPublicKey != "next-gw-a" || gws[0].KeySwitchTime == nil || !gws[0].KeySwitchTime.Time.Equal(now.Add(15250*time.Millisecond)) {
		t.Errorf("rotation of gw-a: next key %q at %v, want next-gw-a at 12:00:15.25", gws[0].NextPublicKey, gws[0].KeySwitchTime)
	}
	if gws[1].NextPublicKey != "" || gws[1].KeySwitchTime != nil {
		t.Errorf("rotation of gw-b without a switch time: %q at %v, want none", gws[1].NextPublicKey, gws[1].KeySwitchTime)
	}
	if gws[1].Tunnels != nil {
		t.Errorf("tunnels of gw-b: %+v, want none", gws[1].Tunnels)
	}
	if next != 1500*time.Millisecond {
		t.Errorf("next check in %s, want 1.5s (when gw-a's Lease expires)", next)
	}
	if _, next := gatewaysFromLeases([]coordinationv1.Lease{lease("gw-c", 5*time.Second, 2)}, announced, now); next != 0 {
		t.Errorf("no healthy gateway, yet a check in %s", next)
	}
}

// A renewal alone leaves a published entry as it was; any other change refreshes it.
func TestKeepRenewTimes(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.MicroTime { return &metav1.MicroTime{Time: t0.Add(d)} }
	published := []fabricv1.GatewayStatus{
		{Node: "a", Endpoint: "10.0.0.1:51820", Healthy: true, LastRenewTime: at(0)},
		{Node: "b", Endpoint: "10.0.0.2:51820", Healthy: true, LastRenewTime: at(0)},
	}
	fresh := []fabricv1.GatewayStatus{
		{Node: "a", Endpoint: "10.0.0.1:51820", Healthy: true, LastRenewTime: at(time.Second)},  // renewed only
		{Node: "b", Endpoint: "10.0.0.2:51820", Healthy: false, LastRenewTime: at(time.Second)}, // health changed
		{Node: "c", Endpoint: "10.0.0.3:51820", Healthy: true, LastRenewTime: at(time.Second)},  // new
	}
	got := keepRenewTimes(published, fresh)
	for i, want := range []*metav1.MicroTime{at(0), at(time.Second), at(time.Second)} {
		if !got[i].LastRenewTime.Time.Equal(want.Time) {
			t.Errorf("%s: lastRenewTime %v, want %v", got[i].Node, got[i].LastRenewTime.Time, want.Time)
		}
	}
}

func TestWithoutRetired(t *testing.T) {
	gws := []fabricv1.GatewayStatus{
		{Node: "up", Healthy: true},
		{Node: "stopped"},                          // still a gateway node: a failure, kept
		{Node: "unlabelled"},                       // taken out of the gateways: dropped
		{Node: "unlabelled-but-up", Healthy: true}, // still renewing: kept until it stops
		{Node: "gone"},                             // node deleted: dropped
	}
	labels := map[string]map[string]string{
		"up": {fabricv1.LabelGateway: "true"}, "stopped": {fabricv1.LabelGateway: "true"},
		"unlabelled": {}, "unlabelled-but-up": {},
	}
	var got []string
	for _, g := range withoutRetired(gws, labels, nil) {
		got = append(got, g.Node)
	}
	if want := "[up stopped unlabelled-but-up]"; fmt.Sprint(got) != want {
		t.Errorf("kept %v, want %s", got, want)
	}
	got = nil
	for _, g := range withoutRetired(gws, map[string]map[string]string{"stopped": {"edge": "yes"}}, map[string]string{"edge": "yes"}) {
		got = append(got, g.Node)
	}
	if want := "[up stopped unlabelled-but-up]"; fmt.Sprint(got) != want {
		t.Errorf("with spec.gateways.nodeSelector: kept %v, want %s", got, want)
	}
}
