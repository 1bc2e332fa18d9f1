package clusternetwork_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	aboutv1 "github.com/weft-net/weft/api/about/v1beta1"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/controllers/clusternetwork"
	"github.com/weft-net/weft/controllers/gatewaystatus"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/render"
	"github.com/weft-net/weft/internal/testenv"
	"github.com/weft-net/weft/internal/version"
)

var env *testenv.Env

// namespace is created by testenv.
const namespace = "weft-system"

var images = render.Images{Agent: "weft.dev/agent:test", OVS: "weft.dev/ovs:test", Gateway: "weft.dev/gateway:test", DNS: "weft.dev/dns:test"}

func TestMain(m *testing.M) { testenv.Main(m, &env) }

func startController(t *testing.T, opts ...func(*clusternetwork.Options)) {
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  operator.NewScheme(),
		Metrics: metricsserver.Options{BindAddress: "0"},
		// Each test runs its own manager, one after the other.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &clusternetwork.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Options: clusternetwork.Options{Backends: []fabricv1.DatapathBackend{fabricv1.DatapathOVS},
			Namespace: namespace, Images: images}}
	for _, o := range opts {
		o(&r.Options)
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	// The gateway list is its own controller; the suite runs it beside.
	if err := (&gatewaystatus.Reconciler{Client: mgr.GetClient(), Namespace: namespace}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	testenv.RunManager(t, mgr)
}

// waitFor waits until the ClusterNetwork's status describes its current generation and
// check passes.
func waitFor(t *testing.T, check func(cn *fabricv1.ClusterNetwork) error) *fabricv1.ClusterNetwork {
	t.Helper()
	cn := &fabricv1.ClusterNetwork{}
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, cn); err != nil {
			return err
		}
		if cn.Status.ObservedGeneration != cn.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", cn.Status.ObservedGeneration, cn.Generation)
		}
		if cn.Status.OperatorVersion != version.Version {
			return fmt.Errorf("status.operatorVersion %q, want the operator's release %s", cn.Status.OperatorVersion, version.Version)
		}
		return check(cn)
	})
	return cn
}

func TestClusterNetworkLifecycle(t *testing.T) {
	ctx := context.Background()
	// A cluster DNS like the lab's (and kubeadm's): CoreDNS's ConfigMap.
	coredns := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"},
		Data: map[string]string{"Corefile": ".:53 {\n    kubernetes cluster.local\n    reload 5s\n}\n"}}
	if err := env.Client.Create(ctx, coredns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, coredns) })
	startController(t)

	cn := &fabricv1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "east",
			PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.244.96.0/20"}},
	}
	if err := env.Client.Create(ctx, cn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, cn) })

	t.Log("service range inside the pod range: Stalled with reason OverlappingCIDR")
	waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return errors.Join(
			testenv.CheckCondition(cn.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonOverlappingCIDR),
			testenv.CheckCondition(cn.Status.Conditions, "Ready", metav1.ConditionFalse, fabricv1.ReasonOverlappingCIDR),
			testenv.CheckAbsent(cn.Status.Conditions, "Reconciling"),
			testenv.CheckHealth(env.Client, cn, kstatus.FailedStatus),
		)
	})

	t.Log("fixed ranges (the service range moves: pod ranges are immutable) but the ebpf backend: Stalled with reason UnsupportedBackend")
	update(t, func(cn *fabricv1.ClusterNetwork) {
		cn.Spec.ServiceCIDRs = []fabricv1.CIDR{"10.96.0.0/16"}
		cn.Spec.Datapath.Backend = fabricv1.DatapathEBPF
	})
	got := waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return testenv.CheckCondition(cn.Status.Conditions, "Stalled", metav1.ConditionTrue, fabricv1.ReasonUnsupportedBackend)
	})
	if msg := got.Status.Conditions[0].Message; !strings.Contains(msg, `"ebpf" is not available`) {
		t.Errorf("message %q does not say ebpf is unavailable", msg)
	}

	t.Log("valid spec: the agents' DaemonSet is applied and the network is Reconciling until it rolls out")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	if err := env.Client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, node) })
	fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{"10.244.0.0/24"}}}
	if err := env.Client.Create(ctx, fn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, fn) })
	update(t, func(cn *fabricv1.ClusterNetwork) { cn.Spec.Datapath.Backend = fabricv1.DatapathOVS })
	waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return errors.Join(
			testenv.CheckCondition(cn.Status.Conditions, "Reconciling", metav1.ConditionTrue, fabricv1.ReasonAgentsRollingOut),
			testenv.CheckCondition(cn.Status.Conditions, "Ready", metav1.ConditionFalse, fabricv1.ReasonAgentsRollingOut),
			testenv.CheckAbsent(cn.Status.Conditions, "Stalled"),
			testenv.CheckHealth(env.Client, cn, kstatus.InProgressStatus),
		)
	})
	ds := &appsv1.DaemonSet{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: render.AgentName}, ds); err != nil {
		t.Fatal(err)
	}
	if owner := metav1.GetControllerOf(ds); owner == nil || owner.Kind != "ClusterNetwork" || owner.Name != "default" {
		t.Errorf("DaemonSet controller reference = %+v, want the ClusterNetwork", owner)
	}
	using := map[string]string{}
	for _, c := range ds.Spec.Template.Spec.Containers {
		using[c.Image] = c.Name
	}
	if using[images.Agent] == "" || using[images.OVS] == "" {
		t.Errorf("DaemonSet containers use images %v, want %s and %s", using, images.Agent, images.OVS)
	}
	if !ds.Spec.Template.Spec.HostNetwork {
		t.Error("agent pods are not hostNetwork")
	}
	gwds := &appsv1.DaemonSet{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: render.GatewayName}, gwds); err != nil {
		t.Fatal(err)
	}
	if sel := gwds.Spec.Template.Spec.NodeSelector; sel[fabricv1.LabelGateway] != "true" || gwds.Spec.Template.Spec.Containers[0].Image != images.Gateway {
		t.Errorf("gateway DaemonSet: node selector %v, image %s", sel, gwds.Spec.Template.Spec.Containers[0].Image)
	}
	dnsDep := &appsv1.Deployment{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: render.DNSName}, dnsDep); err != nil {
		t.Fatal(err)
	}
	if c := dnsDep.Spec.Template.Spec.Containers[0]; c.Image != images.DNS || !strings.Contains(strings.Join(c.Args, " "), "--domain=clusterset.local") {
		t.Errorf("weft-dns Deployment: image %s args %v", c.Image, c.Args)
	}
	// The cluster DNS forwards the clusterset zone to weft-dns's Service.
	dnsSvc := &corev1.Service{}
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: render.DNSName}, dnsSvc); err != nil {
			return err
		}
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data["Corefile"], "clusterset.local:53 {") || !strings.Contains(cm.Data["Corefile"], "forward . "+dnsSvc.Spec.ClusterIP) ||
			!strings.HasPrefix(cm.Data["Corefile"], ".:53 {") {
			return fmt.Errorf("Corefile does not forward the clusterset zone to %s:\n%s", dnsSvc.Spec.ClusterIP, cm.Data["Corefile"])
		}
		return nil
	})
	// KEP-2149's cluster properties: the cluster ID and the clusterset (defaulted).
	checkProperties(t, map[string]string{aboutv1.ClusterIDProperty: "east", aboutv1.ClusterSetProperty: "default"})

	t.Log("the resolvers FQDN rules trust: none without a cluster DNS Service, then its cluster IP, then those the spec names")
	if got := waitFor(t, func(*fabricv1.ClusterNetwork) error { return nil }); len(got.Status.DNSResolvers) != 0 {
		t.Errorf("status.dnsResolvers %v without a cluster DNS Service, want none", got.Status.DNSResolvers)
	}
	kubeDNS := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}}}
	if err := env.Client.Create(ctx, kubeDNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, kubeDNS) })
	resolvers := func(want ...string) {
		t.Helper()
		waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
			if !slices.Equal(cn.Status.DNSResolvers, want) {
				return fmt.Errorf("status.dnsResolvers %v, want %v", cn.Status.DNSResolvers, want)
			}
			return nil
		})
	}
	resolvers(kubeDNS.Spec.ClusterIP) // as the API server allocated it
	update(t, func(cn *fabricv1.ClusterNetwork) {
		cn.Spec.DNS.Resolvers = []fabricv1.IPAddress{"10.96.0.53", "192.0.2.53"}
	})
	resolvers("10.96.0.53", "192.0.2.53")
	bad := cn.DeepCopy()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cn), bad); err != nil {
		t.Fatal(err)
	}
	bad.Spec.DNS.Resolvers = []fabricv1.IPAddress{"dns.example.com"}
	if err := env.Client.Update(ctx, bad); err == nil || !strings.Contains(err.Error(), "must be an IP address") {
		t.Errorf("a resolver that is no address: %v, want refused saying it must be an IP address", err)
	}
	update(t, func(cn *fabricv1.ClusterNetwork) { cn.Spec.DNS.Resolvers = nil })
	resolvers(kubeDNS.Spec.ClusterIP)
	for _, o := range []client.Object{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: render.AgentName}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: render.GatewayName}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: render.AgentName}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: render.AgentName}}} {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Errorf("%T: %v", o, err)
		}
	}

	t.Log("the DaemonSet reports every agent updated and ready (no DaemonSet controller here: the test plays it): Ready")
	testenv.Eventually(t, 10*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ds), ds); err != nil {
			return err
		}
		ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, CurrentNumberScheduled: 1,
			DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberReady: 1, NumberAvailable: 1}
		return env.Client.Status().Update(ctx, ds)
	})
	ready := waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return errors.Join(
			testenv.CheckCondition(cn.Status.Conditions, "Ready", metav1.ConditionTrue, fabricv1.ReasonReconciled),
			testenv.CheckAbsent(cn.Status.Conditions, "Reconciling"),
			testenv.CheckAbsent(cn.Status.Conditions, "Stalled"),
			testenv.CheckHealth(env.Client, cn, kstatus.CurrentStatus),
		)
	})
	if n := ready.Status.Nodes; n == nil || n.Total != 1 || n.WithPodBlock != 1 || n.AgentsDesired != 1 || n.AgentsReady != 1 {
		t.Errorf("status.nodes = %+v, want 1 node with a pod block and 1 of 1 agents ready", n)
	}

	t.Log("changing the datapath settings rolls the agents: Reconciling again")
	before := ds.Spec.Template.Annotations
	update(t, func(cn *fabricv1.ClusterNetwork) { cn.Spec.Datapath.MTU = 1300 })
	waitFor(t, func(cn *fabricv1.ClusterNetwork) error {
		return testenv.CheckCondition(cn.Status.Conditions, "Reconciling", metav1.ConditionTrue, fabricv1.ReasonAgentsRollingOut)
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ds), ds); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) == fmt.Sprint(ds.Spec.Template.Annotations) {
		t.Errorf("pod template annotations unchanged (%v) after a datapath change", before)
	}

	t.Log("a value written by hand is replaced; a new clusterset ID is published")
	p := &aboutv1.ClusterProperty{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: aboutv1.ClusterIDProperty}, p); err != nil {
		t.Fatal(err)
	}
	p.Spec.Value = "someone-else"
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	update(t, func(cn *fabricv1.ClusterNetwork) { cn.Spec.ClusterSetID = "prod.example" })
	checkProperties(t, map[string]string{aboutv1.ClusterIDProperty: "east", aboutv1.ClusterSetProperty: "prod.example"})

	t.Log("deleting the ClusterNetwork takes weft's block out of the Corefile, then the object goes")
	cur := waitFor(t, func(*fabricv1.ClusterNetwork) error { return nil })
	if !slices.Contains(cur.Finalizers, fabricv1.FinalizerClusterDNS) {
		t.Errorf("finalizers %v: the Corefile carries weft's block, so %s should be there", cur.Finalizers, fabricv1.FinalizerClusterDNS)
	}
	if err := env.Client.Delete(ctx, cur); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		err := env.Client.Get(ctx, client.ObjectKey{Name: "default"}, &fabricv1.ClusterNetwork{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("ClusterNetwork still there (%w)", err)
		}
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, cm); err != nil {
			return err
		}
		if cm.Data["Corefile"] != coredns.Data["Corefile"] {
			return fmt.Errorf("Corefile after deletion:\n%s\nwant the original:\n%s", cm.Data["Corefile"], coredns.Data["Corefile"])
		}
		return nil
	})
}

// checkProperties waits until the ClusterProperties have the values in want and belong to
// the ClusterNetwork.
func checkProperties(t *testing.T, want map[string]string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		for name, value := range want {
			p := &aboutv1.ClusterProperty{}
			if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
				return err
			}
			if p.Spec.Value != value {
				return fmt.Errorf("ClusterProperty %s = %q, want %q", name, p.Spec.Value, value)
			}
			if o := metav1.GetControllerOf(p); o == nil || o.Kind != "ClusterNetwork" {
				return fmt.Errorf("ClusterProperty %s is controlled by %+v, want the ClusterNetwork", name, o)
			}
		}
		return nil
	})
}

func update(t *testing.T, mutate func(*fabricv1.ClusterNetwork)) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		cn := &fabricv1.ClusterNetwork{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "default"}, cn); err != nil {
			return err
		}
		mutate(cn)
		return env.Client.Update(context.Background(), cn)
	})
}

func TestGatewaysFollowTheirLeases(t *testing.T) {
	ctx := context.Background()
	startController(t)
	cn := &fabricv1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: fabricv1.ClusterNetworkSpec{ClusterID: "east",
			PodCIDRs: []fabricv1.CIDR{"10.244.0.0/16"}, ServiceCIDRs: []fabricv1.CIDR{"10.96.0.0/16"}},
	}
	if err := env.Client.Create(ctx, cn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, cn) })

	gateways := func(check func([]fabricv1.GatewayStatus) error) {
		t.Helper()
		testenv.Eventually(t, 15*time.Second, func() error {
			got := &fabricv1.ClusterNetwork{}
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "default"}, got); err != nil {
				return err
			}
			return check(got.Status.Gateways)
		})
	}
	healthy := func(want bool) func([]fabricv1.GatewayStatus) error {
		return func(gws []fabricv1.GatewayStatus) error {
			if len(gws) != 1 || gws[0].Node != "gw-1" || gws[0].Healthy != want {
				return fmt.Errorf("gateways %+v, want gw-1 healthy=%v", gws, want)
			}
			if gws[0].Endpoint != "172.30.1.11:51820" || gws[0].PublicKey != "pub-1" || gws[0].Tunnel != fabricv1.TunnelWireGuard {
				return fmt.Errorf("announcement not published: %+v", gws[0])
			}
			return nil
		}
	}
	fg := &fabricv1.FabricGateway{ObjectMeta: metav1.ObjectMeta{Name: "gw-1"}}
	if err := env.Client.Create(ctx, fg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, fg) })
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Labels: map[string]string{fabricv1.LabelGateway: "true"}}}
	if err := env.Client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, node) })
	fg.Status = fabricv1.FabricGatewayStatus{Endpoint: "172.30.1.11:51820", PublicKey: "pub-1", Tunnel: fabricv1.TunnelWireGuard}
	if err := env.Client.Status().Update(ctx, fg); err != nil {
		t.Fatal(err)
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fabricv1.GatewayLeaseName("gw-1"),
		Labels: map[string]string{fabricv1.LabelGateway: "true"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("gw-1"), LeaseDurationSeconds: ptr.To(int32(1)),
			RenewTime: &metav1.MicroTime{Time: time.Now()}}}
	if err := env.Client.Create(ctx, lease); err != nil {
		t.Fatal(err)
	}
	t.Log("a gateway renewing its Lease is published, healthy")
	gateways(healthy(true))
	t.Log("it stops renewing: unhealthy once the Lease expires")
	gateways(healthy(false))
	t.Log("it renews again: healthy")
	testenv.Eventually(t, 5*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
			return err
		}
		lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(30))
		return env.Client.Update(ctx, lease)
	})
	gateways(healthy(true))
	t.Log("its node is taken out of the gateways and it stops: no longer listed (not a failure)")
	testenv.Eventually(t, 5*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
			return err
		}
		lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now().Add(-time.Minute)}
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(1))
		return env.Client.Update(ctx, lease)
	})
	node.Labels = nil
	if err := env.Client.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	gateways(func(gws []fabricv1.GatewayStatus) error {
		if len(gws) != 0 {
			return fmt.Errorf("gateways %+v, want none: gw-1's node is no gateway any more", gws)
		}
		return nil
	})
	t.Log("its Lease is deleted: no longer listed")
	if err := env.Client.Delete(ctx, lease); err != nil {
		t.Fatal(err)
	}
	gateways(func(gws []fabricv1.GatewayStatus) error {
		if len(gws) != 0 {
			return fmt.Errorf("gateways %+v, want none", gws)
		}
		return nil
	})
}
