package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InstallInput is the input of InstallWeft.
type InstallInput struct {
	Lab     *Lab
	Cluster string
	// PodCIDR and ServiceCIDR of the cluster's ClusterNetwork.
	PodCIDR, ServiceCIDR string
}

// InstallWeft installs the operator from config/default exactly as a user would, and checks
// that it runs in the cluster: both replicas Ready (in-cluster credentials, Service routing),
// the built-in tiers created (the leader's controllers), a ClusterNetwork reconciled, and
// the admission webhook answering through its Service.
func InstallWeft(t testing.TB, in InstallInput) {
	ctx := context.Background()
	root := repoRoot(t)
	cs := in.Lab.Client(t, in.Cluster)
	in.Lab.MustKubectl(t, in.Cluster, "", "apply", "--server-side", "-k", root+"/config/default")
	Eventually(t, 3*time.Minute, func() error {
		d, err := cs.AppsV1().Deployments("weft-system").Get(ctx, "weft-operator", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 2 {
			pods, _ := in.Lab.KubectlRun(in.Cluster, "", "-n", "weft-system", "get", "pods", "-o", "wide")
			return fmt.Errorf("weft-operator: %d/2 replicas ready\n%s", d.Status.ReadyReplicas, pods)
		}
		return nil
	})
	Eventually(t, time.Minute, func() error {
		out, code := in.Lab.KubectlRun(in.Cluster, "", "get", "tiers", "-o", "name")
		if code != 0 || !strings.Contains(out, "tier.fabric.weft.dev/application") {
			return fmt.Errorf("built-in tiers not there: %s", out)
		}
		return nil
	})
	cn := fmt.Sprintf(`apiVersion: fabric.weft.dev/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec: {clusterID: %s, podCIDRs: [%s], serviceCIDRs: [%s]}
`, in.Cluster, in.PodCIDR, in.ServiceCIDR)
	in.Lab.MustKubectl(t, in.Cluster, cn, "apply", "-f", "-")
	in.Lab.MustKubectl(t, in.Cluster, "", "wait", "--for=condition=Ready", "--timeout=60s", "clusternetwork/default")
	// The API server reaches the webhook at the operator pods' addresses.
	out, code := in.Lab.KubectlRun(in.Cluster, "apiVersion: fabric.weft.dev/v1alpha1\nkind: Tier\nmetadata: {name: shadow}\nspec: {priority: 250}\n", "create", "-f", "-")
	if code == 0 || !strings.Contains(out, `already held by tier "application"`) {
		t.Errorf("duplicate tier priority through the in-cluster webhook: exit %d: %s", code, out)
	}
}

// PeerInput is the input of PeerJoin.
type PeerInput struct {
	Lab      *Lab
	From, To string
	// ToPodCIDR is what From's ClusterPeer must report the peer advertises.
	ToPodCIDR string
}

// PeerJoin peers two clusters with `weftctl peer join` and checks that each operator reads
// the other's API server (across the lab's underlay) with the issued credential.
func PeerJoin(t testing.TB, in PeerInput) {
	out, err := exec.Command(in.Lab.Weftctl, "peer", "join", "--kubeconfig", in.Lab.Kubeconfig, "--from", in.From, "--to", in.To).CombinedOutput()
	if err != nil {
		t.Fatalf("weftctl peer join: %v\n%s", err, out)
	}
	for _, side := range [][2]string{{in.From, in.To}, {in.To, in.From}} {
		in.Lab.MustKubectl(t, side[0], "", "wait", "--for=condition=Connected", "--timeout=60s", "clusterpeer/"+side[1])
		in.Lab.MustKubectl(t, side[0], "", "wait", "--for=condition=Ready", "--timeout=60s", "clusterpeer/"+side[1])
	}
	got := in.Lab.MustKubectl(t, in.From, "", "get", "clusterpeer", in.To, "-o", "jsonpath={.status.podCIDRs[0]}")
	if got != in.ToPodCIDR {
		t.Errorf("%s sees %s advertise pod CIDR %q, want %q", in.From, in.To, got, in.ToPodCIDR)
	}
}
