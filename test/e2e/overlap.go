package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/netnstest"
)

// OverlapInput is the input of Overlap.
type OverlapInput struct {
	Lab *Lab
	// A and C have the same pod and service ranges; B others. All three are peered, A with B
	// first.
	A, B, C string
	// PodCIDR and ServiceCIDR are A's and C's.
	PodCIDR, ServiceCIDR string
	Namespace            string
	// BeforeFailover, when set, runs before the last check, which adds and kills a gateway
	// (the docs' walk-through, on a lab as a user's would be).
	BeforeFailover func(t *testing.T)
}

// Overlap checks clusters whose ranges overlap (issue 28): each sees the other at aliases,
// a pod in A and a pod in C with the same address reach each other (and are told apart by
// B), each sees the other's pod at its own cluster's alias for it, and imports, DNS and
// FabricPolicy by cluster work through the mapping.
func Overlap(t *testing.T, in OverlapInput) {
	ctx := context.Background()
	l := in.Lab
	podRange, svcRange := netip.MustParsePrefix(in.PodCIDR), netip.MustParsePrefix(in.ServiceCIDR)

	// How viewer sees peer: its pod range there (the alias, or the range itself).
	seen := map[[2]string]netip.Prefix{}
	t.Run("overlapping peers get aliases, both ways, and the others keep their addresses", func(t *testing.T) {
		aliases := func(viewer, peer, field string) map[string]string {
			out, _ := l.KubectlRun(viewer, "", "get", "clusterpeer", peer, "-o", `jsonpath={range .status.`+field+`[*]}{.cidr}={.alias} {end}`)
			m := map[string]string{}
			for _, f := range strings.Fields(out) {
				k, v, _ := strings.Cut(f, "=")
				m[k] = v
			}
			return m
		}
		Eventually(t, time.Minute, func() error {
			for _, c := range []struct {
				viewer, peer string
				aliased      bool
			}{{in.A, in.C, true}, {in.C, in.A, true}, {in.B, in.C, true}, {in.B, in.A, false}, {in.A, in.B, false}, {in.C, in.B, false}} {
				a := aliases(c.viewer, c.peer, "aliases")
				if !c.aliased {
					if len(a) != 0 {
						return fmt.Errorf("%s aliases %s, whose ranges overlap nothing there: %v", c.viewer, c.peer, a)
					}
					continue
				}
				pods, svcs := a[podRange.String()], a[svcRange.String()]
				if pods == "" || svcs == "" {
					return fmt.Errorf("%s's ClusterPeer %s: aliases %v, want both the pod and the service range aliased", c.viewer, c.peer, a)
				}
				seen[[2]string{c.viewer, c.peer}] = netip.MustParsePrefix(pods)
				// The peer knows: its ClusterPeer for the viewer says how the viewer sees it.
				if back := aliases(c.peer, c.viewer, "seenAs"); back[podRange.String()] != pods || back[svcRange.String()] != svcs {
					return fmt.Errorf("%s sees %s at %v; %s's ClusterPeer %s says seenAs %v", c.viewer, c.peer, a, c.peer, c.viewer, back)
				}
			}
			return nil
		})
		t.Logf("%s sees %s at %s, %s sees %s at %s, %s sees %s at %s", in.A, in.C, seen[[2]string{in.A, in.C}],
			in.C, in.A, seen[[2]string{in.C, in.A}], in.B, in.C, seen[[2]string{in.B, in.C}])
		out := l.MustKubectl(t, in.B, "", "get", "clusterpeer", in.C, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		if out != "True" {
			t.Errorf("%s's ClusterPeer %s Ready=%q", in.B, in.C, out)
		}
		status, err := exec.Command(l.Weftctl, "status", "--kubeconfig", l.Kubeconfig, "--context", in.B).CombinedOutput()
		if err != nil || !strings.Contains(string(status), podRange.String()+" as "+seen[[2]string{in.B, in.C}].String()) {
			t.Errorf("weftctl status in %s does not show how it sees %s (%v):\n%s", in.B, in.C, err, status)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	view := func(viewer, peer string, a netip.Addr) netip.Addr {
		if p, ok := seen[[2]string{viewer, peer}]; ok {
			return fabricv1.Rebase(a, podRange, p)
		}
		return a
	}

	// A pod in A, one in C at the same address, one in B.
	for _, c := range []string{in.A, in.B, in.C} {
		namespace(t, l.Client(t, c), in.Namespace)
	}
	// The same address in both, high in a block of A's second node (free in both: the
	// allocator hands out the lowest free addresses), on the node of C with that block.
	x := blockOf(t, l, in.A, in.A+"-node-2").Addr()
	for range 200 {
		x = x.Next()
	}
	twinA := overlapPod(t, l, in.A, in.Namespace, "twin-a", in.A+"-node-2", x.String())
	twinC := overlapPod(t, l, in.C, in.Namespace, "twin-c", nodeWithBlock(t, l, in.C, x), x.String())
	for _, p := range []*corev1.Pod{twinA, twinC} {
		if p.Status.PodIP != x.String() {
			t.Fatalf("%s has %s, want %s (fabric.weft.dev/ip)", p.Name, p.Status.PodIP, x)
		}
	}
	podB := overlapPod(t, l, in.B, in.Namespace, "pod-b", in.B+"-node-2", "")
	nsA, nsB, nsC := l.netnsOf(twinA), l.netnsOf(podB), l.netnsOf(twinC)
	ip := x
	t.Logf("twin-a in %s and twin-c in %s both at %s; pod-b in %s at %s", in.A, in.C, x, in.B, podB.Status.PodIP)

	// paths checks that the pods reach each other by the addresses their clusters see them at,
	// and that each sees its caller at its own cluster's view of the caller.
	paths := func(t *testing.T) {
		for _, c := range []struct {
			from          *netnstest.Netns
			fromName      string
			to            netip.Addr
			want, seenAsM string
		}{
			{nsA, "twin-a", view(in.A, in.C, ip), "twin-c", view(in.C, in.A, ip).String()},
			{nsC, "twin-c", view(in.C, in.A, ip), "twin-a", view(in.A, in.C, ip).String()},
			{nsB, "pod-b", ip, "twin-a", podB.Status.PodIP},
			{nsB, "pod-b", view(in.B, in.C, ip), "twin-c", podB.Status.PodIP},
			{nsC, "twin-c", netip.MustParseAddr(podB.Status.PodIP), "pod-b", view(in.B, in.C, ip).String()},
		} {
			Eventually(t, 30*time.Second, func() error {
				addr := netip.AddrPortFrom(c.to, 8080).String()
				if err := httpHostname(c.from, addr, c.want); err != nil {
					return fmt.Errorf("from %s: %w", c.fromName, err)
				}
				got, err := httpGet(c.from, "http://"+addr+"/clientip")
				if err != nil {
					return err
				}
				if host, _, _ := net.SplitHostPort(got); host != c.seenAsM {
					return fmt.Errorf("%s saw %s at %s, want %s", c.want, c.fromName, got, c.seenAsM)
				}
				return nil
			})
		}
	}
	t.Run("the pods at one address reach each other, each seen at its cluster's alias", paths)

	t.Run("UDP, a 1400-byte ping and 20 MB each way through the mapping", func(t *testing.T) {
		for _, c := range []struct {
			from, to *netnstest.Netns
			name     string
			dst      netip.Addr
		}{{nsA, nsC, "twin-a to twin-c", view(in.A, in.C, ip)}, {nsC, nsA, "twin-c to twin-a", view(in.C, in.A, ip)}} {
			if err := udpEcho(c.from, netip.AddrPortFrom(c.dst, 8081)); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			if out, err := c.from.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1400", c.dst.String()); err != nil {
				t.Errorf("%s: ping -s 1400 %s: %v\n%s", c.name, c.dst, err, out)
			}
			if err := netnstest.TransferTCPVia(c.to, c.from, netip.AddrPortFrom(ip, 5001).String(), netip.AddrPortFrom(c.dst, 5001).String(), 20<<20); err != nil {
				t.Errorf("%s: 20 MB: %v", c.name, err)
			}
		}
	})

	t.Run("a Service exported from both overlapping clusters: imports, endpoints, DNS and HTTP", func(t *testing.T) {
		for _, c := range []string{in.A, in.C} {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "twin", Namespace: in.Namespace},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "twin"},
					Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
			if _, err := l.Client(t, c).CoreV1().Services(in.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			l.MustKubectl(t, c, "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: twin, namespace: "+in.Namespace+"}\n",
				"apply", "-f", "-")
		}
		// Every cluster imports both, each endpoint as that cluster sees it.
		for _, c := range []struct {
			viewer string
			want   map[string]string // source cluster -> endpoint address
		}{
			{in.B, map[string]string{in.A: x.String(), in.C: view(in.B, in.C, ip).String()}},
			{in.A, map[string]string{in.C: view(in.A, in.C, ip).String()}},
			{in.C, map[string]string{in.A: view(in.C, in.A, ip).String()}},
		} {
			Eventually(t, time.Minute, func() error {
				for src, want := range c.want {
					out, _ := l.KubectlRun(c.viewer, "", "-n", in.Namespace, "get", "endpointslices", "-l",
						"multicluster.kubernetes.io/service-name=twin,multicluster.kubernetes.io/source-cluster="+src,
						"-o", "jsonpath={.items[*].endpoints[*].addresses[*]}")
					if strings.TrimSpace(out) != want {
						return fmt.Errorf("in %s, the endpoints imported from %s: %q, want %s", c.viewer, src, out, want)
					}
				}
				return nil
			})
		}
		vip := ""
		Eventually(t, time.Minute, func() error {
			vip = importVIP(t, l, in.B, in.Namespace, "twin")
			if vip == "" {
				return fmt.Errorf("no ServiceImport twin in %s yet", in.B)
			}
			return nil
		})
		name := "twin." + in.Namespace + ".svc.clusterset.local"
		server := net.JoinHostPort(l.clusterDNS(t, in.B), "53")
		Eventually(t, 90*time.Second, func() error {
			err := answersVIP(nsB, server, name, netip.MustParseAddr(vip))
			if err != nil {
				// Say whether the cluster DNS answers at all.
				rc, addrs := resolveA(nsB, server, "kubernetes.default.svc.cluster.local.", time.Second)
				err = fmt.Errorf("%w (kubernetes.default.svc.cluster.local: rcode %d %v)", err, rc, addrs)
			}
			return err
		})
		// Through the VIP from B, both twins answer.
		answered := map[string]bool{}
		Eventually(t, time.Minute, func() error {
			if body, err := httpGet(nsB, "http://"+vip+"/hostname"); err == nil {
				answered[strings.TrimSpace(body)] = true
			}
			if !answered["twin-a"] || !answered["twin-c"] {
				return fmt.Errorf("through %s (%s) from %s, answered so far: %v; want twin-a and twin-c", name, vip, in.B, answered)
			}
			return nil
		})

		// Headless: the clusterset name answers every pod, each at the address B sees it at.
		for _, c := range []string{in.A, in.C} {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "twin-h", Namespace: in.Namespace},
				Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "twin"},
					Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}}
			if _, err := l.Client(t, c).CoreV1().Services(in.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			l.MustKubectl(t, c, "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: twin-h, namespace: "+in.Namespace+"}\n",
				"apply", "-f", "-")
		}
		headless := "twin-h." + in.Namespace + ".svc.clusterset.local."
		want := []string{x.String(), view(in.B, in.C, ip).String()}
		slices.Sort(want)
		Eventually(t, 90*time.Second, func() error {
			rc, addrs := resolveA(nsB, server, headless, time.Second)
			slices.Sort(addrs)
			if rc != dns.RcodeSuccess || !slices.Equal(addrs, want) {
				return fmt.Errorf("%s from %s: rcode %d %v, want %v (weft-1's pod, and weft-3's at its alias)", headless, in.B, rc, addrs, want)
			}
			return nil
		})
	})

	t.Run("a FabricPolicy in A dropping what comes from C drops it, and leaves B's", func(t *testing.T) {
		l.MustKubectl(t, in.A, fmt.Sprintf(`apiVersion: fabric.weft.dev/v1alpha1
kind: FabricPolicy
metadata: {name: e2e-no-%[1]s}
spec:
  tier: application
  priority: 10
  appliedTo:
  - podSelector: {matchLabels: {app: twin}}
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: %[2]s}}
  ingress:
  - name: not-from-%[1]s
    action: Drop
    from: [{cluster: %[1]s}]
`, in.C, in.Namespace), "apply", "-f", "-")
		defer l.MustKubectl(t, in.A, "", "delete", "fabricpolicy", "e2e-no-"+in.C)
		addr := netip.AddrPortFrom(view(in.C, in.A, ip), 8080).String()
		Eventually(t, time.Minute, func() error {
			if err := httpHostname(nsC, addr, "twin-a"); err == nil {
				return fmt.Errorf("twin-c still reaches twin-a at %s", addr)
			}
			return nil
		})
		if err := httpHostname(nsB, netip.AddrPortFrom(ip, 8080).String(), "twin-a"); err != nil {
			t.Errorf("pod-b, in %s, no longer reaches twin-a: %v", in.B, err)
		}
	})

	for _, tun := range []string{"geneve", "vxlan"} {
		t.Run("over "+tun+" tunnels as well", func(t *testing.T) {
			switchAll(t, l, []string{in.A, in.B, in.C}, tun)
			paths(t)
		})
	}
	switchAll(t, l, []string{in.A, in.B, in.C}, "wireguard")

	if in.BeforeFailover != nil {
		in.BeforeFailover(t)
	}
	t.Run("a gateway of C killed under probe streams through the mapping: the gap stays under a second", func(t *testing.T) {
		gws := []string{in.C + "-node-1", in.C + "-node-2"}
		l.MustKubectl(t, in.C, "", "label", "node", gws[1], "fabric.weft.dev/gateway=true", "--overwrite")
		defer l.MustKubectl(t, in.C, "", "label", "node", gws[1], "fabric.weft.dev/gateway-")
		// A's gateway spreads what it sends C over both of C's gateways, and each of them
		// routes A (at C's alias for it) back over A's.
		alias := seen[[2]string{in.A, in.C}]
		Eventually(t, 3*time.Minute, func() error {
			out, err := l.nodeNetns(in.A+"-node-1").Run("ip", "route", "show", alias.String())
			if err != nil || strings.Count(out, "nexthop") != 2 {
				return fmt.Errorf("%s's route to %s is %q, want two next hops", in.A+"-node-1", alias, strings.TrimSpace(out))
			}
			for _, g := range gws {
				if l.gatewayPID(t, g) == 0 {
					return fmt.Errorf("no weft-gateway process on %s", g)
				}
			}
			return nil
		})
		target := netip.AddrPortFrom(view(in.A, in.C, ip), 8081)
		gap, err := streamsTo(t, nsA, nsC, []netip.AddrPort{target}, func() (string, time.Time) {
			count := func(g string) uint64 { c := l.tunnelCounters(t, g); return c.TxPackets + c.RxPackets }
			before := map[string]uint64{}
			for _, g := range gws {
				before[g] = count(g)
			}
			time.Sleep(time.Second)
			victim, most := gws[0], uint64(0)
			for _, g := range gws {
				if d := count(g) - before[g]; d >= most {
					victim, most = g, d
				}
			}
			start := time.Now()
			killGateway(t, l)(victim)
			time.Sleep(3 * time.Second)
			return "weft-gateway killed on " + victim, start
		})
		if err != nil {
			t.Error(err)
		}
		t.Logf("longest probe gap through the mapping: %v", gap.Round(time.Millisecond))
		if gap >= time.Second {
			t.Errorf("the probes through the mapping stopped for %v, want under a second", gap.Round(time.Millisecond))
		}
	})

}

// switchAll sets every cluster's gateways to a tunnel driver and waits until each cluster's
// healthy gateways run it and every ClusterPeer is Ready again.
func switchAll(t *testing.T, l *Lab, clusters []string, tun string) {
	t.Helper()
	start := time.Now()
	for _, c := range clusters {
		l.MustKubectl(t, c, "", "patch", "clusternetwork", "default", "--type", "merge", "-p", `{"spec":{"gateways":{"tunnel":"`+tun+`"}}}`)
	}
	for _, c := range clusters {
		Eventually(t, 2*time.Minute, func() error {
			own, _ := l.KubectlRun(c, "", "get", "clusternetwork", "default", "-o", "jsonpath={.status.gateways[?(@.healthy==true)].tunnel}")
			if !allAre(own, tun) {
				return fmt.Errorf("%s's healthy gateways run %q, want %s", c, own, tun)
			}
			return nil
		})
	}
	for _, c := range clusters {
		for _, p := range clusters {
			if c != p {
				Eventually(t, 2*time.Minute, func() error {
					peer, _ := l.KubectlRun(c, "", "get", "clusterpeer", p, "-o", "jsonpath={.status.gateways[?(@.healthy==true)].tunnel}")
					if !allAre(peer, tun) {
						return fmt.Errorf("%s sees %s's healthy gateways run %q, want %s", c, p, peer, tun)
					}
					return nil
				})
				l.MustKubectl(t, c, "", "wait", "--for=condition=Ready", "--timeout=60s", "clusterpeer/"+p)
			}
		}
	}
	t.Logf("the three clusters run %s, every ClusterPeer Ready, after %s", tun, time.Since(start).Round(100*time.Millisecond))
}

// overlapPod runs agnhost netexec (HTTP 8080, UDP 8081, label app=twin) on node, at a fixed
// address when ip is set, and returns it ready.
func overlapPod(t *testing.T, l *Lab, cluster, ns, name, node, ip string) *corev1.Pod {
	t.Helper()
	cs := l.Client(t, cluster)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "twin"}},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
			{Name: "echo", Image: agnhost, Args: []string{"netexec", "--http-port=8080", "--udp-port=8081"}}}}}
	if name == "pod-b" {
		pod.Labels = nil
	}
	if ip != "" {
		pod.Annotations = map[string]string{fabricv1.AnnotationPodIP: ip}
	}
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return WaitPodReady(t, cs, ns, name, 2*time.Minute)
}

// blockOf is the pod block of a node of cluster.
func blockOf(t *testing.T, l *Lab, cluster, node string) netip.Prefix {
	t.Helper()
	var block netip.Prefix
	Eventually(t, 30*time.Second, func() error {
		out, _ := l.KubectlRun(cluster, "", "get", "fabricnode", node, "-o", "jsonpath={.spec.podCIDRs[0]}")
		p, err := netip.ParsePrefix(strings.TrimSpace(out))
		block = p
		return err
	})
	return block
}

// nodeWithBlock is the node of cluster whose pod block holds a.
func nodeWithBlock(t *testing.T, l *Lab, cluster string, a netip.Addr) string {
	t.Helper()
	var node string
	Eventually(t, 30*time.Second, func() error {
		out, _ := l.KubectlRun(cluster, "", "get", "fabricnodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDRs[0]} {end}`)
		for _, f := range strings.Fields(out) {
			n, block, _ := strings.Cut(f, "=")
			if p, err := netip.ParsePrefix(block); err == nil && p.Contains(a) {
				node = n
				return nil
			}
		}
		return fmt.Errorf("no node of %s has a block holding %s: %s", cluster, a, out)
	})
	return node
}

// netnsOf is a lab pod's network namespace, by its node and UID (its address may be
// another cluster's pod's too).
func (l *Lab) netnsOf(p *corev1.Pod) *netnstest.Netns {
	return &netnstest.Netns{Name: "weftlab-" + l.Name + "-pod-" + strings.ReplaceAll(p.Spec.NodeName, ".", "-") + "-" +
		strings.ReplaceAll(string(p.UID), "-", "")[:12]}
}

// httpGet fetches url from inside ns (3 s at most).
func httpGet(ns *netnstest.Netns, url string) (string, error) {
	resp, err := netnsHTTP(ns, 3*time.Second).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
