package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

var metav1GetOptions = metav1.GetOptions{}

const agnhost = "registry.k8s.io/e2e-test-images/agnhost:2.53"

// NodesInput is the input of NodesReady.
type NodesInput struct {
	Lab   *Lab
	Nodes int // per cluster
}

// NodesReady checks that every cluster has its nodes Ready, each with a pod CIDR, an
// InternalIP and a kubelet endpoint.
func NodesReady(t testing.TB, in NodesInput) {
	for _, cluster := range in.Lab.Clusters {
		cs, c := in.Lab.Client(t, cluster), in.Lab.CRClient(t, cluster)
		Eventually(t, 2*time.Minute, func() error {
			nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
			if err != nil {
				return err
			}
			// With weft as the CNI, the blocks are in the nodes' FabricNodes.
			fns := &fabricv1.FabricNodeList{}
			if err := c.List(context.Background(), fns); err != nil && !meta.IsNoMatchError(err) {
				return err
			}
			weftBlock := map[string]bool{}
			for _, fn := range fns.Items {
				weftBlock[fn.Name] = len(fn.Spec.PodCIDRs) > 0
			}
			ready := 0
			for _, n := range nodes.Items {
				// A pod block from kube-controller-manager or, with weft as the CNI, from weft.
				hasBlock := n.Spec.PodCIDR != "" || weftBlock[n.Name]
				ok := hasBlock && n.Status.DaemonEndpoints.KubeletEndpoint.Port == 10250
				hasIP := false
				for _, a := range n.Status.Addresses {
					hasIP = hasIP || a.Type == corev1.NodeInternalIP && strings.HasPrefix(a.Address, "172.30.")
				}
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && ok && hasIP {
						ready++
					}
				}
			}
			if ready != in.Nodes || len(nodes.Items) != in.Nodes {
				return fmt.Errorf("%s: %d of %d nodes Ready with pod CIDR and address (%d registered)", cluster, ready, in.Nodes, len(nodes.Items))
			}
			return nil
		})
	}
}

func namespace(t testing.TB, cs kubernetes.Interface, name string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// ConnectivityInput is the input of Connectivity.
type ConnectivityInput struct {
	Lab       *Lab
	Cluster   string
	Namespace string
}

// Connectivity deploys an echo Deployment spread over the nodes and a client pod, then checks
// pod→pod traffic to every echo pod (across nodes) and pod→Service traffic by DNS name
// (CoreDNS, kube-proxy).
func Connectivity(t *testing.T, in ConnectivityInput) {
	ctx := context.Background()
	cs := in.Lab.Client(t, in.Cluster)
	namespace(t, cs, in.Namespace)
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: in.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: "kubernetes.io/hostname"}}}},
					Containers: []corev1.Container{{Name: "echo", Image: agnhost, Args: []string{"netexec", "--http-port=8080"},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 1}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(in.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: in.Namespace},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services(in.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: in.Namespace},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "client", Image: "busybox:1.36", Command: []string{"sleep", "3600"}}},
			TerminationGracePeriodSeconds: ptr.To(int64(1))}}
	if _, err := cs.CoreV1().Pods(in.Namespace).Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	WaitPodReady(t, cs, in.Namespace, "client", 2*time.Minute)

	var echoes []corev1.Pod
	Eventually(t, 2*time.Minute, func() error {
		pods, err := cs.CoreV1().Pods(in.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return err
		}
		nodes := map[string]bool{}
		echoes = nil
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && podReady(&p) {
				nodes[p.Spec.NodeName] = true
				echoes = append(echoes, p)
			}
		}
		if len(echoes) != 2 || len(nodes) != 2 {
			return fmt.Errorf("want 2 ready echo pods on 2 nodes, have %d on %v", len(echoes), nodes)
		}
		return nil
	})
	for _, p := range echoes {
		// The agnhost hostname endpoint answers with the pod's name: the container runs in the
		// pod's own UTS namespace, reached at the pod's own IP.
		got := in.Lab.MustKubectl(t, in.Cluster, "", "-n", in.Namespace, "exec", "client", "--",
			"wget", "-q", "-O", "-", "http://"+p.Status.PodIP+":8080/hostname")
		if strings.TrimSpace(got) != p.Name {
			t.Errorf("pod→pod %s (%s on %s): got %q, want %q", p.Status.PodIP, p.Name, p.Spec.NodeName, got, p.Name)
		}
	}
	seen := map[string]bool{}
	Eventually(t, time.Minute, func() error {
		out, code := in.Lab.KubectlRun(in.Cluster, "", "-n", in.Namespace, "exec", "client", "--",
			"wget", "-q", "-O", "-", "http://echo/hostname")
		if code != 0 {
			return fmt.Errorf("wget http://echo/hostname: exit %d: %s", code, out)
		}
		seen[strings.TrimSpace(out)] = true
		if len(seen) < 2 {
			return fmt.Errorf("the Service answered only from %v so far", seen)
		}
		return nil
	})
	fqdn := "echo." + in.Namespace + ".svc.cluster.local"
	out := in.Lab.MustKubectl(t, in.Cluster, "", "-n", in.Namespace, "exec", "client", "--", "nslookup", fqdn)
	s, _ := cs.CoreV1().Services(in.Namespace).Get(ctx, "echo", metav1.GetOptions{})
	if !strings.Contains(out, s.Spec.ClusterIP) {
		t.Errorf("nslookup %s does not give the ClusterIP %s:\n%s", fqdn, s.Spec.ClusterIP, out)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// ExecInput is the input of ExecAndLogs.
type ExecInput struct {
	Lab       *Lab
	Cluster   string
	Namespace string
}

// ExecAndLogs checks kubectl exec (output, stdin, exit codes) and kubectl logs (current and
// previous instance), and that env (fieldRef, $(VAR)), ConfigMap volumes and the pod's
// hostname reach the container.
func ExecAndLogs(t *testing.T, in ExecInput) {
	ctx := context.Background()
	cs := in.Lab.Client(t, in.Cluster)
	namespace(t, cs, in.Namespace)
	if _, err := cs.CoreV1().ConfigMaps(in.Namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "greeting"}, Data: map[string]string{"text": "hello from a configmap"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The marker lives in an emptyDir: it outlives a container restart, not the pod.
	script := `echo "started as $(hostname) ip=$POD_IP url=$URL"; cat /config/text; echo; ` +
		`if [ -f /state/restarted ]; then sleep 3600; fi; touch /state/restarted; exit 7`
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: in.Namespace},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sh", "-c", script},
				Env: []corev1.EnvVar{
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "URL", Value: "http://$(POD_IP):80/$(POD_NAME)"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/config"}, {Name: "state", MountPath: "/state"}}}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "greeting"}}}},
				{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		}}
	if _, err := cs.CoreV1().Pods(in.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The first run exits 7; restartPolicy Always runs it again, and the second stays up.
	var p *corev1.Pod
	Eventually(t, 2*time.Minute, func() error {
		p = WaitPodReady(t, cs, in.Namespace, "worker", 2*time.Minute)
		cst := p.Status.ContainerStatuses[0]
		if cst.RestartCount < 1 || cst.LastTerminationState.Terminated == nil {
			return fmt.Errorf("not restarted yet: %s", describeContainers(p))
		}
		if code := cst.LastTerminationState.Terminated.ExitCode; code != 7 {
			t.Fatalf("the first run ended with exit code %d, want 7", code)
		}
		return nil
	})
	wantLine := fmt.Sprintf("started as worker ip=%s url=http://%s:80/worker", p.Status.PodIP, p.Status.PodIP)
	for _, args := range [][]string{{"logs", "worker"}, {"logs", "worker", "--previous"}} {
		// The restarted run may not have written its second line yet.
		Eventually(t, 10*time.Second, func() error {
			out := in.Lab.MustKubectl(t, in.Cluster, "", append([]string{"-n", in.Namespace}, args...)...)
			if !strings.Contains(out, wantLine) || !strings.Contains(out, "hello from a configmap") {
				return fmt.Errorf("kubectl %s:\n%s\nwant %q and the configmap text", strings.Join(args, " "), out, wantLine)
			}
			return nil
		})
	}
	if out, code := in.Lab.KubectlRun(in.Cluster, "", "-n", in.Namespace, "exec", "worker", "--", "sh", "-c", "kill -SEGV $$"); code != 139 {
		t.Errorf("exec of a command killed by SIGSEGV: code %d (want 139, as runtimes report) output %q", code, out)
	}
	if out, code := in.Lab.KubectlRun(in.Cluster, "", "-n", in.Namespace, "exec", "worker", "--", "sh", "-c", "echo out; echo err >&2; exit 3"); code != 3 ||
		!strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Errorf("exec with exit 3: code %d output %q", code, out)
	}
	if out := in.Lab.MustKubectl(t, in.Cluster, "piped through stdin\n", "-n", in.Namespace, "exec", "-i", "worker", "--", "cat"); out != "piped through stdin\n" {
		t.Errorf("exec -i cat: %q", out)
	}
	if out := in.Lab.MustKubectl(t, in.Cluster, "", "-n", in.Namespace, "exec", "worker", "--", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"); out != in.Namespace {
		t.Errorf("service-account namespace file: %q", out)
	}
	out, code := in.Lab.KubectlRun(in.Cluster, "", "-n", in.Namespace, "exec", "worker", "-c", "nope", "--", "true")
	if code == 0 || !strings.Contains(out, "nope") {
		t.Errorf("exec into a missing container: code %d %q", code, out)
	}
	// Deletion is prompt: the kubelet removes the pod once its containers are gone.
	start := time.Now()
	if err := cs.CoreV1().Pods(in.Namespace).Delete(ctx, "worker", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, func() error {
		if _, err := cs.CoreV1().Pods(in.Namespace).Get(ctx, "worker", metav1.GetOptions{}); err == nil {
			return errors.New("pod still present")
		}
		return nil
	})
	t.Logf("pod deleted in %v (grace period 1s)", time.Since(start).Round(10*time.Millisecond))
}

// BadInputInput is the input of BadInput.
type BadInputInput struct {
	Lab       *Lab
	Cluster   string
	Namespace string
}

// BadInput checks that an unknown image, a crashing container, a port in use and a broken
// CNI configuration each give a clear status, and that nothing hangs.
func BadInput(t *testing.T, in BadInputInput) {
	ctx := context.Background()
	cs := in.Lab.Client(t, in.Cluster)
	namespace(t, cs, in.Namespace)
	node := in.Cluster + "-node-1"
	mk := func(name string, spec corev1.PodSpec) {
		spec.TerminationGracePeriodSeconds = ptr.To(int64(1))
		if _, err := cs.CoreV1().Pods(in.Namespace).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(name string, check func(cs corev1.ContainerStatus) error) {
		Eventually(t, 90*time.Second, func() error {
			p, err := cs.CoreV1().Pods(in.Namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(p.Status.ContainerStatuses) == 0 {
				return fmt.Errorf("%s: no container status yet", name)
			}
			if err := check(p.Status.ContainerStatuses[0]); err != nil {
				return fmt.Errorf("%s: %w (status %s)", name, err, describeContainers(p))
			}
			return nil
		})
	}
	mk("unknown-image", corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/nope:1"}}})
	mk("crasher", corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sh", "-c", "echo giving up; exit 42"}}}})
	// Two host-network pods on one node want the same port: the second cannot bind.
	hostPod := corev1.PodSpec{HostNetwork: true, NodeName: node,
		Containers: []corev1.Container{{Name: "c", Image: agnhost, Args: []string{"netexec", "--http-port=18080", "--udp-port=-1"}}}}
	// The owner is ready once it listens (a started process may not have bound yet, and the
	// taker would win the port).
	owner := *hostPod.DeepCopy()
	owner.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
		ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(18080)}}}
	mk("port-owner", owner)
	WaitPodReady(t, cs, in.Namespace, "port-owner", time.Minute)
	mk("port-taker", hostPod)

	waitFor("unknown-image", func(s corev1.ContainerStatus) error {
		if w := s.State.Waiting; w == nil || (w.Reason != "ErrImagePull" && w.Reason != "ImagePullBackOff") ||
			!strings.Contains(w.Message, "not in the lab's image table") {
			return errors.New("want waiting ErrImagePull naming the image table")
		}
		return nil
	})
	waitFor("crasher", func(s corev1.ContainerStatus) error {
		last := s.LastTerminationState.Terminated
		if s.State.Waiting == nil || s.State.Waiting.Reason != "CrashLoopBackOff" || last == nil || last.ExitCode != 42 ||
			!strings.Contains(last.Message, "giving up") {
			return errors.New("want CrashLoopBackOff after exit 42 with the log tail")
		}
		return nil
	})
	waitFor("port-taker", func(s corev1.ContainerStatus) error {
		t := s.State.Terminated
		if t == nil {
			t = s.LastTerminationState.Terminated
		}
		if t == nil || t.ExitCode == 0 || !strings.Contains(t.Message, "address already in use") {
			return errors.New("want a termination message saying the address is in use")
		}
		return nil
	})

	// A broken CNI configuration sorts first in the node's directory: new pods there wait
	// with the CNI error, and start once it is removed.
	bad := filepath.Join(in.Lab.State, in.Cluster, "nodes", node, "root", "etc", "cni", "net.d", "00-broken.conflist")
	if err := os.WriteFile(bad, []byte("{ not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(bad) })
	mk("no-network", corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}})
	waitFor("no-network", func(s corev1.ContainerStatus) error {
		if w := s.State.Waiting; w == nil || w.Reason != "ContainerCreating" || !strings.Contains(w.Message, "00-broken.conflist") {
			return errors.New("want ContainerCreating naming the broken CNI file")
		}
		return nil
	})
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	WaitPodReady(t, cs, in.Namespace, "no-network", 2*time.Minute)
}
