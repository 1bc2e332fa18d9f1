package node_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/testenv"
	"github.com/weft-net/weft/lab/router"
)

// TestAgentWaitsForItsBlockOnWatches: an agent whose node has no pod block yet waits on its
// informer cache's watches — it asks the API server nothing while it waits (the agent that
// polled asked for the ClusterNetwork, its Node and its FabricNode every second) — and is
// ready as soon as the operator gives the block.
func TestAgentWaitsForItsBlockOnWatches(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	const name = "wait-1"
	n := newNodeWaiting(t, sw, name, "172.29.20.11", "")
	waitLog(t, n, "a pod block for node "+name, 30*time.Second)
	gets := func() float64 {
		return apiRequests(t, "GET", "clusternetworks") + apiRequests(t, "GET", "nodes") + apiRequests(t, "GET", "fabricnodes")
	}
	before := gets()
	time.Sleep(3 * time.Second)
	if d := gets() - before; d > 0 {
		t.Errorf("the waiting agent sent %v GETs of the ClusterNetwork, nodes or FabricNodes in 3 s; want none (it waits on watches)", d)
	}
	given := time.Now()
	setBlock(t, name, "10.99.20.0/24")
	n.waitReady(n.launched)
	t.Logf("ready %v after the block was given", time.Since(given).Round(time.Millisecond))
}

// TestBGPPasswordSecretIsWatched: spec.bgp names a password Secret that does not exist yet.
// The agent says so on its BGPNode and waits on a watch of that one Secret, sending no GET
// for it meanwhile, and the session to the router, which wants the password, comes up once
// the Secret is made. (The agent before read the Secret only when the ClusterNetwork, a Node
// or a FabricNode changed: a Secret made after them was not read until one did.)
func TestBGPPasswordSecretIsWatched(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	sw := netnstest.NewSwitch(t)
	rns := netnstest.New(t, "rtrpw")
	routerIP, nodeIP := netip.MustParseAddr("172.29.21.254"), netip.MustParseAddr("172.29.21.11")
	block := netip.MustParsePrefix("10.99.21.0/24")
	sw.Plug(t, rns, "r", routerIP.String()+"/24")
	const password, secret, ns = "weft-node-pw", "tor-pw", "default"
	rc := router.Config{Kind: router.Kinds[0], Dir: filepath.Join(t.TempDir(), "rtr"), Netns: rns.Name, ASN: 65000, RouterID: routerIP,
		Neighbors: netip.PrefixFrom(routerIP, 24).Masked(), NeighborASN: 64512, Peers: []netip.Addr{nodeIP}, Password: password}
	stop, err := rc.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	setCN(t, func(s *fabricv1.ClusterNetworkSpec) {
		s.BGP = &fabricv1.BGPSpec{ASN: 64512, ListenPort: 179, Advertise: fabricv1.BGPAdvertise{PodBlocks: true},
			Peers: []fabricv1.BGPPeer{{Name: "tor", Address: routerIP.String(), ASN: 65000, Port: 179, HoldTimeSeconds: 9, KeepaliveSeconds: 3,
				PasswordSecretRef: &fabricv1.LocalSecretKeyRef{Name: secret, Key: "password"}}}}
	})
	const name = "bgppw-1"
	newNode(t, sw, name, nodeIP.String(), block.String(), "--namespace="+ns)
	testenv.Eventually(t, 30*time.Second, func() error {
		b := &fabricv1.BGPNode{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, b); err != nil {
			return err
		}
		if len(b.Status.Peers) != 1 || !strings.Contains(b.Status.Peers[0].LastError, "not found") {
			return fmt.Errorf("BGPNode %s does not say the Secret is missing: %+v", name, b.Status)
		}
		return nil
	})
	before := apiRequests(t, "GET", "secrets")
	time.Sleep(3 * time.Second)
	if d := apiRequests(t, "GET", "secrets") - before; d > 0 {
		t.Errorf("the agent sent %v GETs of Secrets in 3 s while its password Secret was missing; want none (it watches the Secret)", d)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secret}, StringData: map[string]string{"password": password}}
	if err := env.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), s) })
	made := time.Now()
	if err := rc.WaitRoute(ctx, block, []netip.Addr{nodeIP}, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("the block reached the router %v after the Secret was made", time.Since(made).Round(time.Millisecond))
}

// waitLog waits until the node's agent log has want.
func waitLog(t *testing.T, n *simNode, want string, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, within, func() error {
		data, _ := os.ReadFile(n.logPath())
		if !bytes.Contains(data, []byte(want)) {
			return fmt.Errorf("%s: the agent's log has no %q yet:\n%s", n.name, want, tail(data, 2048))
		}
		return nil
	})
}

// apiRequests is the API server's count of requests of verb for resource (any group, code
// or scope) from its apiserver_request_total.
func apiRequests(t *testing.T, verb, resource string) float64 {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `verb="`+verb+`"`) ||
			!strings.Contains(line, `resource="`+resource+`"`) {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}
