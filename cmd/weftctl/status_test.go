package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestWriteStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-ago)} }
	cn := &fabricv1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Generation: 3},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1", PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"},
			Gateways: fabricv1.GatewaysSpec{Tunnel: fabricv1.TunnelWireGuard, MaxActive: 2}},
		Status: fabricv1.ClusterNetworkStatus{ObservedGeneration: 3,
			Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Ready"}},
			Gateways: []fabricv1.GatewayStatus{
				{Node: "n1", Endpoint: "172.30.1.11:51820", Tunnel: fabricv1.TunnelWireGuard, PublicKey: "KEY1", Healthy: true,
					LastRenewTime: &metav1.MicroTime{Time: now.Add(-300 * time.Millisecond)},
					Tunnels: []fabricv1.GatewayTunnel{
						{Peer: "c2/m1", Device: "weft-wg1", Endpoint: "172.30.2.11:51820", State: fabricv1.TunnelActive, Answering: true, LastHandshakeTime: at(42 * time.Second)},
						{Peer: "c2/m2", State: fabricv1.TunnelStandby},
					}},
				{Node: "n2", Endpoint: "172.30.1.12:51820", Healthy: false, LastRenewTime: &metav1.MicroTime{Time: now.Add(-3*time.Minute - 10*time.Second)}},
			}},
	}
	peers := []fabricv1.ClusterPeer{
		{ObjectMeta: metav1.ObjectMeta{Name: "c2", Generation: 1}, Spec: fabricv1.ClusterPeerSpec{ClusterID: "c2"},
			Status: fabricv1.ClusterPeerStatus{ObservedGeneration: 1, LastSyncTime: at(4 * time.Second), PodCIDRs: []string{"10.245.0.0/16"},
				Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Connected", LastTransitionTime: metav1.Time{Time: now.Add(-5 * time.Minute)}}},
				Gateways:   []fabricv1.GatewayStatus{{Node: "m1", Healthy: true}, {Node: "m2", Healthy: false}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "c3", Generation: 2}, Spec: fabricv1.ClusterPeerSpec{ClusterID: "c3"},
			Status: fabricv1.ClusterPeerStatus{ObservedGeneration: 2,
				Conditions: []metav1.Condition{{Type: "Stalled", Status: metav1.ConditionTrue, Reason: "OverlappingCIDR", Message: "pods overlap c2"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "c4", Generation: 1}, Spec: fabricv1.ClusterPeerSpec{ClusterID: "c4"},
			Status: fabricv1.ClusterPeerStatus{ObservedGeneration: 1, PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/16"},
				Aliases:    []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"}},
				Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Connected", LastTransitionTime: metav1.Time{Time: now.Add(-time.Minute)}}}}},
	}
	var out bytes.Buffer
	if err := writeStatus(&out, cn, peers, now); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, line := range []string{
		`^Cluster c1: Ready$`,
		`pods 10.244.0.0/16  services 10.96.0.0/16  tunnel wireguard  maxActive 2`,
		`^n1 +172.30.1.11:51820 +wireguard +yes +- +KEY1$`,
		`^n2 +172.30.1.12:51820 +- +no +3m10s ago +-$`,
		`^n1 +c2/m1 +Active +yes +42s ago +weft-wg1 +172.30.2.11:51820$`,
		`^n1 +c2/m2 +Standby +no +none +- +-$`,
		`^c2 +c2 +Ready +1/2 healthy +10.245.0.0/16 +- +5m$`,
		`^c3 +c3 +Stalled OverlappingCIDR: pods overlap c2 +0/0 healthy +- +- +-$`,
		`^c4 +c4 +Ready +0/0 healthy +10.244.0.0/16 as 100.64.0.0/16 +10.96.0.0/16 +1m$`,
	} {
		if !regexp.MustCompile("(?m)" + line).MatchString(got) {
			t.Errorf("no line matching %q in:\n%s", line, got)
		}
	}

	// Nothing yet: say so, and what to do.
	out.Reset()
	empty := &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Generation: 1}, Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1"}}
	if err := writeStatus(&out, empty, nil, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Cluster c1: Reconciling", "no node matches spec.gateways.nodeSelector", "weftctl peer join"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("%q missing from:\n%s", want, out.String())
		}
	}
}

func TestWriteBGP(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	cn := &fabricv1.ClusterNetwork{Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1", BGP: &fabricv1.BGPSpec{ASN: 64512}}}
	since := metav1.NewTime(now.Add(-90 * time.Second))
	nodes := []fabricv1.BGPNode{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: fabricv1.BGPNodeStatus{Peers: []fabricv1.BGPPeerStatus{
		{Name: "tor", Address: "172.30.1.254", ASN: 65000, State: fabricv1.BGPStateEstablished, Since: &since, BFD: "Up", PrefixesSent: 2, PrefixesReceived: 1},
		{Name: "edge", Address: "172.30.1.253", ASN: 65001, State: fabricv1.BGPStateActive, LastError: "the peer closed the session: bad peer AS"},
	}}}}
	var out bytes.Buffer
	if err := writeBGP(&out, cn, nodes, now); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`^BGP \(AS 64512\)$`,
		`^n1 +tor +172.30.1.254 +65000 +Established +1m30s ago +Up +2 +1 +-$`,
		`^n1 +edge +172.30.1.253 +65001 +Active +- +- +0 +0 +the peer closed the session: bad peer AS$`,
	} {
		if !regexp.MustCompile("(?m)" + line).MatchString(out.String()) {
			t.Errorf("no line matching %q in:\n%s", line, out.String())
		}
	}
	// Without spec.bgp: nothing.
	out.Reset()
	cn.Spec.BGP = nil
	if err := writeBGP(&out, cn, nodes, now); err != nil || out.Len() != 0 {
		t.Errorf("without spec.bgp: %q, %v", out.String(), err)
	}
}

func TestWriteNodes(t *testing.T) {
	nodes := []fabricv1.FabricNode{
		{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{"10.244.1.0/24"}},
			Status: fabricv1.FabricNodeStatus{Datapath: fabricv1.DatapathOVS,
				Conditions:    []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Serving"}},
				RefusedBlocks: []fabricv1.RefusedBlock{{Node: "n3", CIDR: "0.0.0.0/0", Reason: fabricv1.BlockOutsidePodCIDRs}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n2"}},
	}
	var out bytes.Buffer
	if err := writeNodes(&out, nodes); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`^n1 +10.244.1.0/24 +ovs +True +0.0.0.0/0 of n3 \(OutsidePodCIDRs\)$`,
		`^n2 +- +- +- +-$`,
	} {
		if !regexp.MustCompile("(?m)" + line).MatchString(out.String()) {
			t.Errorf("no line matching %q in:\n%s", line, out.String())
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 123 * time.Millisecond: "120ms", 42 * time.Second: "42s",
		3*time.Minute + 10*time.Second: "3m10s", 5 * time.Minute: "5m", 5*time.Hour + 2*time.Minute: "5h2m", 80 * time.Hour: "3d",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestWriteOperatorVersion(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-operator"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "operator", Image: "registry:5000/weft-net/weft-operator:v0.1.0"}}}}},
		Status: appsv1.DeploymentStatus{ReadyReplicas: 2}}
	c := fake.NewClientBuilder().WithObjects(d).Build()
	var out bytes.Buffer
	if err := writeOperatorVersion(context.Background(), &out, c, "weft-system"); err != nil {
		t.Fatal(err)
	}
	if want := "weft-operator: v0.1.0 (image registry:5000/weft-net/weft-operator:v0.1.0, 2/2 replicas ready)\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	if err := writeOperatorVersion(context.Background(), &out, c, "elsewhere"); err == nil || !strings.Contains(err.Error(), "elsewhere/weft-operator") {
		t.Errorf("no operator: %v", err)
	}
}
