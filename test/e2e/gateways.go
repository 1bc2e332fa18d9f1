package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// CrossClusterInput is the input of CrossCluster.
type CrossClusterInput struct {
	Lab       *Lab
	From, To  string // peered clusters; each has a gateway on its first node
	Namespace string
	// Tunnels are further tunnel drivers to check: both clusters switch to each in turn
	// (their gateways roll), then back to WireGuard.
	Tunnels []string
}

// CrossCluster checks that a pod on a node that is not a gateway reaches a pod on a node that
// is not a gateway in the peer cluster, and back, through the gateways' tunnel: HTTP over
// TCP, UDP, ICMP with a 1400-byte payload, and a 20 MB TCP transfer (no PMTU black hole).
func CrossCluster(t *testing.T, in CrossClusterInput) {
	ctx := context.Background()
	for _, c := range []string{in.From, in.To} {
		Eventually(t, 2*time.Minute, func() error {
			out, _ := in.Lab.KubectlRun(c, "", "get", "clusternetwork", "default", "-o", "jsonpath={.status.gateways[?(@.healthy==true)].node}")
			if strings.TrimSpace(out) == "" {
				return fmt.Errorf("%s publishes no healthy gateway", c)
			}
			return nil
		})
	}
	// Each side: an echo server (HTTP 8080, UDP 8081) with a socat receiver (TCP 5000), on the
	// cluster's second node; and a client with busybox and socat.
	ips := map[string]string{}
	for _, c := range []string{in.From, in.To} {
		cs := in.Lab.Client(t, c)
		namespace(t, cs, in.Namespace)
		node := c + "-node-2"
		server := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "server", Namespace: in.Namespace},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
				{Name: "echo", Image: agnhost, Args: []string{"netexec", "--http-port=8080", "--udp-port=8081"}},
				{Name: "sink", Image: "alpine/socat", Command: []string{"socat", "-u", "TCP-LISTEN:5000,fork,reuseaddr", "OPEN:/tmp/got,creat,trunc"}},
			}}}
		client := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: in.Namespace},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
				{Name: "client", Image: "alpine/socat", Command: []string{"sleep", "3600"}}}}}
		for _, p := range []*corev1.Pod{server, client} {
			if _, err := cs.CoreV1().Pods(in.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		ips[c] = WaitPodReady(t, cs, in.Namespace, "server", 2*time.Minute).Status.PodIP
		WaitPodReady(t, cs, in.Namespace, "client", 2*time.Minute)
	}

	crossClusterPaths(t, in, ips)
	for _, tun := range in.Tunnels {
		t.Run("over "+tun, func(t *testing.T) {
			switchTunnel(t, in, tun)
			crossClusterPaths(t, in, ips)
		})
	}
	if len(in.Tunnels) > 0 {
		switchTunnel(t, in, "wireguard")
	}
}

// switchTunnel sets both clusters' gateways to a tunnel driver and waits until the gateways
// of each cluster announce it and each cluster's ClusterPeer shows the other's doing so.
func switchTunnel(t *testing.T, in CrossClusterInput, tun string) {
	t.Helper()
	peerTun, _ := in.Lab.KubectlRun(in.To, "", "get", "clusternetwork", "default", "-o", "jsonpath={.spec.gateways.tunnel}")
	start := time.Now()
	for _, c := range []string{in.From, in.To} {
		in.Lab.MustKubectl(t, c, "", "patch", "clusternetwork", "default", "--type", "merge", "-p", `{"spec":{"gateways":{"tunnel":"`+tun+`"}}}`)
		if c != in.From || strings.TrimSpace(peerTun) == tun {
			continue
		}
		// One side switched, the other not yet: no traffic can flow, and in.From's
		// ClusterPeer says so, naming both drivers (issue 36: Ready means traffic flows).
		Eventually(t, 10*time.Second, func() error {
			out, _ := in.Lab.KubectlRun(in.From, "", "get", "clusterpeer", in.To, "-o",
				`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Stalled")].reason}: {.status.conditions[?(@.type=="Stalled")].message}`)
			want := "use the " + tun + " tunnel, peer " + in.To + "'s use " + strings.TrimSpace(peerTun)
			if !strings.HasPrefix(out, "False TunnelMismatch: ") || !strings.Contains(out, want) {
				return fmt.Errorf("%s's ClusterPeer %s with %s here and %s there: %q, want Ready False, Stalled TunnelMismatch saying %q",
					in.From, in.To, tun, strings.TrimSpace(peerTun), out, want)
			}
			return nil
		})
		t.Logf("%s on %s, %s on %s: %s's ClusterPeer was Stalled (TunnelMismatch) after %s", tun, in.From,
			strings.TrimSpace(peerTun), in.To, in.From, time.Since(start).Round(100*time.Millisecond))
	}
	for _, c := range [][2]string{{in.From, in.To}, {in.To, in.From}} {
		Eventually(t, 2*time.Minute, func() error {
			own, _ := in.Lab.KubectlRun(c[0], "", "get", "clusternetwork", "default", "-o", "jsonpath={.status.gateways[?(@.healthy==true)].tunnel}")
			peer, _ := in.Lab.KubectlRun(c[0], "", "get", "clusterpeer", c[1], "-o", "jsonpath={.status.gateways[?(@.healthy==true)].tunnel}")
			if !allAre(own, tun) {
				return fmt.Errorf("%s's healthy gateways run %q, want %s", c[0], own, tun)
			}
			if !allAre(peer, tun) {
				return fmt.Errorf("%s sees %s's healthy gateways run %q, want %s", c[0], c[1], peer, tun)
			}
			return nil
		})
	}
	// Ready again on both sides (the tunnels are handshaken and answer) — and traffic flows
	// (crossClusterPaths, right after).
	for _, c := range [][2]string{{in.From, in.To}, {in.To, in.From}} {
		in.Lab.MustKubectl(t, c[0], "", "wait", "--for=condition=Ready", "--timeout=60s", "clusterpeer/"+c[1])
	}
	t.Logf("both clusters' gateways run %s, their ClusterPeers Ready, after %s", tun, time.Since(start).Round(100*time.Millisecond))
}

// allAre says whether a space-separated list has items, all equal to want.
func allAre(list, want string) bool {
	f := strings.Fields(list)
	for _, v := range f {
		if v != want {
			return false
		}
	}
	return len(f) > 0
}

// crossClusterPaths checks HTTP, UDP, a 1400-byte ping and a 20 MB transfer both ways
// between the server and client pods CrossCluster made.
func crossClusterPaths(t *testing.T, in CrossClusterInput, ips map[string]string) {
	t.Helper()
	for _, dir := range [][2]string{{in.From, in.To}, {in.To, in.From}} {
		src, dst := dir[0], dir[1]
		exec := func(args ...string) (string, int) {
			return in.Lab.KubectlRun(src, "", append([]string{"-n", in.Namespace, "exec", "client", "--"}, args...)...)
		}
		t.Logf("%s → %s (%s)", src, dst, ips[dst])
		Eventually(t, time.Minute, func() error {
			out, code := exec("wget", "-q", "-O-", "http://"+ips[dst]+":8080/hostname")
			if code != 0 || strings.TrimSpace(out) != "server" {
				return fmt.Errorf("HTTP from %s to %s: exit %d: %s", src, dst, code, out)
			}
			return nil
		})
		Eventually(t, 30*time.Second, func() error {
			out, code := exec("sh", "-c", "echo hostname | socat -t 2 - UDP:"+ips[dst]+":8081")
			if code != 0 || strings.TrimSpace(out) != "server" {
				return fmt.Errorf("UDP from %s to %s: exit %d: %q", src, dst, code, out)
			}
			return nil
		})
		Eventually(t, 30*time.Second, func() error {
			if out, code := exec("ping", "-c", "2", "-W", "2", "-s", "1400", ips[dst]); code != 0 {
				return fmt.Errorf("ping -s 1400 from %s to %s: exit %d: %s", src, dst, code, out)
			}
			return nil
		})
		firstLargePackets(t, in, src, ips[dst])
		start := time.Now()
		Eventually(t, time.Minute, func() error {
			if out, code := exec("sh", "-c", "head -c 20000000 /dev/zero | socat -u STDIN TCP:"+ips[dst]+":5000"); code != 0 {
				return fmt.Errorf("sending 20 MB from %s to %s: exit %d: %s", src, dst, code, out)
			}
			got, _ := in.Lab.KubectlRun(dst, "", "-n", in.Namespace, "exec", "server", "-c", "sink", "--", "stat", "-c", "%s", "/tmp/got")
			if strings.TrimSpace(got) != "20000000" {
				return fmt.Errorf("the receiver in %s has %q bytes, want 20000000", dst, strings.TrimSpace(got))
			}
			return nil
		})
		t.Logf("20 MB %s → %s in %s (including kubectl exec)", src, dst, time.Since(start).Round(time.Millisecond))
	}
}

// freshPods numbers the pods firstLargePackets makes.
var freshPods int

// firstLargePackets checks that a large datagram from a pod that never sent one crosses to
// the peer cluster on the first try — a 1400-byte ping and a 1,400-byte UDP datagram to the
// server's echo port, each sent once: pods' MTU leaves room for the tunnel between the
// clusters (a larger one lost the first packet to path MTU discovery at the gateway).
func firstLargePackets(t *testing.T, in CrossClusterInput, src, dstIP string) {
	t.Helper()
	ctx := context.Background()
	freshPods++
	name := fmt.Sprintf("fresh-%d", freshPods)
	cs := in.Lab.Client(t, src)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: in.Namespace},
		Spec: corev1.PodSpec{NodeName: src + "-node-2", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
			{Name: "client", Image: "alpine/socat", Command: []string{"sleep", "3600"}}}}}
	if _, err := cs.CoreV1().Pods(in.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.CoreV1().Pods(in.Namespace).Delete(ctx, name, metav1.DeleteOptions{}) }()
	WaitPodReady(t, cs, in.Namespace, name, 2*time.Minute)
	exec := func(args ...string) (string, int) {
		return in.Lab.KubectlRun(src, "", append([]string{"-n", in.Namespace, "exec", name, "--"}, args...)...)
	}
	if out, code := exec("ping", "-c", "1", "-W", "3", "-s", "1400", dstIP); code != 0 {
		t.Errorf("the first 1400-byte ping of a fresh pod in %s to %s was lost: exit %d: %s", src, dstIP, code, out)
		// What the next packets do tells a path that was not ready from one too narrow.
		for _, args := range [][]string{
			{"ping", "-c", "1", "-W", "3", "-s", "1400", dstIP},
			{"ping", "-c", "1", "-W", "3", dstIP},
			{"ip", "route", "get", dstIP},
		} {
			out, code := exec(args...)
			t.Logf("then %v: exit %d: %s", args, code, out)
		}
	}
	msg := strings.Repeat("x", 1395)
	if out, code := exec("sh", "-c", "echo 'echo "+msg+"' | socat -t 3 - UDP:"+dstIP+":8081"); code != 0 || strings.TrimSpace(out) != msg {
		t.Errorf("the first 1,400-byte UDP datagram of a fresh pod in %s to %s got no echo: exit %d, %d bytes back", src, dstIP, code, len(strings.TrimSpace(out)))
	}
}
