package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-net/weft/lab/addons"
)

var lookPath = exec.LookPath

// bootstrap applies the add-ons every lab cluster starts with.
func (l *Lab) bootstrap(ctx context.Context, c ClusterLayout, p *clusterPKI) error {
	return ApplyYAML(ctx, p.hostKubeconfig, addons.Manifests(c.ServiceIP(10).String(), "cluster.local"))
}

// ApplyYAML server-side-applies a multi-document YAML stream, retrying while the API server
// is still starting its controllers (the default namespace or RBAC may lag a moment).
func ApplyYAML(ctx context.Context, kubeconfig, manifests string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				break
			}
			return err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	for _, o := range objs {
		var last error
		for attempt := 0; ; attempt++ {
			last = c.Patch(ctx, o, client.Apply, client.FieldOwner("weft-lab"), client.ForceOwnership)
			if last == nil {
				break
			}
			if attempt > 40 || ctx.Err() != nil {
				return fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), last)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return nil
}

// waitReady waits for every node to be Ready and cluster DNS to answer.
func (l *Lab) waitReady(ctx context.Context, c ClusterLayout) error {
	kubeconfig := fmt.Sprintf("%s/admin.kubeconfig", c.Dir)
	cs, err := clientFor(kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamicFor(kubeconfig)
	if err != nil {
		return err
	}
	var why error
	for {
		why = readiness(ctx, cs, dyn, len(c.Nodes), l.opts.CNI == "weft")
		if why == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (logs in %s)", why, LogDir(l.opts.StateDir, c.Name))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func readiness(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, wantNodes int, weft bool) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	weftBlocks := map[string]string{}
	if weft {
		list, err := dyn.Resource(fabricNodesGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("FabricNodes: %w", err)
		}
		for i := range list.Items {
			weftBlocks[list.Items[i].GetName()] = fabricNodeBlocks(&list.Items[i])
		}
	}
	ready := 0
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			hasBlock := n.Spec.PodCIDR != ""
			if weft {
				hasBlock = weftBlocks[n.Name] != ""
			}
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue && hasBlock {
				ready++
			}
		}
	}
	if ready < wantNodes {
		return fmt.Errorf("%d of %d nodes Ready with a pod CIDR", ready, wantNodes)
	}
	if weft {
		ds, err := cs.AppsV1().DaemonSets("weft-system").Get(ctx, "weft-agent", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("weft-agent DaemonSet: %w", err)
		}
		if ds.Status.NumberReady < int32(wantNodes) {
			return fmt.Errorf("%d of %d weft agents ready", ds.Status.NumberReady, wantNodes)
		}
	}
	dep, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !available(dep) {
		return errors.New("CoreDNS is not available yet")
	}
	return nil
}

func available(d *appsv1.Deployment) bool {
	return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= 1
}
