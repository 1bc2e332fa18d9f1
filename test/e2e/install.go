package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/testenv"
	"github.com/weft-net/weft/lab"
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
	// Namespace, when set, gets a pod in each cluster before the join; right after both
	// ClusterPeers read Ready, each pod calls the other once, without retrying: Ready means
	// traffic flows.
	Namespace string
}

// PeerJoin peers two clusters with `weftctl peer join` and checks that each operator reads
// the other's API server (across the lab's underlay) with the issued credential.
func PeerJoin(t testing.TB, in PeerInput) {
	ips := map[string]string{}
	if in.Namespace != "" {
		for _, c := range []string{in.From, in.To} {
			cs := in.Lab.Client(t, c)
			namespace(t, cs, in.Namespace)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "caller", Namespace: in.Namespace},
				Spec: corev1.PodSpec{NodeName: c + "-node-2", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
					{Name: "echo", Image: agnhost, Args: []string{"netexec", "--http-port=8080"}}}}}
			if _, err := cs.CoreV1().Pods(in.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			ips[c] = WaitPodReady(t, cs, in.Namespace, "caller", 2*time.Minute).Status.PodIP
		}
	}
	out, err := exec.Command(in.Lab.Weftctl, "peer", "join", "--kubeconfig", in.Lab.Kubeconfig, "--from", in.From, "--to", in.To).CombinedOutput()
	if err != nil {
		t.Fatalf("weftctl peer join: %v\n%s", err, out)
	}
	for _, side := range [][2]string{{in.From, in.To}, {in.To, in.From}} {
		in.Lab.MustKubectl(t, side[0], "", "wait", "--for=condition=Connected", "--timeout=60s", "clusterpeer/"+side[1])
		// Ready: a tunnel to the peer is handshaken and answers (the gateways start first).
		in.Lab.MustKubectl(t, side[0], "", "wait", "--for=condition=Ready", "--timeout=180s", "clusterpeer/"+side[1])
	}
	if in.Namespace != "" {
		for _, side := range [][2]string{{in.From, in.To}, {in.To, in.From}} {
			if err := httpHostname(in.Lab.podNetns(t, ips[side[0]]), ips[side[1]]+":8080", "caller"); err != nil {
				t.Errorf("right after both ClusterPeers read Ready, a pod in %s called one in %s: %v", side[0], side[1], err)
			}
		}
	}
	got := in.Lab.MustKubectl(t, in.From, "", "get", "clusterpeer", in.To, "-o", "jsonpath={.status.podCIDRs[0]}")
	if got != in.ToPodCIDR {
		t.Errorf("%s sees %s advertise pod CIDR %q, want %q", in.From, in.To, got, in.ToPodCIDR)
	}
}

// httpHostname asks an agnhost netexec server at addr, from ns, for its hostname, once
// (3 s at most), and checks it is want.
func httpHostname(ns *netnstest.Netns, addr, want string) error {
	c, err := ns.Dial(addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("GET /hostname HTTP/1.0\r\n\r\n")); err != nil {
		return err
	}
	body, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if _, got, _ := strings.Cut(string(body), "\r\n\r\n"); strings.TrimSpace(got) != want {
		return fmt.Errorf("GET http://%s/hostname answered %q, want %s", addr, body, want)
	}
	return nil
}

// nodeClean checks that the node's agent removed weft from its node before it went: no
// weft device, no route of weft's datapaths or its BGP speaker, no pin, no CNI
// configuration, no weft annotation left behind.
func nodeClean(t testing.TB, l *Lab, cluster string, n corev1.Node, netns string) {
	t.Helper()
	out, err := exec.Command("ip", "-n", netns, "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: ip link: %v: %s", n.Name, err, out)
	}
	for _, dev := range []string{"weft-vxlan0", "weft-int", "weft-gw0", "weft-tun0"} {
		if strings.Contains(string(out), " "+dev+":") || strings.Contains(string(out), " "+dev+"@") {
			t.Errorf("node %s: %s is left", n.Name, dev)
		}
	}
	for _, proto := range []string{"87", "88", "89"} { // ovs, ebpf, BGP-imported
		out, err := exec.Command("ip", "-n", netns, "route", "show", "table", "all", "proto", proto).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("node %s: routes of protocol %s left (%v):\n%s", n.Name, proto, err, out)
		}
	}
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+netns, "--", "nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), "weft-egress") {
		t.Errorf("node %s: the egress table is left (%v): %s", n.Name, err, out)
	}
	if _, err := os.Stat(filepath.Join(lab.BPFFSDir(l.State), "weft", n.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node %s: its bpffs pins are left (%v)", n.Name, err)
	}
	conf := filepath.Join(l.State, cluster, "nodes", n.Name, "root", "etc", "cni", "net.d", "10-weft.conflist")
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node %s: %s is left (%v)", n.Name, conf, err)
	}
	for k := range n.Annotations {
		if strings.HasPrefix(k, "fabric.weft.dev/") {
			t.Errorf("node %s keeps weft's annotation %s", n.Name, k)
		}
	}
}

// UninstallInput is the input of Uninstall.
type UninstallInput struct {
	Lab *Lab
	// Cluster loses weft; Peer is the cluster it is peered with.
	Cluster, Peer string
}

// Uninstall removes weft from a cluster the way docs/install.md says — `weftctl peer leave`,
// delete the ClusterNetwork, delete config/default — and checks nothing is left: no weft
// pod stuck terminating, nodes keep their network (weft-ovs gave the uplink back) and lost
// weft's datapath (the agents removed it before they went), CoreDNS
// without weft's block, no namespace, CRD, role, binding or webhook configuration of weft.
func Uninstall(t testing.TB, in UninstallInput) {
	ctx := context.Background()
	root := repoRoot(t)
	cs := in.Lab.Client(t, in.Cluster)
	if out, err := exec.Command(in.Lab.Weftctl, "peer", "leave", "--kubeconfig", in.Lab.Kubeconfig, "--from", in.Cluster, "--to", in.Peer).CombinedOutput(); err != nil {
		t.Fatalf("weftctl peer leave: %v\n%s", err, out)
	}
	for _, side := range [][2]string{{in.Cluster, in.Peer}, {in.Peer, in.Cluster}} {
		if out, code := in.Lab.KubectlRun(side[0], "", "get", "clusterpeer", side[1]); code == 0 {
			t.Errorf("%s still has ClusterPeer %s after leave:\n%s", side[0], side[1], out)
		}
	}
	start := time.Now()
	in.Lab.MustKubectl(t, in.Cluster, "", "delete", "clusternetwork", "default", "--timeout=60s")
	Eventually(t, 90*time.Second, func() error {
		pods, err := cs.CoreV1().Pods("weft-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if !strings.HasPrefix(p.Name, "weft-operator-") {
				return fmt.Errorf("pod %s still there (%s)", p.Name, p.Status.Phase)
			}
		}
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if strings.Contains(cm.Data["Corefile"], "# weft: begin") {
			return fmt.Errorf("the Corefile still forwards the clusterset zone to weft-dns")
		}
		return nil
	})
	t.Logf("the ClusterNetwork and its workloads were gone in %v", time.Since(start).Round(100*time.Millisecond))
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == "InternalIP" {
				ip = a.Address
			}
		}
		netns := lab.NamespacePrefix(in.Lab.Name) + n.Name
		out, err := exec.Command("ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " "+ip+"/") {
			t.Errorf("node %s: its address %s is not back on its uplink eth0 (%v): %s", n.Name, ip, err, out)
		}
		nodeClean(t, in.Lab, in.Cluster, n, netns)
	}
	in.Lab.MustKubectl(t, in.Cluster, "", "delete", "-k", root+"/config/default", "--timeout=120s")
	for _, q := range []struct{ what, args string }{
		{"namespace", "get namespace weft-system -o name --ignore-not-found"},
		{"CRDs", "get crd -o name"},
		{"cluster roles", "get clusterroles,clusterrolebindings -o name"},
		{"webhook configurations", "get validatingwebhookconfigurations -o name"},
		{"admission policies", "get validatingadmissionpolicies,validatingadmissionpolicybindings -o name"},
	} {
		out, code := in.Lab.KubectlRun(in.Cluster, "", strings.Fields(q.args)...)
		if code != 0 {
			t.Errorf("kubectl %s: exit %d: %s", q.args, code, out)
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			name := line[strings.LastIndex(line, "/")+1:]
			if strings.Contains(line, "weft") && !strings.HasPrefix(name, "weft-lab:") || strings.Contains(line, "weft.dev") ||
				strings.Contains(line, "multicluster.x-k8s.io") || strings.Contains(line, "about.k8s.io") {
				t.Errorf("%s: %s is left after uninstalling", q.what, line)
			}
		}
	}
}

// NodeListeners plays a network neighbour against the listeners weft puts on a node's host
// network. The unauthenticated ones — the operator's probes (10372), the agent's health and
// metrics (10380), the gateway's metrics (10391) — refuse it on every node address, while
// the node itself reaches them on 127.0.0.1 (so the refusal is not a process that is simply
// not running). The metrics every component serves over TLS — operator 10371, agent 10381,
// gateway 10392, weft-dns 9154 in its pods — answer it as Prometheus would be answered:
// 401 without a token, the component's metrics with a token of a service account bound to
// weft-metrics-reader.
func NodeListeners(t testing.TB, in InstallInput) {
	ctx := context.Background()
	cs := in.Lab.Client(t, in.Cluster)
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods("weft-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]map[string]bool{} // workload → nodes
	var dnsPods []string
	for _, p := range pods.Items {
		name := p.Labels["app.kubernetes.io/name"]
		if on[name] == nil {
			on[name] = map[string]bool{}
		}
		on[name][p.Spec.NodeName] = true
		if name == "weft-dns" && p.Status.PodIP != "" {
			dnsPods = append(dnsPods, p.Status.PodIP)
		}
	}
	if len(nodes.Items) < 2 || len(on["weft-operator"]) == 0 || len(on["weft-gateway"]) == 0 || len(dnsPods) == 0 {
		t.Fatalf("%s: %d nodes, weft pods on %v, weft-dns at %v: need two nodes, an operator, a gateway and weft-dns", in.Cluster, len(nodes.Items), on, dnsPods)
	}
	token := in.Lab.metricsReader(t, in.Cluster)
	for i, n := range nodes.Items {
		neighbour := in.Lab.nodeNetns(nodes.Items[(i+1)%len(nodes.Items)].Name)
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		for _, port := range []int{10372, 10380, 10391} {
			addr := net.JoinHostPort(ip, strconv.Itoa(port))
			if c, err := neighbour.Dial(addr, 2*time.Second); err == nil {
				c.Close()
				t.Errorf("%s: a network neighbour connects to %s (node %s)", in.Cluster, addr, n.Name)
			}
		}
		own := netnsHTTP(in.Lab.nodeNetns(n.Name), 5*time.Second)
		urls := []string{"http://127.0.0.1:10380/readyz"}
		if on["weft-operator"][n.Name] {
			urls = append(urls, "http://127.0.0.1:10372/readyz")
		}
		for _, u := range urls {
			if err := call(own, u); err != nil {
				t.Errorf("%s: node %s itself cannot read %s: %v", in.Cluster, n.Name, u, err)
			}
		}
		scraped := map[string]string{net.JoinHostPort(ip, "10381"): "weft_agent_pods"}
		if on["weft-operator"][n.Name] {
			scraped[net.JoinHostPort(ip, "10371")] = "rest_client_requests_total" // a standby runs no controller
		}
		if on["weft-gateway"][n.Name] {
			scraped[net.JoinHostPort(ip, "10392")] = "weft_gateway_tunnel_dropped_packets_total"
		}
		if i == 0 {
			for _, p := range dnsPods {
				scraped[net.JoinHostPort(p, "9154")] = "weft_dns_services"
			}
		}
		for addr, want := range scraped {
			url := "https://" + addr + "/metrics"
			if code, _, err := scrape(neighbour, url, ""); err != nil || code != http.StatusUnauthorized {
				t.Errorf("%s: %s without a token: %d %v, want 401", in.Cluster, url, code, err)
			}
			if code, body, err := scrape(neighbour, url, token); err != nil || code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("%s: %s as a weft-metrics-reader: %d %v, holds %s: %v", in.Cluster, url, code, err, want, strings.Contains(body, want))
			}
		}
	}
}

// scrape GETs a TLS metrics endpoint from inside ns as Prometheus does, with a bearer token
// ("" for none).
func scrape(ns *netnstest.Netns, url, token string) (int, string, error) {
	return testenv.GetAsVia(func(_ context.Context, _, addr string) (net.Conn, error) { return ns.Dial(addr, 5*time.Second) }, url, token)
}

// metricsReader returns a token of service account weft-system/prometheus in cluster, bound
// to weft-metrics-reader (both made if missing): what a Prometheus scrapes weft with.
func (l *Lab) metricsReader(t testing.TB, cluster string) string {
	t.Helper()
	l.MustKubectl(t, cluster, `apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: weft-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: prometheus-weft-metrics}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weft-metrics-reader}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: weft-system}]
`, "apply", "--server-side", "-f", "-")
	return strings.TrimSpace(l.MustKubectl(t, cluster, "", "-n", "weft-system", "create", "token", "prometheus"))
}
