package gateway

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestHealthTransitions(t *testing.T) {
	a, b := netip.MustParseAddr("172.30.2.11"), netip.MustParseAddr("172.30.2.12")
	peers := []fabricv1.ClusterPeer{{ObjectMeta: metav1.ObjectMeta{Name: "c2"}, Spec: fabricv1.ClusterPeerSpec{ClusterID: "c2"},
		Status: fabricv1.ClusterPeerStatus{Gateways: []fabricv1.GatewayStatus{
			{Node: "m1", Endpoint: "172.30.2.11:51820"}, {Node: "m2", Endpoint: "172.30.2.12:51820"}, {Node: "bad", Endpoint: "nonsense"}}}}}
	before := map[netip.Addr]bool{}
	steps := []struct {
		now  map[netip.Addr]bool
		want []string // "m1 up", "m2 down"
	}{
		{map[netip.Addr]bool{}, nil},        // just started: nobody answers yet, nothing to say
		{map[netip.Addr]bool{a: true}, nil}, // m1 answers for the first time: not a change
		{map[netip.Addr]bool{a: true}, nil}, // steady
		{map[netip.Addr]bool{b: true}, nil}, // m1 down? yes; m2 first seen: nothing
		{map[netip.Addr]bool{a: true, b: true}, nil},
		{map[netip.Addr]bool{a: false, b: true}, nil},
		{map[netip.Addr]bool{a: true, b: true}, nil},
	}
	steps[3].want = []string{"m1 down"}
	steps[4].want = []string{"m1 up"}
	steps[5].want = []string{"m1 down"}
	steps[6].want = []string{"m1 up"}
	for i, s := range steps {
		var got []string
		for _, tr := range HealthTransitions(peers, before, s.now) {
			state := "down"
			if tr.Up {
				state = "up"
			}
			got = append(got, tr.Gateway.Node+" "+state)
		}
		if strings.Join(got, ",") != strings.Join(s.want, ",") {
			t.Errorf("step %d: transitions %v, want %v", i, got, s.want)
		}
	}
	// A gateway the peer no longer announces is forgotten.
	peers[0].Status.Gateways = peers[0].Status.Gateways[1:]
	HealthTransitions(peers, before, map[netip.Addr]bool{b: true})
	if _, ok := before[a]; ok {
		t.Errorf("gateway m1 still remembered after the peer stopped announcing it: %v", before)
	}
}

func TestHealthEvent(t *testing.T) {
	peer := &fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: "c2", UID: "u1"}, Spec: fabricv1.ClusterPeerSpec{ClusterID: "c2"}}
	gw := fabricv1.GatewayStatus{Node: "m1", Endpoint: "172.30.2.11:51820"}
	down := healthEvent(HealthTransition{Peer: peer, Gateway: gw}, "n1", time.Now())
	if down.Type != corev1.EventTypeWarning || down.Reason != ReasonPeerGatewayDown || down.Namespace != "default" ||
		down.InvolvedObject.Kind != "ClusterPeer" || down.InvolvedObject.Name != "c2" || down.InvolvedObject.UID != "u1" ||
		!strings.Contains(down.Message, "c2/m1 (172.30.2.11:51820)") || !strings.Contains(down.Message, "from n1") {
		t.Errorf("down event: %+v", down)
	}
	up := healthEvent(HealthTransition{Peer: peer, Gateway: gw, Up: true}, "n1", time.Now())
	if up.Type != corev1.EventTypeNormal || up.Reason != ReasonPeerGatewayUp {
		t.Errorf("up event: %+v", up)
	}
}
