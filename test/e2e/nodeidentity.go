package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// NodeIdentityInput is the input of NodeIdentity.
type NodeIdentityInput struct {
	Lab     *Lab
	Cluster string
}

// NodeIdentity plays two attacks on the trust between nodes. First, with the token of the
// agent (and the gateway) running on node 1 — bound to its pod, as the lab kubelet mounts
// it — it tries to change node 2's objects and any node's pod blocks: every try is refused,
// the admission policy's refusals naming the policy and the rule. Second, with the operator
// stopped (so nobody repairs them), FabricNodes of nodes that claim node 2's block,
// 0.0.0.0/0 and the metadata address appear: every node's agent refuses all three (its
// FabricNode says so, and why) and no node's routes change.
func NodeIdentity(t *testing.T, in NodeIdentityInput) {
	ctx := context.Background()
	cs := in.Lab.Client(t, in.Cluster)
	admin := in.Lab.CRClient(t, in.Cluster)
	node1, node2 := in.Cluster+"-node-1", in.Cluster+"-node-2"

	t.Log("the agent on node 1 reports on its own FabricNode; node 2's and any node's blocks are refused to it")
	agent := in.Lab.podIdentity(t, in.Cluster, "weft-agent", node1)
	statusPatch := func(c client.Client, obj client.Object, field, value string) error {
		return c.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"status":{%q:%q}}`, field, value)))
	}
	own := &fabricv1.FabricNode{}
	if err := admin.Get(ctx, client.ObjectKey{Name: node1}, own); err != nil {
		t.Fatal(err)
	}
	if err := statusPatch(agent, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node1}}, "datapath", string(own.Status.Datapath)); err != nil {
		t.Errorf("the agent of %s reporting on its own FabricNode: %v", node1, err)
	}
	refusedBy := func(err error, wants ...string) error {
		if err == nil {
			return errors.New("allowed")
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				return fmt.Errorf("refused with %q, which does not say %q", err.Error(), w)
			}
		}
		return nil
	}
	if err := refusedBy(statusPatch(agent, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node2}}, "datapath", "ovs"),
		"ValidatingAdmissionPolicy 'weft-node-identity'", "may change only its own node's fabricnodes, not "+node2+"'s"); err != nil {
		t.Errorf("the agent of %s reporting on %s's FabricNode: %v", node1, node2, err)
	}
	for _, n := range []string{node1, node2} {
		err := agent.Patch(ctx, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: n}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"podCIDRs":["0.0.0.0/0"]}}`)))
		if !apierrors.IsForbidden(err) {
			t.Errorf("the agent of %s changing %s's blocks: %v, want forbidden", node1, n, err)
		}
	}
	gateways := &fabricv1.FabricGatewayList{}
	if err := admin.List(ctx, gateways); err != nil {
		t.Fatal(err)
	}
	if len(gateways.Items) >= 2 {
		mine, other := gateways.Items[0].Name, gateways.Items[1].Name
		t.Logf("the gateway on %s may not report on %s's FabricGateway nor renew its Lease", mine, other)
		gw := in.Lab.podIdentity(t, in.Cluster, "weft-gateway", mine)
		if err := refusedBy(statusPatch(gw, &fabricv1.FabricGateway{ObjectMeta: metav1.ObjectMeta{Name: other}}, "endpoint", "192.0.2.1:51820"),
			"weft-node-identity", "not "+other+"'s"); err != nil {
			t.Errorf("the gateway of %s reporting on %s's FabricGateway: %v", mine, other, err)
		}
		lease := &coordinationv1.Lease{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: fabricv1.GatewayLeaseName(other)}, lease); err != nil {
			t.Fatal(err)
		}
		lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()} // as if it were alive
		if err := refusedBy(gw.Update(ctx, lease), "may renew only its own Lease"); err != nil {
			t.Errorf("the gateway of %s renewing %s's Lease: %v", mine, other, err)
		}
	}

	t.Log("with the operator stopped, nodes claim node 2's block, 0.0.0.0/0 and the metadata address")
	victim := &fabricv1.FabricNode{}
	if err := admin.Get(ctx, client.ObjectKey{Name: node2}, victim); err != nil {
		t.Fatal(err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	routesBefore := map[string]string{}
	for _, n := range nodes.Items {
		routesBefore[n.Name] = in.Lab.weftRoutes(t, n.Name)
	}
	stopOperator(t, in.Lab, in.Cluster)
	claims := map[string]fabricv1.CIDR{"e2e-thief-block": victim.Spec.PodCIDRs[0], "e2e-thief-all": "0.0.0.0/0",
		"e2e-thief-metadata": "169.254.169.254/32"}
	wantReason := map[string]string{"e2e-thief-block": fabricv1.BlockOverlaps, "e2e-thief-all": fabricv1.BlockOutsidePodCIDRs,
		"e2e-thief-metadata": fabricv1.BlockOutsidePodCIDRs}
	ip := 240
	for name, cidr := range claims {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
		// An address on the lab's underlay that nobody holds: a route to it would black-hole.
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.%s.%d", in.Cluster[len(in.Cluster)-1:], ip)}}
		ip++
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{cidr}}}
		if err := admin.Create(ctx, fn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Delete(context.Background(), fn) })
	}
	for n := range routesBefore {
		Eventually(t, 30*time.Second, func() error {
			fn := &fabricv1.FabricNode{}
			if err := admin.Get(ctx, client.ObjectKey{Name: n}, fn); err != nil {
				return err
			}
			got := map[string]string{}
			for _, r := range fn.Status.RefusedBlocks {
				got[r.Node+" "+r.CIDR] = r.Reason
			}
			for name, cidr := range claims {
				if got[name+" "+string(cidr)] != wantReason[name] {
					return fmt.Errorf("node %s refused %v, want %s's %s refused as %s", n, fn.Status.RefusedBlocks, name, cidr, wantReason[name])
				}
			}
			return nil
		})
		if after := in.Lab.weftRoutes(t, n); after != routesBefore[n] {
			t.Errorf("node %s: weft's routes changed\nbefore:\n%s\nafter:\n%s", n, routesBefore[n], after)
		}
	}
	t.Log("every node refused all three and routes as before")
}

// podIdentity is a client acting with the service account token of the named DaemonSet's pod
// on node, bound to that pod (as the lab kubelet mounts it), and nothing else: no client
// certificate.
func (l *Lab) podIdentity(t testing.TB, cluster, daemonSet, node string) client.Client {
	t.Helper()
	ctx := context.Background()
	cs := l.Client(t, cluster)
	pods, err := cs.CoreV1().Pods("weft-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + daemonSet, FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("the %s pod on %s: %v (%d found)", daemonSet, node, err, len(pods.Items))
	}
	pod := pods.Items[0]
	tok, err := cs.CoreV1().ServiceAccounts("weft-system").CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin := l.restConfig(t, cluster)
	cfg := &rest.Config{Host: admin.Host, BearerToken: tok.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData, CAFile: admin.CAFile, ServerName: admin.ServerName}}
	c, err := client.New(cfg, client.Options{Scheme: l.CRClient(t, cluster).Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// weftRoutes are the routes weft's datapaths installed on a node (protocols 87 and 88, every
// table), sorted.
func (l *Lab) weftRoutes(t testing.TB, node string) string {
	t.Helper()
	var lines []string
	for _, proto := range []string{"87", "88"} {
		out, err := exec.Command("ip", "-n", l.nodeNetns(node).Name, "-o", "route", "show", "table", "all", "proto", proto).CombinedOutput()
		if err != nil {
			t.Fatalf("node %s: ip route: %v: %s", node, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" {
				lines = append(lines, line)
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// stopOperator scales the weft-operator to none until the test ends (the data plane does not
// need it), then back to what it was, waiting for it to be available again.
func stopOperator(t *testing.T, l *Lab, cluster string) {
	t.Helper()
	ctx := context.Background()
	cs := l.Client(t, cluster)
	d, err := cs.AppsV1().Deployments("weft-system").Get(ctx, "weft-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	scale := func(n int32) error {
		_, err := cs.AppsV1().Deployments("weft-system").Patch(ctx, "weft-operator", types.MergePatchType,
			fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n), metav1.PatchOptions{})
		return err
	}
	if err := scale(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := scale(replicas); err != nil {
			t.Errorf("scaling the operator back: %v", err)
			return
		}
		Eventually(t, 2*time.Minute, func() error {
			d, err := cs.AppsV1().Deployments("weft-system").Get(ctx, "weft-operator", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if d.Status.AvailableReplicas < replicas {
				return fmt.Errorf("weft-operator: %d of %d replicas available", d.Status.AvailableReplicas, replicas)
			}
			return nil
		})
	})
	Eventually(t, 2*time.Minute, func() error {
		pods, err := cs.CoreV1().Pods("weft-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-operator"})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d operator pods left", len(pods.Items))
		}
		return nil
	})
}
