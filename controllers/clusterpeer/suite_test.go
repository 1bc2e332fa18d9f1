package clusterpeer_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusterpeer"
	"github.com/weft-net/weft/internal/metricstest"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/testenv"
)

// Two real API servers: "local" runs the controller, "remote" is the peer it reads.
var local, remote *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &local, &remote) }

func TestClusterPeer(t *testing.T) {
	ctx := context.Background()
	mustCreate(t, local.Client, clusterNetwork("local", "10.244.0.0/16", "10.96.0.0/16"))
	remoteCN := clusterNetwork("remote", "10.245.0.0/16", "10.97.0.0/16")
	mustCreate(t, remote.Client, remoteCN)
	// A gateway in each cluster, and the local one's tunnel to the remote one handshaken and
	// answering (what the gateways would report): the data plane is up, so a peer that can
	// be read is Ready ("Ready follows the tunnels" below takes them down).
	remoteGW := fabricv1.GatewayStatus{Node: "gw-1", Endpoint: "172.30.2.11:51820", Tunnel: fabricv1.TunnelWireGuard,
		PublicKey: "cHViLTEtcHViLTEtcHViLTEtcHViLTEtcHViLTEtcHU=", Healthy: true, PeerPorts: map[string]int32{"c1/gw-9": 51821}}
	setStatusGateways(t, remote, remoteGW)
	// The release the remote operator publishes.
	remoteCN = &fabricv1.ClusterNetwork{}
	if err := remote.Client.Get(ctx, client.ObjectKey{Name: "default"}, remoteCN); err != nil {
		t.Fatal(err)
	}
	remoteCN.Status.OperatorVersion = "v0.9.1"
	if err := remote.Client.Status().Update(ctx, remoteCN); err != nil {
		t.Fatal(err)
	}
	localTunnel := fabricv1.GatewayTunnel{Peer: "remote/gw-1", Endpoint: "172.30.2.11:51821", State: fabricv1.TunnelActive,
		Answering: true, LastHandshakeTime: &metav1.Time{Time: time.Now()}}
	setStatusGateways(t, local, fabricv1.GatewayStatus{Node: "gw-9", Endpoint: "172.30.1.19:51820", Tunnel: fabricv1.TunnelWireGuard,
		Healthy: true, Tunnels: []fabricv1.GatewayTunnel{localTunnel}})

	// The remote cluster grants "peer-reader" read access to ClusterNetworks, as `weftctl peer
	// join` will; "nobody" authenticates but has no permissions.
	mustCreate(t, remote.Client, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-peer-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"fabric.weft.dev"},
			Resources: []string{"clusternetworks"}, Verbs: []string{"get", "list", "watch"}}},
	})
	mustCreate(t, remote.Client, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-peer-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "weft-peer-reader"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "peer-reader"}},
	})
	reader := userKubeconfig(t, remote, "peer-reader")
	nobody := userKubeconfig(t, remote, "nobody")
	self := userKubeconfig(t, local, "admin", "system:masters")
	pwned := filepath.Join(t.TempDir(), "pwned") // the exec plugin below would create it

	startController(t)

	cases := []struct {
		name      string
		clusterID string
		secret    map[string][]byte // nil: no Secret
		key       string
		ready     metav1.ConditionStatus
		connected metav1.ConditionStatus
		state     string // Stalled, Reconciling or "" (Ready)
		reason    string
		message   string
	}{
		{"missing secret", "remote", nil, "", "False", "False", "Stalled", fabricv1.ReasonSecretNotFound, "not found"},
		{"missing key", "remote", map[string][]byte{"other": reader}, "", "False", "False", "Stalled", fabricv1.ReasonSecretKeyNotFound, `no key "kubeconfig"`},
		{"garbage kubeconfig", "remote", map[string][]byte{"kubeconfig": []byte("{{not yaml")}, "", "False", "False", "Stalled", fabricv1.ReasonInvalidKubeconfig, "not a kubeconfig"},
		{"exec plugin", "remote", map[string][]byte{"kubeconfig": withExec(t, reader, pwned)}, "", "False", "False", "Stalled", fabricv1.ReasonInvalidKubeconfig, "exec credential plugin"},
		{"unreachable", "remote", map[string][]byte{"kubeconfig": withServer(t, reader, "https://127.0.0.1:1")}, "", "False", "False", "Reconciling", fabricv1.ReasonUnreachable, "connection refused"},
		{"unknown credential", "remote", map[string][]byte{"kubeconfig": withToken(t, reader, "not-a-token")}, "", "False", "False", "Stalled", fabricv1.ReasonUnauthorized, "refused the credential"},
		{"no permission", "remote", map[string][]byte{"kubeconfig": nobody}, "", "False", "False", "Stalled", fabricv1.ReasonForbidden, "lacks permission"},
		{"wrong cluster", "elsewhere", map[string][]byte{"kubeconfig": reader}, "", "False", "True", "Stalled", fabricv1.ReasonClusterIDMismatch, `belongs to cluster "remote", not "elsewhere"`},
		{"itself", "local", map[string][]byte{"kubeconfig": self}, "", "False", "True", "Stalled", fabricv1.ReasonPeerIsThisCluster, "does not peer with itself"},
		{"connected, custom key", "remote", map[string][]byte{"creds": reader}, "creds", "True", "True", "", clusterpeer.ReasonTunnelsUp, "1 of 1 wireguard tunnels to peer remote's gateways answer"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("peer-%d", i)
			if c.secret != nil {
				mustCreate(t, local.Client, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: name}, Data: c.secret})
			}
			mustCreate(t, local.Client, peer(name, c.clusterID, name, c.key))
			got := waitPeer(t, name, func(p *fabricv1.ClusterPeer) error {
				conds := p.Status.Conditions
				health := map[string]kstatus.Status{"Stalled": kstatus.FailedStatus, "Reconciling": kstatus.InProgressStatus, "": kstatus.CurrentStatus}
				return errors.Join(peerState(p, c.state, c.reason, c.message),
					testenv.CheckCondition(conds, "Connected", c.connected, ""),
					testenv.CheckCondition(conds, "Accepted", c.ready, ""),
					testenv.CheckHealth(local.Client, p, health[c.state]))
			})
			if c.ready == "True" {
				if !slices.Equal(got.Status.PodCIDRs, []string{"10.245.0.0/16"}) || got.Status.LastSyncTime == nil ||
					!strings.HasPrefix(got.Status.KubernetesVersion, "v1.") || got.Status.WeftVersion != "v0.9.1" {
					t.Errorf("advertised state not mirrored: %+v", got.Status)
				}
			}
		})
	}

	if _, err := os.Stat(pwned); err == nil {
		t.Errorf("the operator ran the peer kubeconfig's exec plugin")
	}

	t.Run("a Secret outside the operator's namespace is refused", func(t *testing.T) {
		// The operator may read Secrets only in its own namespace: a ClusterPeer cannot make
		// it read (or use) a Secret of another namespace, however valid.
		mustCreate(t, local.Client, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "peer-elsewhere"},
			Data: map[string][]byte{"kubeconfig": reader}})
		p := peer("peer-elsewhere", "remote", "peer-elsewhere", "")
		p.Spec.KubeconfigSecretRef.Namespace = "default"
		mustCreate(t, local.Client, p)
		waitPeer(t, "peer-elsewhere", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(peerState(p, "Stalled", fabricv1.ReasonSecretNamespaceRefused, "must be in the operator's namespace weft-system"),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionFalse, ""))
		})
		if err := local.Client.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("fixing the Secret reconnects without waiting for the backoff", func(t *testing.T) {
		// peer-0 has no Secret and its backoff has grown; creating the Secret reconnects it.
		mustCreate(t, local.Client, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "peer-0"},
			Data:       map[string][]byte{"kubeconfig": reader}})
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp),
				testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionTrue, fabricv1.ReasonConnected))
		})
	})

	t.Run("a peer without weft is Reconciling, and Ready again when weft returns", func(t *testing.T) {
		if err := remote.Client.Delete(ctx, remoteCN); err != nil {
			t.Fatal(err)
		}
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Reconciling", metav1.ConditionTrue, fabricv1.ReasonPeerNotConfigured),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionTrue, ""))
		})
		mustCreate(t, remote.Client, clusterNetwork("remote", "10.245.0.0/16", "10.97.0.0/16"))
		// Back, but with no gateway yet: Accepted, and Stalled until one is there.
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(peerState(p, "Stalled", clusterpeer.ReasonNoGateways, "peer remote advertises no gateway"),
				testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionTrue, fabricv1.ReasonConnected))
		})
		setStatusGateways(t, remote, remoteGW)
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp)
		})
	})

	t.Run("a peer whose ranges overlap this cluster's gets aliases, or is Stalled with policy Refuse", func(t *testing.T) {
		recreate := func(pods, services string) { t.Helper(); recreateRemote(t, pods, services, remoteGW) }
		// The remote cluster says how it sees this one, as its operator would publish.
		setPeerAliases := func(aliases ...fabricv1.CIDRAlias) {
			t.Helper()
			cn := &fabricv1.ClusterNetwork{}
			if err := remote.Client.Get(ctx, client.ObjectKey{Name: "default"}, cn); err != nil {
				t.Fatal(err)
			}
			cn.Status.PeerAliases = []fabricv1.PeerAliases{{ClusterID: "local", Aliases: aliases}}
			if err := remote.Client.Status().Update(ctx, cn); err != nil {
				t.Fatal(err)
			}
		}
		recreate("10.244.128.0/17", "10.97.0.0/16")
		// Until the peer says how it sees this cluster's overlapping pod range, traffic
		// between them cannot be translated: not Ready.
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return peerState(p, "Reconciling", clusterpeer.ReasonAwaitingPeerView, "has not published how it sees this cluster's 10.244.0.0/16")
		})
		setPeerAliases(fabricv1.CIDRAlias{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"})
		got := waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			if len(p.Status.SeenAs) == 0 {
				return errors.New("no status.seenAs yet")
			}
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp),
				testenv.CheckAbsent(p.Status.Conditions, "Stalled"))
		})
		// Other peers of this suite at the same remote may hold the first block.
		if a := got.Status.Aliases; len(a) != 1 || a[0].CIDR != "10.244.128.0/17" ||
			!netip.MustParsePrefix(fabricv1.DefaultAliasPool).Contains(netip.MustParsePrefix(a[0].Alias).Addr()) ||
			!strings.HasSuffix(a[0].Alias, "/17") {
			t.Errorf("status.aliases = %v, want the pod range aliased by a /17 of %s (the service range overlaps nothing: no alias)",
				a, fabricv1.DefaultAliasPool)
		}
		if want := []fabricv1.CIDRAlias{{CIDR: "10.244.0.0/16", Alias: "100.64.0.0/16"}}; !slices.Equal(got.Status.SeenAs, want) {
			t.Errorf("status.seenAs = %v, want %v", got.Status.SeenAs, want)
		}
		if ps := got.Status.Prefixes(); len(got.Status.Aliases) == 1 && fmt.Sprint(ps) != "["+got.Status.Aliases[0].Alias+" 10.97.0.0/16]" {
			t.Errorf("the peer is seen at %v", ps)
		}

		t.Log("how the peer says it sees this cluster is checked: a range that is not this cluster's holds it back")
		setPeerAliases(fabricv1.CIDRAlias{CIDR: "10.1.0.0/16", Alias: "100.64.0.0/16"})
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return peerState(p, "Stalled", fabricv1.ReasonInvalidAdvertisement, "10.1.0.0/16, which it says it aliases, is not a range of this cluster")
		})
		setPeerAliases()

		t.Log("spec.overlap.policy Refuse: Stalled, naming both ranges")
		setOverlap(t, fabricv1.OverlapSpec{Policy: fabricv1.OverlapRefuse})
		got = waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonOverlappingCIDR),
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionFalse, fabricv1.ReasonOverlappingCIDR),
				testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionFalse, fabricv1.ReasonOverlappingCIDR),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionTrue, ""))
		})
		msg := got.Status.Conditions[slices.IndexFunc(got.Status.Conditions, func(c metav1.Condition) bool { return c.Type == "Ready" })].Message
		if !strings.Contains(msg, "peer remote's pod range 10.244.128.0/17 overlaps this cluster's pod range 10.244.0.0/16") {
			t.Errorf("message %q does not name both ranges", msg)
		}
		if !slices.Equal(got.Status.PodCIDRs, []string{"10.244.128.0/17"}) {
			t.Errorf("status.podCIDRs = %v: the refused ranges should be shown", got.Status.PodCIDRs)
		}

		t.Log("an alias pool too small for the range: Stalled, AliasPoolExhausted")
		setOverlap(t, fabricv1.OverlapSpec{AliasPool: []fabricv1.CIDR{"198.18.0.0/18"}})
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return peerState(p, "Stalled", fabricv1.ReasonAliasPoolExhausted, "has no free /17")
		})
		setOverlap(t, fabricv1.OverlapSpec{})
		recreate("10.245.0.0/16", "10.97.0.0/16")
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			if !slices.Equal(p.Status.PodCIDRs, []string{"10.245.0.0/16"}) || len(p.Status.Aliases) != 0 {
				return fmt.Errorf("status.podCIDRs %v, aliases %v", p.Status.PodCIDRs, p.Status.Aliases)
			}
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp),
				testenv.CheckAbsent(p.Status.Conditions, "Stalled"))
		})
	})

	t.Run("ranges a peer may not claim are refused, and its other ranges stay in force", func(t *testing.T) {
		recreate := func(pods, services string) { t.Helper(); recreateRemote(t, pods, services, remoteGW) }
		refused := func(says string, pods, services []string) {
			t.Helper()
			got := waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
				return errors.Join(peerState(p, "Stalled", fabricv1.ReasonRefusedRange, says),
					testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionTrue, fabricv1.ReasonConnected))
			})
			if !slices.Equal(got.Status.PodCIDRs, pods) || !slices.Equal(got.Status.ServiceCIDRs, services) {
				t.Errorf("status ranges pods %v services %v, want only what may be claimed: %v %v (%s)",
					got.Status.PodCIDRs, got.Status.ServiceCIDRs, pods, services, testenv.Describe(got.Status.Conditions))
			}
		}
		// The cloud metadata address.
		recreate("10.245.0.0/16", "169.254.0.0/16")
		refused("service range 169.254.0.0/16 covers link-local 169.254.0.0/16 (the cloud metadata address)", []string{"10.245.0.0/16"}, nil)
		// A node of this cluster.
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bounds-node"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.98.0.7"}}}}
		mustCreate(t, local.Client, node)
		t.Cleanup(func() { _ = local.Client.Delete(ctx, node) })
		recreate("10.245.0.0/16", "10.98.0.0/16")
		refused("service range 10.98.0.0/16 covers node bounds-node's address 10.98.0.7", []string{"10.245.0.0/16"}, nil)
		// Half the Internet (and loopback with it).
		recreate("0.0.0.0/1", "10.97.0.0/16")
		refused("pod range 0.0.0.0/1 covers the unspecified network 0.0.0.0/8", nil, []string{"10.97.0.0/16"})
		// What the administrator allows this peer.
		recreate("10.245.0.0/16", "10.97.0.0/16")
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp)
		})
		allow := func(cidrs ...fabricv1.CIDR) {
			t.Helper()
			testenv.Eventually(t, 10*time.Second, func() error { // (the operator writes its status meanwhile)
				cp := &fabricv1.ClusterPeer{}
				if err := local.Client.Get(ctx, client.ObjectKey{Name: "peer-0"}, cp); err != nil {
					return err
				}
				cp.Spec.AllowedCIDRs = cidrs
				return local.Client.Update(ctx, cp)
			})
		}
		allow("10.245.0.0/16")
		refused("service range 10.97.0.0/16 lies outside spec.allowedCIDRs", []string{"10.245.0.0/16"}, nil)
		allow("10.245.0.0/16", "10.96.0.0/12")
		got := waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp),
				testenv.CheckAbsent(p.Status.Conditions, "Stalled"))
		})
		if !slices.Equal(got.Status.ServiceCIDRs, []string{"10.97.0.0/16"}) {
			t.Errorf("status.serviceCIDRs %v, want 10.97.0.0/16 once allowed", got.Status.ServiceCIDRs)
		}
		allow()
	})

	t.Run("a peer that cannot be read keeps its last state, Degraded, for spec.serveStaleFor", func(t *testing.T) {
		setSecret := func(kc []byte) {
			t.Helper()
			s := &corev1.Secret{}
			if err := local.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "peer-stale"}, s); err != nil {
				t.Fatal(err)
			}
			s.Data = map[string][]byte{"kubeconfig": kc}
			if err := local.Client.Update(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		mustCreate(t, local.Client, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "peer-stale"},
			Data: map[string][]byte{"kubeconfig": reader}})
		mustCreate(t, local.Client, peer("peer-stale", "remote", "peer-stale", ""))
		waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp)
		})

		// The API server goes away (as a stopped or partitioned one does): the last state stays.
		setSecret(withServer(t, reader, "https://127.0.0.1:1"))
		got := waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, fabricv1.ReasonServingLastKnownState),
				testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionTrue, fabricv1.ReasonServingLastKnownState),
				testenv.CheckCondition(p.Status.Conditions, "Degraded", metav1.ConditionTrue, fabricv1.ReasonUnreachable),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionFalse, fabricv1.ReasonUnreachable),
				testenv.CheckAbsent(p.Status.Conditions, "Reconciling"),
				testenv.CheckHealthAs(local.Client, p, kstatus.CurrentStatus, "Degraded"))
		})
		if got.Status.StaleSince == nil || !slices.Equal(got.Status.PodCIDRs, []string{"10.245.0.0/16"}) {
			t.Errorf("the last state is not served with its staleness: %+v", got.Status)
		}
		// The metrics show it too: Degraded, not Connected, stale for as long as staleSince says.
		if got.Status.StaleSince != nil {
			m := peerMetrics(t, "peer-stale")
			since := time.Since(got.Status.StaleSince.Time).Seconds()
			if m["weft_clusterpeer_condition/Degraded"] != 1 || m["weft_clusterpeer_condition/Connected"] != 0 || m["weft_clusterpeer_condition/Ready"] != 1 ||
				m["weft_clusterpeer_stale_seconds"] <= 0 || m["weft_clusterpeer_stale_seconds"] > since+1 {
				t.Errorf("a stale peer's metrics: %v (stale since %v)", m, got.Status.StaleSince)
			}
		}

		// An expired credential is the same: the last state stays.
		setSecret(withToken(t, reader, "expired"))
		waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, fabricv1.ReasonServingLastKnownState),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionFalse, fabricv1.ReasonUnauthorized))
		})

		// Beyond spec.serveStaleFor the peer is dropped.
		p := &fabricv1.ClusterPeer{}
		if err := local.Client.Get(ctx, client.ObjectKey{Name: "peer-stale"}, p); err != nil {
			t.Fatal(err)
		}
		p.Spec.ServeStaleFor = &metav1.Duration{Duration: time.Second}
		if err := local.Client.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionFalse, fabricv1.ReasonStaleTooLong),
				testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionFalse, fabricv1.ReasonStaleTooLong),
				testenv.CheckAbsent(p.Status.Conditions, "Degraded"))
		})

		// Back: current again, nothing stale left.
		if err := local.Client.Get(ctx, client.ObjectKey{Name: "peer-stale"}, p); err != nil {
			t.Fatal(err)
		}
		p.Spec.ServeStaleFor = &metav1.Duration{Duration: time.Hour}
		if err := local.Client.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		setSecret(reader)
		got = waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionTrue, fabricv1.ReasonConnected),
				testenv.CheckAbsent(p.Status.Conditions, "Degraded"))
		})
		if got.Status.StaleSince != nil {
			t.Errorf("staleSince %v left on a current peer", got.Status.StaleSince)
		}

		// A failed identity check drops a stale peer at once.
		setSecret(withServer(t, reader, "https://127.0.0.1:1"))
		waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, fabricv1.ReasonServingLastKnownState)
		})
		setSecret(self)
		waitPeer(t, "peer-stale", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionFalse, fabricv1.ReasonClusterIDMismatch),
				testenv.CheckAbsent(p.Status.Conditions, "Degraded"))
		})
	})

	t.Run("the gateways a peer publishes are mirrored", func(t *testing.T) {
		cn := &fabricv1.ClusterNetwork{}
		if err := remote.Client.Get(ctx, client.ObjectKey{Name: "default"}, cn); err != nil {
			t.Fatal(err)
		}
		cn.Status.Gateways[0].PeerPorts = map[string]int32{"c1/gw-9": 51822}
		if err := remote.Client.Status().Update(ctx, cn); err != nil {
			t.Fatal(err)
		}
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			if !equality.Semantic.DeepEqual(p.Status.Gateways, cn.Status.Gateways) {
				return fmt.Errorf("status.gateways %+v, want %+v", p.Status.Gateways, cn.Status.Gateways)
			}
			if want := cn.Spec.Gateways.MaxActive; want == 0 || p.Status.MaxActive != want {
				return fmt.Errorf("status.maxActive %d, want the peer's %d", p.Status.MaxActive, want)
			}
			return nil
		})

		// A gateway pointed at this cluster's own pod range holds the peer back, saying why.
		good := cn.Status.Gateways
		cn.Status.Gateways = append([]fabricv1.GatewayStatus{}, good...)
		cn.Status.Gateways[0].Endpoint = "10.244.0.10:51820"
		if err := remote.Client.Status().Update(ctx, cn); err != nil {
			t.Fatal(err)
		}
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return errors.Join(
				testenv.CheckCondition(p.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonInvalidAdvertisement),
				testenv.CheckCondition(p.Status.Conditions, "Connected", metav1.ConditionTrue, ""),
				func() error {
					if msg := testenv.Describe(p.Status.Conditions); !strings.Contains(msg, "lies in this cluster's range 10.244.0.0/16") {
						return fmt.Errorf("the condition does not say why: %s", msg)
					}
					return nil
				}())
		})
		cn.Status.Gateways = good
		if err := remote.Client.Status().Update(ctx, cn); err != nil {
			t.Fatal(err)
		}
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return testenv.CheckCondition(p.Status.Conditions, "Ready", metav1.ConditionTrue, clusterpeer.ReasonTunnelsUp)
		})
	})

	t.Run("Ready follows the tunnels, and says what is awaited or wrong", func(t *testing.T) {
		// What this cluster's gateways report changes; the peer's API server says the same
		// throughout (peer-0 stays Connected and Accepted).
		gw := fabricv1.GatewayStatus{Node: "gw-9", Endpoint: "172.30.1.19:51820", Tunnel: fabricv1.TunnelWireGuard, Healthy: true}
		for _, c := range []struct {
			name    string
			tunnel  *fabricv1.GatewayTunnel
			healthy bool
			state   string
			reason  string
			says    string
		}{
			{"right after a join: no port learnt", &fabricv1.GatewayTunnel{Peer: "remote/gw-1", Endpoint: "172.30.2.11:0", State: fabricv1.TunnelActive},
				true, "Reconciling", clusterpeer.ReasonAwaitingTunnels, "1 wait for the port the peer's gateway listens on"},
			{"answering but never handshaken", &fabricv1.GatewayTunnel{Peer: "remote/gw-1", Endpoint: "172.30.2.11:51821", State: fabricv1.TunnelActive, Answering: true},
				true, "Reconciling", clusterpeer.ReasonAwaitingTunnels, "1 have not handshaken"},
			{"this cluster's gateway gone", &localTunnel, false, "Reconciling", clusterpeer.ReasonAwaitingGateways, "none of this cluster's 1 gateways renews its Lease"},
			{"up again", &localTunnel, true, "", clusterpeer.ReasonTunnelsUp, "1 of 1 wireguard tunnels"},
		} {
			g := gw
			g.Healthy = c.healthy
			g.Tunnels = []fabricv1.GatewayTunnel{*c.tunnel}
			setStatusGateways(t, local, g)
			waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
				return errors.Join(peerState(p, c.state, c.reason, c.says),
					testenv.CheckCondition(p.Status.Conditions, "Accepted", metav1.ConditionTrue, fabricv1.ReasonConnected))
			})
			// The operator's metrics say the same: tunnels up (what Ready follows), of how many.
			up, total, ready := 0.0, 1.0, 0.0
			switch {
			case c.state == "":
				up, ready = 1, 1
			case !c.healthy:
				total = 0 // a dead gateway's tunnels do not count
			}
			m := peerMetrics(t, "peer-0")
			want := map[string]float64{"weft_clusterpeer_tunnels_up": up, "weft_clusterpeer_tunnels": total,
				"weft_clusterpeer_condition/Ready": ready, "weft_clusterpeer_condition/Connected": 1, "weft_clusterpeer_stale_seconds": 0,
				"weft_clusterpeer_gateways": 1}
			for k, v := range want {
				if got, ok := m[k]; !ok || got != v {
					t.Errorf("%s: metric %s of peer-0 is %v (present %t), want %v", c.name, k, got, ok, v)
				}
			}
		}

		// Different tunnel drivers: Stalled, naming both; the same again: Ready.
		setTunnel := func(tun fabricv1.TunnelType) {
			cn := &fabricv1.ClusterNetwork{}
			if err := local.Client.Get(ctx, client.ObjectKey{Name: "default"}, cn); err != nil {
				t.Fatal(err)
			}
			cn.Spec.Gateways.Tunnel = tun
			if err := local.Client.Update(ctx, cn); err != nil {
				t.Fatal(err)
			}
		}
		setTunnel(fabricv1.TunnelGeneve)
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return peerState(p, "Stalled", clusterpeer.ReasonTunnelMismatch, "this cluster's gateways use the geneve tunnel, peer remote's use wireguard")
		})
		if m := peerMetrics(t, "peer-0"); m["weft_clusterpeer_condition/Stalled"] != 1 || m["weft_clusterpeer_tunnels_up"] != 0 {
			t.Errorf("with different drivers the metrics say Stalled=%v and %v tunnels up, want 1 and 0", m["weft_clusterpeer_condition/Stalled"], m["weft_clusterpeer_tunnels_up"])
		}
		setTunnel(fabricv1.TunnelWireGuard)
		waitPeer(t, "peer-0", func(p *fabricv1.ClusterPeer) error {
			return peerState(p, "", clusterpeer.ReasonTunnelsUp, "answer health probes")
		})
	})
}

// peerMetrics gathers the operator's ClusterPeer metrics (read from local's API server, as
// the manager's cache would give them) of one peer: by metric name, conditions as
// "weft_clusterpeer_condition/<type>".
func peerMetrics(t *testing.T, peer string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range metricstest.Gather(t, clusterpeer.NewMetrics(local.Client)) {
		if s.Labels["peer"] != peer {
			continue
		}
		key := s.Name
		if typ, ok := s.Labels["type"]; ok {
			key += "/" + typ
		}
		out[key] = s.Value
	}
	return out
}

// peerState checks a ClusterPeer's kstatus state ("" is Ready) with its reason and message.
func peerState(p *fabricv1.ClusterPeer, state, reason, says string) error {
	ready := metav1.ConditionFalse
	if state == "" {
		ready = metav1.ConditionTrue
	}
	errs := []error{testenv.CheckCondition(p.Status.Conditions, "Ready", ready, reason)}
	for _, s := range []string{"Stalled", "Reconciling"} {
		if s == state {
			errs = append(errs, testenv.CheckCondition(p.Status.Conditions, s, metav1.ConditionTrue, reason))
		} else {
			errs = append(errs, testenv.CheckAbsent(p.Status.Conditions, s))
		}
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c == nil || !strings.Contains(c.Message, says) {
		errs = append(errs, fmt.Errorf("Ready says %q, want it to say %q", testenv.Describe(p.Status.Conditions), says))
	}
	return errors.Join(errs...)
}

// recreateRemote makes the remote cluster's ClusterNetwork again with other ranges (they
// are immutable), with gws as its gateways.
func recreateRemote(t *testing.T, pods, services string, gws ...fabricv1.GatewayStatus) {
	t.Helper()
	ctx := context.Background()
	cn := &fabricv1.ClusterNetwork{}
	if err := remote.Client.Get(ctx, client.ObjectKey{Name: "default"}, cn); err != nil {
		t.Fatal(err)
	}
	if err := remote.Client.Delete(ctx, cn); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, remote.Client, clusterNetwork("remote", pods, services))
	setStatusGateways(t, remote, gws...)
}

// setOverlap sets this cluster's spec.overlap.
func setOverlap(t *testing.T, o fabricv1.OverlapSpec) {
	t.Helper()
	cn := &fabricv1.ClusterNetwork{}
	if err := local.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, cn); err != nil {
		t.Fatal(err)
	}
	cn.Spec.Overlap = o
	if err := local.Client.Update(context.Background(), cn); err != nil {
		t.Fatal(err)
	}
}

// setStatusGateways writes the ClusterNetwork's status.gateways in env, as the operator
// would from its gateways' Leases and FabricGateways.
func setStatusGateways(t *testing.T, env *testenv.Env, gws ...fabricv1.GatewayStatus) {
	t.Helper()
	cn := &fabricv1.ClusterNetwork{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, cn); err != nil {
		t.Fatal(err)
	}
	cn.Status.Gateways = gws
	if err := env.Client.Status().Update(context.Background(), cn); err != nil {
		t.Fatal(err)
	}
}

func startController(t *testing.T) {
	mgr, err := ctrl.NewManager(local.Config, ctrl.Options{
		Scheme:  operator.NewScheme(),
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{"weft-system": {}}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Short resync and backoff keep the test quick; a long RetryMax proves that fixing the
	// Secret is noticed through the watch, not by waiting.
	r := &clusterpeer.Reconciler{Client: mgr.GetClient(),
		Options: clusterpeer.Options{Namespace: "weft-system", Resync: 2 * time.Second, RetryBase: 200 * time.Millisecond, RetryMax: time.Hour}}
	if err := r.SetupWithManager(context.Background(), mgr); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)
}

func waitPeer(t *testing.T, name string, check func(*fabricv1.ClusterPeer) error) *fabricv1.ClusterPeer {
	t.Helper()
	p := &fabricv1.ClusterPeer{}
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := local.Client.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
			return err
		}
		if p.Status.ObservedGeneration != p.Generation {
			return errors.New("status not observed yet")
		}
		return check(p)
	})
	return p
}

func clusterNetwork(id, pods, services string) *fabricv1.ClusterNetwork {
	return &fabricv1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: id,
			PodCIDRs: []fabricv1.CIDR{fabricv1.CIDR(pods)}, ServiceCIDRs: []fabricv1.CIDR{fabricv1.CIDR(services)}},
	}
}

func peer(name, clusterID, secret, key string) *fabricv1.ClusterPeer {
	return &fabricv1.ClusterPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: fabricv1.ClusterPeerSpec{ClusterID: clusterID,
			KubeconfigSecretRef: fabricv1.SecretKeyRef{Namespace: "weft-system", Name: secret, Key: key}},
	}
}

func mustCreate(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), o); err != nil {
		t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

func userKubeconfig(t *testing.T, e *testenv.Env, name string, groups ...string) []byte {
	t.Helper()
	kc, _, err := e.User(name, groups...)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// edit rewrites a kubeconfig.
func edit(t *testing.T, kc []byte, fn func(cfg *clientcmdapi.Config)) []byte {
	t.Helper()
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	fn(cfg)
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func withServer(t *testing.T, kc []byte, server string) []byte {
	return edit(t, kc, func(cfg *clientcmdapi.Config) {
		for _, c := range cfg.Clusters {
			c.Server = server
		}
	})
}

func withToken(t *testing.T, kc []byte, token string) []byte {
	return edit(t, kc, func(cfg *clientcmdapi.Config) {
		for _, u := range cfg.AuthInfos {
			u.ClientCertificateData, u.ClientKeyData, u.Token = nil, nil, token
		}
	})
}

func withExec(t *testing.T, kc []byte, marker string) []byte {
	return edit(t, kc, func(cfg *clientcmdapi.Config) {
		for _, u := range cfg.AuthInfos {
			u.ClientCertificateData, u.ClientKeyData = nil, nil
			u.Exec = &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: "/bin/sh",
				Args: []string{"-c", "touch " + marker}, InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
		}
	})
}
