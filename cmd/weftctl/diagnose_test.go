package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/render"
)

func TestDiagnose(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	ready := []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Reconciled", Message: "ok"}}
	healthy := func() diagnosis {
		cn := &fabricv1.ClusterNetwork{Spec: fabricv1.ClusterNetworkSpec{ClusterID: "c1"},
			Status: fabricv1.ClusterNetworkStatus{Conditions: ready, OperatorVersion: "v0.2.0", Gateways: []fabricv1.GatewayStatus{
				{Node: "n1", Healthy: true, Tunnels: []fabricv1.GatewayTunnel{
					{Peer: "c2/m1", State: fabricv1.TunnelActive, Answering: true, LastHandshakeTime: at(time.Minute)},
					{Peer: "c3/k1", State: fabricv1.TunnelActive, Answering: true, LastHandshakeTime: at(time.Minute)},
					// To a peer gateway that stopped: the peer's to diagnose, not a failure here.
					{Peer: "c2/stopped", State: fabricv1.TunnelStandby},
				}},
			}}}
		peer := func(name string) fabricv1.ClusterPeer {
			return fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.ClusterPeerSpec{ClusterID: name},
				Status: fabricv1.ClusterPeerStatus{KubernetesVersion: "v1.36.1", WeftVersion: "v0.1.2", PodCIDRs: []string{"10.244.0.0/16"},
					Gateways: []fabricv1.GatewayStatus{{Node: map[string]string{"c2": "m1", "c3": "k1"}[name], Healthy: true}, {Node: "stopped"}},
					Conditions: []metav1.Condition{
						{Type: "Connected", Status: metav1.ConditionTrue, Reason: "Connected"},
						{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Connected"},
						{Type: "Ready", Status: metav1.ConditionTrue, Reason: "TunnelsUp"}}}}
		}
		c3 := peer("c3")
		c3.Status.Aliases = []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"}}
		return diagnosis{CN: cn, Peers: []fabricv1.ClusterPeer{peer("c2"), c3},
			Nodes:    []fabricv1.FabricNode{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: fabricv1.FabricNodeStatus{Conditions: ready}}},
			Policies: []fabricv1.FabricPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 2}, Status: fabricv1.FabricPolicyStatus{ObservedGeneration: 2, RealizedNodes: 1, DesiredNodes: 1}}},
			Corefile: render.WithClusterSetZone(".:53 {\n    forward . /etc/resolv.conf\n}\n", "clusterset.local", "10.96.0.53"), DNSServiceIP: "10.96.0.53",
			KubernetesVersion: "v1.37.2", Now: now}
	}

	checks := diagnose(healthy())
	if n := failed(checks); n != 0 {
		t.Errorf("a healthy cluster fails %d checks: %+v", n, checks)
	}
	var out bytes.Buffer
	if err := writeChecks(&out, checks); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"peer c3: its ranges overlap this cluster's or another peer's: seen at aliases  10.244.0.0/16 as 100.64.0.0/16",
		"ok      peer c2: tunnels are handshaken and answer through every peer gateway", "all "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}

	// What the lab breaks: a gateway stopped, the CoreDNS block removed; and more.
	broken := healthy()
	broken.CN.Status.Gateways = append(broken.CN.Status.Gateways, fabricv1.GatewayStatus{Node: "n2", LastRenewTime: &metav1.MicroTime{Time: now.Add(-2 * time.Minute)}})
	broken.CN.Status.Gateways[0].Tunnels[0].Answering = false
	broken.Corefile = ".:53 {\n    forward . /etc/resolv.conf\n}\n"
	broken.Peers[1].Status.Conditions[0] = metav1.Condition{Type: "Connected", Status: metav1.ConditionFalse, Reason: fabricv1.ReasonUnauthorized, Message: "401"}
	broken.Peers[1].Status.StaleSince = at(3 * time.Minute)
	broken.Policies[0].Status.RealizedNodes = 0
	broken.Peers[0].Status.KubernetesVersion = "v1.34.0"
	broken.Peers[1].Status.WeftVersion = "v0.4.1"
	checks = diagnose(broken)
	got := map[string]Check{}
	for _, c := range checks {
		got[c.Check] = c
	}
	for check, want := range map[string]string{
		"gateways renew their Leases":                                           "stopped: n2 (last renewed 2m ago)",
		"peer c2: tunnels are handshaken and answer through every peer gateway": "n1 → c2/m1 (no answer to health probes)",
		"peer c3: its API server is read and is cluster c3":                     "Unauthorized: 401",
		"peer c3: its state is current":                                         "served from its last state since 3m ago",
		"the cluster DNS forwards clusterset.local to weft-dns":                 "lacks weft's server block",
		"FabricPolicy p is realized on every node":                              "realized on 0 of 1 nodes",
		"peer c2: Kubernetes versions within one minor version":                 "here v1.37.2, there v1.34.0",
		"peer c3: weft releases within one minor version":                       "here v0.2.0, there v0.4.1",
	} {
		c, ok := got[check]
		if !ok || c.OK || !strings.Contains(c.Detail, want) || c.Fix == "" {
			t.Errorf("check %q: %+v, want failed saying %q with a fix", check, c, want)
		}
	}
	if n := failed(checks); n != 8 {
		t.Errorf("%d checks failed, want 8: %+v", n, checks)
	}
	if c := got["peer c3: its API server is read and is cluster c3"]; !strings.Contains(c.Fix, "weftctl peer join") {
		t.Errorf("an expired credential's fix %q does not say to join again", c.Fix)
	}
}

func TestMinorSkew(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"v1.37.2", "v1.36.0", 1}, {"v1.34.1", "v1.37.0", 3}, {"v1.37.0-rc.1", "v1.37.2", 0}, {"garbage", "v1.37.0", 0},
		{"v0.1.0", "v0.2.3", 1}, {"v1.0.0", "v0.9.0", 1000}} {
		if got := minorSkew(c.a, c.b); got != c.want {
			t.Errorf("minorSkew(%s, %s) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
