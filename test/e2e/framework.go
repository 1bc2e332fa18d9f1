package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// Lab is a running lab as the specs see it.
type Lab struct {
	Name, State, Kubeconfig, Kubectl, Weftctl string
	Clusters                                  []string // contexts: weft-1, weft-2, ...
	upArgs                                    []string
	linksBefore                               string // host links before the first up
}

// restConfig is the client configuration of a cluster (context) of the lab's kubeconfig.
func (l *Lab) restConfig(t testing.TB, cluster string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: l.Kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: cluster}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS = -1 // no client-side throttling: the benchmarks make thousands of objects at once
	return cfg
}

// Client returns a clientset for a cluster (context).
func (l *Lab) Client(t testing.TB, cluster string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(l.restConfig(t, cluster))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func init() {
	// controller-runtime's clients log through this (it complains once if never set).
	ctrllog.SetLogger(klog.NewKlogr())
}

// CRClient returns a controller-runtime client for a cluster (context) that knows the
// Kubernetes, weft and MCS types.
func (l *Lab) CRClient(t testing.TB, cluster string) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := fabricv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := mcsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(l.restConfig(t, cluster), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Kubectl runs the real kubectl against a cluster and returns its output and exit code.
func (l *Lab) KubectlRun(cluster, stdin string, args ...string) (string, int) {
	cmd := exec.Command(l.Kubectl, append([]string{"--kubeconfig", l.Kubeconfig, "--context", cluster}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	code := 0
	ee := &exec.ExitError{}
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return string(out), code
}

// MustKubectl runs kubectl and fails the test on a non-zero exit.
func (l *Lab) MustKubectl(t testing.TB, cluster, stdin string, args ...string) string {
	t.Helper()
	out, code := l.KubectlRun(cluster, stdin, args...)
	if code != 0 {
		t.Fatalf("kubectl %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// Eventually polls fn every 200 ms until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitPodReady waits for a pod to be Ready and returns it.
func WaitPodReady(t testing.TB, cs kubernetes.Interface, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	Eventually(t, timeout, func() error {
		var err error
		pod, err = cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("pod %s/%s not ready: phase %s, %s", ns, name, pod.Status.Phase, describeContainers(pod))
	})
	return pod
}

func describeContainers(pod *corev1.Pod) string {
	var b strings.Builder
	for _, cs := range pod.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			fmt.Fprintf(&b, "[%s waiting %s: %s] ", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			fmt.Fprintf(&b, "[%s terminated %d %s: %s] ", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason, cs.State.Terminated.Message)
		case cs.State.Running != nil:
			fmt.Fprintf(&b, "[%s running ready=%v] ", cs.Name, cs.Ready)
		}
	}
	return b.String()
}

// repoRoot finds the module root.
func repoRoot(t testing.TB) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = filepath.Dir(dir)
	}
}

// labDeps runs hack/lab-deps.sh and returns its KEY=value lines.
func labDeps(t testing.TB, root string) map[string]string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "hack", "lab-deps.sh"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/lab-deps.sh: %v\n%s", err, errOut.String())
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vals[k] = v
		}
	}
	return vals
}
