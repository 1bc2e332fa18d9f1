package gateway_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/gateway"
)

// What a gateway last read is kept on the node and read back whole; a missing file is no
// state, a damaged one an error.
func TestLastKnownIsKept(t *testing.T) {
	dir := t.TempDir()
	if k, err := gateway.LoadLastKnown(dir); k != nil || err != nil {
		t.Fatalf("no file: got %+v, %v; want nothing", k, err)
	}
	west := peer("west", true, gw("w1", "172.30.2.11:51820", true))
	west.Name = "west"
	k := &gateway.LastKnown{NodeIP: netip.MustParseAddr("172.30.1.11"), NodeUID: "node-uid",
		ClusterNetwork: fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default", UID: "cn-uid"},
			Spec: fabricv1.ClusterNetworkSpec{ClusterID: "here", PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}}},
		Peers: []fabricv1.ClusterPeer{west}}
	if err := k.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := gateway.LoadLastKnown(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeIP != k.NodeIP || got.NodeUID != k.NodeUID || got.ClusterNetwork.UID != "cn-uid" || got.ClusterNetwork.Spec.ClusterID != "here" ||
		len(got.Peers) != 1 || got.Peers[0].Status.Gateways[0].Endpoint != "172.30.2.11:51820" || got.SavedAt.IsZero() {
		t.Errorf("read back %+v, want %+v", got, k)
	}
	if st, err := os.Stat(filepath.Join(dir, "last-known.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the kept state's file: %v, %v; want mode 0600", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "last-known.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := gateway.LoadLastKnown(dir); k != nil || err == nil {
		t.Errorf("a damaged file: got %+v, %v; want an error", k, err)
	}
}
