package bgp

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func node(name string, lbls map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

func TestDesired(t *testing.T) {
	self := node("n1", map[string]string{"bgp": "on", "rack": "a"})
	others := []*corev1.Node{self, node("n2", map[string]string{"rr": "yes"}), node("n3", nil), node("n4", map[string]string{"rr": "yes"})}
	ips := map[string]netip.Addr{"n1": netip.MustParseAddr("172.30.1.11"), "n2": netip.MustParseAddr("172.30.1.12"),
		"n3": netip.MustParseAddr("172.30.1.13")} // n4 has no address yet
	spec := &fabricv1.BGPSpec{ASN: 64512, ListenPort: 179, NodeSelector: map[string]string{"bgp": "on"},
		Communities:     []string{"64512:7"},
		GracefulRestart: fabricv1.BGPGracefulRestart{Enabled: true, RestartTimeSeconds: 60},
		Advertise:       fabricv1.BGPAdvertise{PodBlocks: true, ServiceCIDRs: true, ServiceImportVIPs: true},
		Peers: []fabricv1.BGPPeer{
			{Name: "tor", Address: "172.30.0.254", ASN: 65000, Port: 179, HoldTimeSeconds: 9, KeepaliveSeconds: 3,
				BFD: &fabricv1.BGPBFD{MinIntervalMilliseconds: 100, Multiplier: 4}, PasswordSecretRef: &fabricv1.LocalSecretKeyRef{Name: "bgp", Key: "tor"}},
			{Name: "rr", NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rr": "yes"}}, ASN: 64512, Passive: true},
			{Name: "edge", Address: "172.30.0.253", ASN: 65001, PasswordSecretRef: &fabricv1.LocalSecretKeyRef{Name: "missing", Key: "x"}},
		}}
	in := Inputs{Spec: spec, Node: self, NodeIP: ips["n1"], Nodes: others, NodeIPs: ips,
		Blocks:            []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/80")},
		ServiceCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		ServiceImportVIPs: []netip.Addr{netip.MustParseAddr("10.96.5.5")},
		LoadBalancerIPs:   []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		Restarting:        true,
		Password: func(r fabricv1.LocalSecretKeyRef) (string, error) {
			if r.Name == "bgp" && r.Key == "tor" {
				return "s3cret", nil
			}
			return "", errors.New(`Secret weft-system/` + r.Name + ` not found`)
		}}
	got, err := Desired(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{ASN: 64512, RouterID: ips["n1"], ListenPort: 179, GracefulRestart: true, RestartTime: 60, Restarting: true,
		NextHop: ips["n1"], Communities: []string{"64512:7"},
		// The IPv6 block has no IPv6 next hop on this IPv4 node; load balancer addresses
		// are not asked for.
		Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.96.5.5/32")},
		Peers: []Peer{
			{Name: "edge", Address: netip.MustParseAddr("172.30.0.253"), ASN: 65001, Port: 179, Error: "Secret weft-system/missing not found"},
			{Name: "tor", Address: netip.MustParseAddr("172.30.0.254"), ASN: 65000, Port: 179, Password: "s3cret", HoldTime: 9, Keepalive: 3,
				BFD: &BFD{Interval: 100 * time.Millisecond, Multiplier: 4}},
			{Name: "rr/n2", Address: ips["n2"], ASN: 64512, Port: 179, Passive: true},
		}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Desired:\n got %+v\nwant %+v", got, want)
	}

	// Graceful restart off: no restart flag either.
	spec.GracefulRestart.Enabled = false
	if got, _ := Desired(in); got.Restarting || got.GracefulRestart {
		t.Errorf("graceful restart off: %+v", got)
	}
	// Left out by the selector.
	in.Node = others[2]
	if _, err := Desired(in); !errors.Is(err, ErrNotSelected) {
		t.Errorf("unselected node: err = %v", err)
	}
	// No IPv4 router ID to be had.
	spec.NodeSelector = nil
	in.NodeIP = netip.MustParseAddr("fd00::13")
	if _, err := Desired(in); err == nil || !strings.Contains(err.Error(), "router ID") {
		t.Errorf("IPv6-only node: err = %v", err)
	}
	// ... unless from the pod block.
	spec.RouterIDSource = "PodGateway"
	if got, err := Desired(in); err != nil || got.RouterID != netip.MustParseAddr("10.244.1.1") {
		t.Errorf("router ID from the pod block: %v %v", got.RouterID, err)
	}
}
