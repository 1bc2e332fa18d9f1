package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// MCSInput is the input of MultiClusterServices.
type MCSInput struct {
	Lab       *Lab
	From, To  string // peered clusters: To exports, From imports
	Namespace string // created in both
}

// MultiClusterServices exports a Service from To and checks, in From, the ServiceImport
// (type, ports, VIP, source cluster), its EndpointSlices, HTTP through the VIP to the pod in
// To (across the gateways), the name <svc>.<ns>.svc.clusterset.local (cluster DNS → weft-dns)
// and HTTP by it, and that unexporting removes the import and the name.
func MultiClusterServices(t *testing.T, in MCSInput) {
	ctx := context.Background()
	l := in.Lab
	for _, c := range []string{in.From, in.To} {
		namespace(t, l.Client(t, c), in.Namespace)
	}
	to := l.Client(t, in.To)
	server := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: in.Namespace, Labels: map[string]string{"app": "hello"}},
		Spec: corev1.PodSpec{NodeName: in.To + "-node-2", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
			{Name: "echo", Image: agnhost, Args: []string{"netexec", "--http-port=8080"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	if _, err := to.CoreV1().Pods(in.Namespace).Create(ctx, server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: in.Namespace},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "hello"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	if _, err := to.CoreV1().Services(in.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podIP := WaitPodReady(t, to, in.Namespace, "hello", 2*time.Minute).Status.PodIP
	client := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: in.Namespace},
		Spec: corev1.PodSpec{NodeName: in.From + "-node-2", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
			{Name: "client", Image: "alpine/socat", Command: []string{"sleep", "3600"}}}}}
	if _, err := l.Client(t, in.From).CoreV1().Pods(in.Namespace).Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	WaitPodReady(t, l.Client(t, in.From), in.Namespace, "client", 2*time.Minute)

	t.Run("each cluster publishes its cluster ID and clusterset as ClusterProperties", func(t *testing.T) {
		for _, c := range []string{in.From, in.To} {
			Eventually(t, 30*time.Second, func() error {
				out, _ := l.KubectlRun(c, "", "get", "clusterproperties", "-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.value} {end}`)
				if !strings.Contains(out, "cluster.clusterset.k8s.io="+c+" ") || !strings.Contains(out, "clusterset.k8s.io=default ") {
					return fmt.Errorf("ClusterProperties in %s: %q, want cluster.clusterset.k8s.io=%s and clusterset.k8s.io=default", c, out, c)
				}
				return nil
			})
		}
	})

	exported := time.Now()
	l.MustKubectl(t, in.To, "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: hello, namespace: "+in.Namespace+"}\n",
		"apply", "-f", "-")

	t.Run("the export is valid, ready and without conflict", func(t *testing.T) {
		Eventually(t, time.Minute, func() error {
			out, _ := l.KubectlRun(in.To, "", "-n", in.Namespace, "get", "serviceexport", "hello", "-o",
				`jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason} {end}`)
			for _, want := range []string{"Valid=True/Valid", "Ready=True/Exported", "Conflict=False/NoConflicts"} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("ServiceExport conditions %q, want %s", out, want)
				}
			}
			return nil
		})
	})

	var vip string
	t.Run("the peer cluster imports it: a VIP, ports, source cluster, EndpointSlices", func(t *testing.T) {
		Eventually(t, time.Minute, func() error {
			out, _ := l.KubectlRun(in.From, "", "-n", in.Namespace, "get", "serviceimport", "hello", "-o",
				`jsonpath={.spec.type} {.spec.ports[0].name}/{.spec.ports[0].port} {.status.clusters[*].cluster} {.spec.ips[0]}`)
			f := strings.Fields(out)
			if len(f) != 4 || f[0] != "ClusterSetIP" || f[1] != "http/80" || f[2] != in.To {
				return fmt.Errorf("ServiceImport in %s: %q, want ClusterSetIP http/80 from %s with an IP", in.From, out, in.To)
			}
			vip = f[3]
			return nil
		})
		t.Logf("imported in %s after %s, VIP %s", in.From, time.Since(exported).Round(time.Millisecond), vip)
		Eventually(t, time.Minute, func() error {
			out, _ := l.KubectlRun(in.From, "", "-n", in.Namespace, "get", "endpointslices", "-l",
				"multicluster.kubernetes.io/service-name=hello,multicluster.kubernetes.io/source-cluster="+in.To,
				"-o", "jsonpath={.items[*].endpoints[*].addresses[*]}")
			if strings.TrimSpace(out) != podIP {
				return fmt.Errorf("imported endpoints %q, want the pod in %s (%s)", out, in.To, podIP)
			}
			return nil
		})
	})

	t.Run("HTTP through the VIP reaches the pod in the exporting cluster", func(t *testing.T) {
		Eventually(t, time.Minute, func() error {
			// (busybox's wget -T crashes in the lab: timeout bounds it instead.)
			out, code := l.KubectlRun(in.From, "", "-n", in.Namespace, "exec", "client", "--", "timeout", "5", "wget", "-q", "-O-", "http://"+vip+"/hostname")
			if code != 0 || strings.TrimSpace(out) != "hello" {
				return fmt.Errorf("wget http://%s/hostname from %s: exit %d: %q", vip, in.From, code, out)
			}
			return nil
		})
	})

	name := "hello." + in.Namespace + ".svc.clusterset.local"
	t.Run("the clusterset name resolves to the VIP through the cluster DNS and weft-dns", func(t *testing.T) {
		Eventually(t, 2*time.Minute, func() error {
			out, code := l.KubectlRun(in.From, "", "-n", in.Namespace, "exec", "client", "--", "nslookup", name)
			if code != 0 || !strings.Contains(out, vip) {
				return fmt.Errorf("nslookup %s in %s: exit %d: %s", name, in.From, code, out)
			}
			return nil
		})
		t.Logf("%s resolvable in %s %s after the export", name, in.From, time.Since(exported).Round(time.Millisecond))
		Eventually(t, time.Minute, func() error {
			out, code := l.KubectlRun(in.From, "", "-n", in.Namespace, "exec", "client", "--", "timeout", "5", "wget", "-q", "-O-", "http://"+name+"/hostname")
			if code != 0 || strings.TrimSpace(out) != "hello" {
				return fmt.Errorf("wget http://%s/hostname from %s: exit %d: %q", name, in.From, code, out)
			}
			return nil
		})
	})

	t.Run("weft-dns counts what it answers, names not imported included", func(t *testing.T) {
		missing := "missing." + in.Namespace + ".svc.clusterset.local."
		if out, code := l.KubectlRun(in.From, "", "-n", in.Namespace, "exec", "client", "--", "nslookup", missing); code == 0 {
			t.Errorf("nslookup %s answered: %s", missing, out)
		}
		// Summed over weft-dns's pods (the cluster DNS may ask any), read on each pod's
		// loopback.
		Eventually(t, 30*time.Second, func() error {
			ips, _ := l.KubectlRun(in.From, "", "-n", "weft-system", "get", "pods", "-l", "app.kubernetes.io/name=weft-dns",
				"-o", "jsonpath={.items[*].status.podIP}")
			counts := map[string]float64{}
			for _, ip := range strings.Fields(ips) {
				out, err := loopbackMetrics(l.podNetns(t, ip), 9153)
				if err != nil {
					return fmt.Errorf("weft-dns %s: %w", ip, err)
				}
				for _, rcode := range []string{"NOERROR", "NXDOMAIN"} {
					counts[rcode] += metricValue(out, `weft_dns_queries_total{rcode="`+rcode+`",type="A"}`)
				}
			}
			if counts["NOERROR"] < 1 || counts["NXDOMAIN"] < 1 {
				return fmt.Errorf("weft-dns in %s counted A queries %v, want NOERROR and NXDOMAIN", in.From, counts)
			}
			t.Logf("weft-dns in %s: A queries by response code %v", in.From, counts)
			return nil
		})
	})

	t.Run("the operator observes how long the export took to be imported", func(t *testing.T) {
		// Scraped as Prometheus would, over TLS with a reader's token, from a node: only the
		// leading operator reports Multi-Cluster Services.
		token := l.metricsReader(t, in.From)
		from := l.nodeNetns(in.From + "-node-2")
		Eventually(t, 30*time.Second, func() error {
			hosts, _ := l.KubectlRun(in.From, "", "-n", "weft-system", "get", "pods", "-l", "app.kubernetes.io/name=weft-operator",
				"-o", "jsonpath={.items[*].status.hostIP}")
			var count, sum float64
			for _, ip := range strings.Fields(hosts) {
				code, body, err := scrape(from, "https://"+net.JoinHostPort(ip, "10371")+"/metrics", token)
				if err != nil {
					return fmt.Errorf("operator at %s: %w", ip, err)
				}
				if code != http.StatusOK {
					return fmt.Errorf("operator at %s: %d", ip, code)
				}
				count += metricSum(body, "weft_mcs_export_to_import_seconds_count", `source_cluster="`+in.To+`"`)
				sum += metricSum(body, "weft_mcs_export_to_import_seconds_sum", `source_cluster="`+in.To+`"`)
			}
			if count < 1 {
				return fmt.Errorf("%s's operators observed no export of %s being imported", in.From, in.To)
			}
			t.Logf("%s imported %v export(s) of %s, %.1f s after their creation on average (creationTimestamp: to the second)", in.From, count, in.To, sum/count)
			return nil
		})
	})

	t.Run("unexporting removes the import", func(t *testing.T) {
		l.MustKubectl(t, in.To, "", "-n", in.Namespace, "delete", "serviceexport", "hello")
		Eventually(t, time.Minute, func() error {
			out, _ := l.KubectlRun(in.From, "", "-n", in.Namespace, "get", "serviceimports,services,endpointslices", "-l", "app.kubernetes.io/managed-by=fabric.weft.dev", "-o", "name")
			out2, _ := l.KubectlRun(in.From, "", "-n", in.Namespace, "get", "endpointslices", "-l", "multicluster.kubernetes.io/service-name=hello", "-o", "name")
			if strings.TrimSpace(out+out2) != "" {
				return fmt.Errorf("left in %s after unexport: %s %s", in.From, out, out2)
			}
			return nil
		})
		Eventually(t, time.Minute, func() error {
			if out, code := l.KubectlRun(in.From, "", "-n", in.Namespace, "exec", "client", "--", "nslookup", name); code == 0 {
				return fmt.Errorf("%s still resolves in %s after unexport: %s", name, in.From, out)
			}
			return nil
		})
	})
}
