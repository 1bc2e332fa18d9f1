package peering_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusterpeer"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/peering"
	"github.com/weft-net/weft/internal/testenv"
)

var a, b *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &a, &b) }

// envtest advertises a placeholder address for its API server, so the suite tells Join where
// the servers are; the lab e2e covers discovering them.
func opts() peering.Options {
	return peering.Options{ServerFrom: a.Config.Host, ServerTo: b.Config.Host}
}

func cluster(name string, e *testenv.Env) peering.Cluster {
	return peering.Cluster{Name: name, Config: e.Config, Client: e.Client}
}

// network is a cluster's ClusterNetwork with ranges of its own (peers' ranges must not
// overlap).
func network(id, pods, services string) *fabricv1.ClusterNetwork {
	return &fabricv1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: id, PodCIDRs: []fabricv1.CIDR{fabricv1.CIDR(pods)},
			ServiceCIDRs: []fabricv1.CIDR{fabricv1.CIDR(services)}}}
}

// peerClient builds a client from the kubeconfig that Join stored in `in` for peer `id`.
func peerClient(t *testing.T, in *testenv.Env, id string) client.Client {
	t.Helper()
	s := &corev1.Secret{}
	if err := in.Client.Get(context.Background(), client.ObjectKey{Namespace: "weft-system", Name: "peer-" + id}, s); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(s.Data["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: operator.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestJoin(t *testing.T) {
	ctx := context.Background()

	t.Run("refuses clusters without weft, naming the cluster", func(t *testing.T) {
		err := peering.Join(ctx, cluster("ctx-a", a), cluster("ctx-b", b), opts())
		if err == nil || !strings.Contains(err.Error(), `ctx-a: reading ClusterNetwork "default"`) {
			t.Fatalf("err = %v", err)
		}
	})
	if err := a.Client.Create(ctx, network("east", "10.1.0.0/16", "10.2.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if err := b.Client.Create(ctx, network("west", "10.3.0.0/16", "10.4.0.0/16")); err != nil {
		t.Fatal(err)
	}

	t.Run("refuses to peer a cluster with itself", func(t *testing.T) {
		err := peering.Join(ctx, cluster("ctx-a", a), cluster("ctx-a-again", a), peering.Options{})
		if err == nil || !strings.Contains(err.Error(), `same clusterID "east"`) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("each side gets a ClusterPeer and a least-privilege credential", func(t *testing.T) {
		if err := peering.Join(ctx, cluster("ctx-a", a), cluster("ctx-b", b), opts()); err != nil {
			t.Fatal(err)
		}
		for _, side := range []struct {
			in, other *testenv.Env
			peerID    string
		}{{a, b, "west"}, {b, a, "east"}} {
			p := &fabricv1.ClusterPeer{}
			if err := side.in.Client.Get(ctx, client.ObjectKey{Name: side.peerID}, p); err != nil {
				t.Fatalf("ClusterPeer %s: %v", side.peerID, err)
			}
			if p.Spec.ClusterID != side.peerID || p.Spec.KubeconfigSecretRef.Name != "peer-"+side.peerID {
				t.Errorf("ClusterPeer spec: %+v", p.Spec)
			}
			pc := peerClient(t, side.in, side.peerID)
			cn := &fabricv1.ClusterNetwork{}
			if err := pc.Get(ctx, client.ObjectKey{Name: "default"}, cn); err != nil || cn.Spec.ClusterID != side.peerID {
				t.Errorf("the credential cannot read the peer's ClusterNetwork: %v %q", err, cn.Spec.ClusterID)
			}
			if err := pc.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "peer-" + side.peerID}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
				t.Errorf("the credential may read Secrets (err = %v); want Forbidden", err)
			}
			// Export records (Multi-Cluster Services): ExportRecords in weft-system only.
			if err := pc.List(ctx, &fabricv1.ExportRecordList{}, client.InNamespace("weft-system")); err != nil {
				t.Errorf("the credential cannot list export records in weft-system: %v", err)
			}
			if err := pc.List(ctx, &fabricv1.ExportRecordList{}, client.InNamespace("default")); !apierrors.IsForbidden(err) {
				t.Errorf("the credential may list ExportRecords outside weft-system (err = %v); want Forbidden", err)
			}
			if err := pc.List(ctx, &discoveryv1.EndpointSliceList{}, client.InNamespace("weft-system")); !apierrors.IsForbidden(err) {
				t.Errorf("the credential may list EndpointSlices (err = %v); want Forbidden", err)
			}
			cn.Spec.DNS.Domain = "changed.example"
			if err := pc.Update(ctx, cn); !apierrors.IsForbidden(err) {
				t.Errorf("the credential may write ClusterNetworks (err = %v); want Forbidden", err)
			}
		}
	})

	t.Run("the operator connects with the issued credential", func(t *testing.T) {
		mgr, err := ctrl.NewManager(a.Config, ctrl.Options{Scheme: operator.NewScheme(),
			Metrics: metricsserver.Options{BindAddress: "0"},
			Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {Namespaces: map[string]cache.Config{"weft-system": {}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := (&clusterpeer.Reconciler{Client: mgr.GetClient(), Options: clusterpeer.Options{Namespace: "weft-system"}}).SetupWithManager(ctx, mgr); err != nil {
			t.Fatal(err)
		}
		testenv.RunManager(t, mgr)
		testenv.Eventually(t, 30*time.Second, func() error {
			p := &fabricv1.ClusterPeer{}
			if err := a.Client.Get(ctx, client.ObjectKey{Name: "west"}, p); err != nil {
				return err
			}
			return testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionTrue, fabricv1.ReasonConnected)
		})
	})

	t.Run("joining again renews the token and changes nothing else", func(t *testing.T) {
		before := &corev1.Secret{}
		if err := a.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "peer-west"}, before); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // tokens issued in the same second can be identical
		if err := peering.Join(ctx, cluster("ctx-a", a), cluster("ctx-b", b), opts()); err != nil {
			t.Fatal(err)
		}
		after := &corev1.Secret{}
		if err := a.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "peer-west"}, after); err != nil {
			t.Fatal(err)
		}
		if string(before.Data["kubeconfig"]) == string(after.Data["kubeconfig"]) {
			t.Error("the kubeconfig (token) was not renewed")
		}
		peers := &fabricv1.ClusterPeerList{}
		if err := a.Client.List(ctx, peers); err != nil || len(peers.Items) != 1 {
			t.Errorf("want exactly one ClusterPeer in a, have %d (%v)", len(peers.Items), err)
		}
	})

	t.Run("leaving removes both ClusterPeers, Secrets, identities and roles, and revokes the credential", func(t *testing.T) {
		pc := peerClient(t, a, "west") // a's credential in b
		if err := peering.Leave(ctx, cluster("ctx-a", a), cluster("ctx-b", b), opts()); err != nil {
			t.Fatal(err)
		}
		for _, side := range []struct {
			in     *testenv.Env
			peerID string
			selfID string
		}{{a, "west", "east"}, {b, "east", "west"}} {
			for _, o := range []client.Object{
				&fabricv1.ClusterPeer{ObjectMeta: metav1.ObjectMeta{Name: side.peerID}},
				&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "peer-" + side.peerID, Namespace: "weft-system"}},
				&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "peer-" + side.peerID, Namespace: "weft-system"}},
				&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "weft:peer:" + side.peerID}},
				&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "weft:peer-records:" + side.peerID, Namespace: "weft-system"}},
				&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: peering.ReaderRole}},
				&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: peering.RecordReaderRole, Namespace: "weft-system"}},
			} {
				err := side.in.Client.Get(ctx, client.ObjectKeyFromObject(o), o)
				if !apierrors.IsNotFound(err) && o.GetDeletionTimestamp() == nil {
					t.Errorf("%T %s is still there after leave (err %v)", o, o.GetName(), err)
				}
			}
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			err := pc.Get(ctx, client.ObjectKey{Name: "default"}, &fabricv1.ClusterNetwork{})
			if !apierrors.IsUnauthorized(err) && !apierrors.IsForbidden(err) {
				return fmt.Errorf("the old credential still reads the peer (err %w)", err)
			}
			return nil
		})
		if err := peering.Leave(ctx, cluster("ctx-a", a), cluster("ctx-b", b), opts()); err != nil {
			t.Errorf("leaving twice: %v", err)
		}
	})
}
