package clusternetwork_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/operator"
	"github.com/weft-net/weft/internal/render"
	"github.com/weft-net/weft/internal/testenv"
)

// as is a client acting as one of weft's node service accounts with a token bound to a pod
// on node (no node: a token without the claim), the way the API server sees a pod-bound
// token: the service account's user, groups and the node-name extra.
func as(t *testing.T, sa, node string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
	if node != "" {
		cfg.Impersonate.Extra = map[string][]string{render.NodeNameClaim: {node}}
	}
	c, err := client.New(cfg, client.Options{Scheme: operator.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNodeWorkloadsWriteOnlyTheirOwnNode: with the policy the operator installs, an agent
// reports on its own node's FabricNode and no other; it cannot touch any node's blocks (its
// role cannot write specs); a token without the node claim writes nothing; a gateway
// creates only its own FabricGateway and renews only its own Lease.
func TestNodeWorkloadsWriteOnlyTheirOwnNode(t *testing.T) {
	ctx := context.Background()
	startController(t)
	goneCN(t)
	createCN(t)
	testenv.Eventually(t, 20*time.Second, func() error {
		return env.Client.Get(ctx, client.ObjectKey{Name: render.NodeIdentityName}, &admissionv1.ValidatingAdmissionPolicyBinding{})
	})
	for _, name := range []string{"own-1", "own-2"} {
		fn := &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: fabricv1.FabricNodeSpec{PodCIDRs: []fabricv1.CIDR{fabricv1.CIDR(fmt.Sprintf("10.244.%s.0/24", name[4:]))}}}
		if err := env.Client.Create(ctx, fn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, fn) })
	}
	report := func(c client.Client, node string) error {
		return c.Status().Patch(ctx, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node}},
			client.RawPatch(types.MergePatchType, []byte(`{"status":{"datapath":"ovs"}}`)))
	}
	refused := func(err error, want string) error {
		if err == nil {
			return errors.New("allowed")
		}
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
			return fmt.Errorf("refused with %w, want a refusal saying %q", err, want)
		}
		return nil
	}
	agent1 := as(t, render.AgentName, "own-1")

	t.Log("the agent on own-1 reports on own-1's FabricNode")
	testenv.Eventually(t, 20*time.Second, func() error { return report(agent1, "own-1") })

	t.Log("it may not report on own-2's: refused, naming the policy and the rule")
	testenv.Eventually(t, 20*time.Second, func() error {
		return refused(report(agent1, "own-2"), render.NodeIdentityName)
	})
	err := report(agent1, "own-2")
	if !strings.Contains(err.Error(), "may change only its own node's fabricnodes, not own-2's") {
		t.Errorf("refusal %q does not say why", err)
	}

	t.Log("nor change any node's blocks, its own included: its role writes no spec")
	for _, node := range []string{"own-1", "own-2"} {
		err := agent1.Patch(ctx, &fabricv1.FabricNode{ObjectMeta: metav1.ObjectMeta{Name: node}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"podCIDRs":["0.0.0.0/0"]}}`)))
		if !apierrors.IsForbidden(err) {
			t.Errorf("agent of own-1 changing %s's blocks: %v, want forbidden", node, err)
		}
	}

	t.Log("a token without the node claim writes nothing")
	if err := refused(report(as(t, render.AgentName, ""), "own-1"), "token bound to their pod"); err != nil {
		t.Error(err)
	}

	t.Log("a gateway creates its own FabricGateway, not another node's")
	gw1 := as(t, render.GatewayName, "own-1")
	mine := &fabricv1.FabricGateway{ObjectMeta: metav1.ObjectMeta{Name: "own-1"}}
	if err := gw1.Create(ctx, mine); err != nil {
		t.Fatalf("the gateway on own-1 creating its FabricGateway: %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, mine) })
	if err := refused(gw1.Create(ctx, &fabricv1.FabricGateway{ObjectMeta: metav1.ObjectMeta{Name: "own-2"}}), "not own-2's"); err != nil {
		t.Error(err)
	}
	t.Log("and renews only its own Lease")
	lease := func(node string) error {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fabricv1.GatewayLeaseName(node)}}
		err := gw1.Create(ctx, l)
		if err == nil {
			t.Cleanup(func() { _ = env.Client.Delete(ctx, l) })
		}
		return err
	}
	if err := lease("own-1"); err != nil {
		t.Errorf("the gateway on own-1 creating its Lease: %v", err)
	}
	if err := refused(lease("own-2"), "may renew only its own Lease"); err != nil {
		t.Error(err)
	}
}
