package gateway_test

import (
	"errors"
	"net/netip"
	"time"

	"os"
	"path/filepath"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// The gateway's clients are built without the API server: its kinds are mapped statically,
// to the resources the API server serves them as.
func TestClientsNeedNoAPIServer(t *testing.T) {
	m := gateway.StaticMapper()
	for kind, want := range map[schema.GroupVersionKind]string{
		fabricv1.GroupVersion.WithKind("ClusterNetwork"):    "clusternetworks",
		fabricv1.GroupVersion.WithKind("ClusterPeer"):       "clusterpeers",
		fabricv1.GroupVersion.WithKind("FabricGateway"):     "fabricgateways",
		corev1.SchemeGroupVersion.WithKind("Node"):          "nodes",
		coordinationv1.SchemeGroupVersion.WithKind("Lease"): "leases",
		corev1.SchemeGroupVersion.WithKind("Event"):         "events",
	} {
		got, err := m.RESTMapping(kind.GroupKind(), kind.Version)
		if err != nil || got.Resource.Resource != want {
			t.Errorf("%s: %v, %v; want resource %s", kind, got, err, want)
		}
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), fabricv1.AddToScheme(scheme)); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second} // nothing listens there
	if _, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: m}); err != nil {
		t.Errorf("client: %v", err)
	}
	if _, err := crcache.New(cfg, crcache.Options{Scheme: scheme, Mapper: m, ByObject: map[client.Object]crcache.ByObject{
		&fabricv1.ClusterPeer{}: {}, &fabricv1.FabricGateway{}: {Field: fields.OneTermEqualSelector("metadata.name", "n1")}}}); err != nil {
		t.Errorf("cache: %v", err)
	}
}
