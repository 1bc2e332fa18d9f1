// Command demo runs the foundation demo (`make demo`): two local control planes (a real
// kube-apiserver and etcd each, the envtest binaries), the weft-operator binary against
// each, the samples applied, and the clusters peered with read-only credentials. It prints
// what users see with kubectl, then tears everything down (WEFT_DEMO_KEEP=1 keeps it up
// until Ctrl-C). The multi-node lab replaces it (`weftctl lab`).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/conditions"
	"github.com/weft-net/weft/internal/testenv"
)

type cluster struct {
	id, other  string
	pods, svcs string
	env        *testenv.Env
	kubeconfig string
	operator   *exec.Cmd
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, ".demo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	assets, err := testenv.Assets()
	if err != nil {
		return err
	}
	kubectl := filepath.Join(assets, "kubectl")

	step("building weft-operator")
	opBin := filepath.Join(dir, "weft-operator")
	if out, err := exec.Command("go", "build", "-o", opBin, "./cmd/operator").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}

	clusters := []*cluster{
		{id: "cluster-1", other: "cluster-2", pods: "10.244.0.0/16", svcs: "10.96.0.0/16"},
		{id: "cluster-2", other: "cluster-1", pods: "10.245.0.0/16", svcs: "10.97.0.0/16"},
	}
	defer func() {
		for _, c := range clusters {
			c.stop()
		}
	}()
	for i, c := range clusters {
		step("starting " + c.id + ": kube-apiserver " + "and etcd")
		if c.env, err = testenv.Start(); err != nil {
			return err
		}
		kc, _, err := c.env.User("demo-admin", "system:masters")
		if err != nil {
			return err
		}
		c.kubeconfig = filepath.Join(dir, c.id+".kubeconfig")
		if err := os.WriteFile(c.kubeconfig, kc, 0o600); err != nil {
			return err
		}
		port := 9443 + i
		objs, err := testenv.Kustomize("config/dev", "127.0.0.1:9443", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		if err := testenv.Apply(ctx, c.env.Client, objs...); err != nil {
			return err
		}
		step("starting weft-operator for " + c.id + " (log: .demo/" + c.id + "-operator.log)")
		log, err := os.Create(filepath.Join(dir, c.id+"-operator.log"))
		if err != nil {
			return err
		}
		c.operator = exec.Command(opBin, "--kubeconfig", c.kubeconfig, "--webhook-host=127.0.0.1",
			"--webhook-port", strconv.Itoa(port), "--webhook-cert-dir", filepath.Join(dir, c.id+"-certs"),
			"--metrics-bind-address=0", "--health-probe-bind-address=0", "--peer-resync=5s")
		c.operator.Stdout, c.operator.Stderr = log, log
		if err := c.operator.Start(); err != nil {
			return err
		}
	}

	for _, c := range clusters {
		step("applying config/samples to " + c.id + " and peering it with " + c.other)
		objs, err := testenv.Kustomize("config/samples",
			"cluster-2", c.other, "cluster-1", c.id, "10.244.0.0/16", c.pods, "10.96.0.0/16", c.svcs)
		if err != nil {
			return err
		}
		if err := applyWhenWebhookReady(ctx, c.env.Client, objs); err != nil {
			return err
		}
		if err := issuePeerCredential(ctx, c, peerOf(clusters, c)); err != nil {
			return err
		}
	}

	step("waiting for every ClusterNetwork and ClusterPeer to be Ready")
	for _, c := range clusters {
		if err := waitReady(ctx, c); err != nil {
			return err
		}
	}

	for _, c := range clusters {
		fmt.Printf("\n\033[1m$ kubectl --kubeconfig .demo/%s.kubeconfig get clusternetworks,tiers,clusterpeers\033[0m\n", c.id)
		show(kubectl, c.kubeconfig, "get", "clusternetworks,tiers,clusterpeers")
	}
	fmt.Printf("\n\033[1m$ kubectl --kubeconfig .demo/cluster-1.kubeconfig get clusterpeer cluster-2 -o jsonpath='{range .status.conditions[*]}...'\033[0m\n")
	show(kubectl, clusters[0].kubeconfig, "get", "clusterpeer", "cluster-2", "-o",
		`jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}`)
	fmt.Printf("\n\033[1m# bad input gets a clear answer: a second tier at priority 250\033[0m\n")
	show(kubectl, clusters[0].kubeconfig, "create", "-f", "-", "<<", "apiVersion: fabric.weft.dev/v1alpha1\nkind: Tier\nmetadata: {name: shadow}\nspec: {priority: 250}\n")

	if os.Getenv("WEFT_DEMO_KEEP") == "" {
		fmt.Println("\ndone; run with WEFT_DEMO_KEEP=1 to keep the clusters up and try kubectl yourself.")
		return nil
	}
	fmt.Println("\nclusters are up; kubeconfigs in .demo/. Ctrl-C stops everything.")
	<-ctx.Done()
	return nil
}

func step(s string) { fmt.Println("\033[36m>>\033[0m " + s) }

func peerOf(all []*cluster, c *cluster) *cluster {
	for _, o := range all {
		if o.id == c.other {
			return o
		}
	}
	return nil
}

// applyWhenWebhookReady applies objects, retrying while the operator's webhook starts.
func applyWhenWebhookReady(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := testenv.Apply(ctx, c, objs...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// issuePeerCredential gives peer a read-only user in c, and stores its kubeconfig in peer's
// weft-system namespace under the name the ClusterPeer sample refers to.
func issuePeerCredential(ctx context.Context, c, peer *cluster) error {
	user := "weft-peer-" + peer.id
	objs := []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "weft-peer-reader"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"fabric.weft.dev"},
				Resources: []string{"clusternetworks"}, Verbs: []string{"get", "list", "watch"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "weft-peer-reader"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}}},
	}
	for _, o := range objs {
		if err := c.env.Client.Create(ctx, o); err != nil && !strings.Contains(err.Error(), "already exists") {
			return err
		}
	}
	kc, _, err := c.env.User(user)
	if err != nil {
		return err
	}
	return peer.env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "peer-" + c.id},
		Data:       map[string][]byte{"kubeconfig": kc},
	})
}

func waitReady(ctx context.Context, c *cluster) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		cn := &fabricv1.ClusterNetwork{}
		peer := &fabricv1.ClusterPeer{}
		errCN := c.env.Client.Get(ctx, client.ObjectKey{Name: "default"}, cn)
		errPeer := c.env.Client.Get(ctx, client.ObjectKey{Name: c.other}, peer)
		if errCN == nil && errPeer == nil && conditions.IsReady(cn.Status.Conditions) && conditions.IsReady(peer.Status.Conditions) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("%s not ready after 90s: ClusterNetwork %s; ClusterPeer %s", c.id,
				testenv.Describe(cn.Status.Conditions), testenv.Describe(peer.Status.Conditions)), errCN, errPeer)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// show runs kubectl and prints its output (a "<<" argument feeds the next one on stdin).
func show(kubectl, kubeconfig string, args ...string) {
	var stdin string
	if i := indexOf(args, "<<"); i >= 0 {
		stdin, args = args[i+1], args[:i]
	}
	cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, _ := cmd.CombinedOutput()
	fmt.Print(string(out))
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func (c *cluster) stop() {
	if c.operator != nil && c.operator.Process != nil {
		_ = c.operator.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.operator.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.operator.Process.Kill()
			<-done
		}
	}
	if c.env != nil {
		_ = c.env.Stop()
	}
}
