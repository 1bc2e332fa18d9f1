package main

import (
	"bytes"
	"fmt"
	"regexp"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func TestMeshPairs(t *testing.T) {
	if got := fmt.Sprint(meshPairs(4)); got != "[[0 1] [0 2] [0 3] [1 2] [1 3] [2 3]]" {
		t.Errorf("meshPairs(4) = %s", got)
	}
	if got := len(meshPairs(10)); got != 45 {
		t.Errorf("a mesh of 10 has %d pairs, want 45", got)
	}
}

func TestWriteMesh(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ready := []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "TunnelsUp"}}
	cn := func(id string, tunnels ...fabricv1.GatewayTunnel) *fabricv1.ClusterNetwork {
		return &fabricv1.ClusterNetwork{Spec: fabricv1.ClusterNetworkSpec{ClusterID: id},
			Status: fabricv1.ClusterNetworkStatus{Gateways: []fabricv1.GatewayStatus{{Node: id + "-gw", Healthy: true, Tunnels: tunnels}}}}
	}
	peer := func(id string) fabricv1.ClusterPeer {
		return fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: id}, Spec: fabricv1.ClusterPeerSpec{ClusterID: id},
			Status: fabricv1.ClusterPeerStatus{Conditions: ready, LastSyncTime: &metav1.Time{Time: now.Add(-4 * time.Second)}}}
	}
	c3 := peer("c3")
	c3.Status.PodCIDRs = []string{"10.244.0.0/16"}
	c3.Status.Aliases = []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"}}
	views := []clusterView{
		{Context: "one", CN: cn("c1", fabricv1.GatewayTunnel{Peer: "c2/x", Answering: true}, fabricv1.GatewayTunnel{Peer: "c3/y"}), Peers: []fabricv1.ClusterPeer{peer("c2"), c3}},
		{Context: "two", CN: cn("c2"), Peers: []fabricv1.ClusterPeer{peer("c1")}},
		{Context: "three", CN: cn("c3")},
	}
	var out bytes.Buffer
	missing, err := writeMesh(&out, views, now)
	if err != nil {
		t.Fatal(err)
	}
	if missing != 3 {
		t.Errorf("%d pairs missing, want 3 (two→three, three→one, three→two)", missing)
	}
	for _, line := range []string{
		`^one +two +Ready +1/1 answering +4s ago +- +-$`,
		`^one +three +Ready +0/1 answering +4s ago +- +10.244.0.0/16 as 100.64.0.0/16$`,
		`^two +three +not peered`,
		`^three +one +not peered`,
	} {
		if !regexp.MustCompile("(?m)" + line).MatchString(out.String()) {
			t.Errorf("no line matching %q in:\n%s", line, out.String())
		}
	}
}
