package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/weft-net/weft/internal/netnstest"
)

// ExportLatency is what exportToResolvable measured in one round.
type ExportLatency struct {
	Resolvable time.Duration // export created → the name answers with the VIP
	Gone       time.Duration // export deleted → the name is NXDOMAIN
}

// exportToResolvable measures, rounds times, how long after a ServiceExport is created in
// `to` its name <svc>.<ns>.svc.clusterset.local answers in `from`, asked the way a pod there
// asks: from a pod's network namespace to the cluster DNS (CoreDNS, which forwards the zone
// to weft-dns), every 10 ms; then how long after the export is deleted the name is gone.
// Each round exports another Service, so nothing is answered from an earlier round; a second
// call exports the same Services again (each was unexported at the end of its round).
func exportToResolvable(t testing.TB, l *Lab, from, to string, rounds int) []ExportLatency {
	ctx := context.Background()
	const ns = "bench-mcs"
	for _, c := range []string{from, to} {
		// A second call in the same test finds the namespace the first made (and will delete).
		if _, err := l.Client(t, c).CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			namespace(t, l.Client(t, c), ns)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	toCS, fromCS := l.Client(t, to), l.Client(t, from)
	for i := range rounds {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "none"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		if _, err := toCS.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "asker", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: from + "-node-2", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{
			{Name: "sleep", Image: "busybox", Command: []string{"sleep", "3600"}}}}}
	if _, err := fromCS.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	asker := l.podNetns(t, WaitPodReady(t, fromCS, ns, "asker", 2*time.Minute).Status.PodIP)
	server := net.JoinHostPort(l.clusterDNS(t, from), "53")
	exports := l.CRClient(t, to)

	var out []ExportLatency
	for i := range rounds {
		name := fmt.Sprintf("svc-%d.%s.svc.clusterset.local.", i, ns)
		if rc, _ := askA(asker, server, name); rc != dns.RcodeNameError {
			t.Fatalf("%s answers %s before it is exported", name, dns.RcodeToString[rc])
		}
		se := &mcsv1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: ns}}
		start := time.Now()
		if err := exports.Create(ctx, se); err != nil {
			t.Fatal(err)
		}
		var r ExportLatency
		r.Resolvable = waitAnswerOr(t, asker, server, name, start, func(rc, n int) bool { return rc == dns.RcodeSuccess && n > 0 }, func() string {
			return exportState(t, l, from, to, ns, fmt.Sprintf("svc-%d", i), asker)
		})
		start = time.Now()
		if err := exports.Delete(ctx, se); err != nil {
			t.Fatal(err)
		}
		r.Gone = waitAnswer(t, asker, server, name, start, func(rc, _ int) bool { return rc == dns.RcodeNameError })
		out = append(out, r)
	}
	return out
}

// waitAnswer asks for name every 10 ms until done says yes, for at most 30 s, and returns
// the time since start.
func waitAnswer(t testing.TB, ns *netnstest.Netns, server, name string, start time.Time, done func(rcode, answers int) bool) time.Duration {
	t.Helper()
	return waitAnswerOr(t, ns, server, name, start, done, func() string { return "" })
}

// waitAnswerOr is waitAnswer that says, when the time is up, what state describes.
func waitAnswerOr(t testing.TB, ns *netnstest.Netns, server, name string, start time.Time, done func(rcode, answers int) bool, state func() string) time.Duration {
	t.Helper()
	for {
		rc, n := askA(ns, server, name)
		if done(rc, n) {
			return time.Since(start)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s: still %s with %d answers after 30 s\n%s", name, dns.RcodeToString[rc], n, state())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exportState describes where an export is on its way from `to` to a name in `from`.
func exportState(t testing.TB, l *Lab, from, to, ns, name string, asker *netnstest.Netns) string {
	var b strings.Builder
	se, _ := l.KubectlRun(to, "", "-n", ns, "get", "serviceexport", name, "-o", "jsonpath={.status.conditions}")
	fmt.Fprintf(&b, "%s: ServiceExport conditions %s\n", to, se)
	rec, _ := l.KubectlRun(to, "", "-n", "weft-system", "get", "exportrecord", ns+"."+name)
	fmt.Fprintf(&b, "%s: ExportRecord %s\n", to, strings.TrimSpace(rec))
	si, _ := l.KubectlRun(from, "", "-n", ns, "get", "serviceimport", name, "-o", "jsonpath={.spec.ips} {.status.conditions}")
	fmt.Fprintf(&b, "%s: ServiceImport %s\n", from, si)
	dnsIPs, _ := l.KubectlRun(from, "", "-n", "weft-system", "get", "pods", "-l", "app.kubernetes.io/name=weft-dns", "-o", "jsonpath={.items[*].status.podIP}")
	for _, ip := range strings.Fields(dnsIPs) {
		rc, n := askA(asker, ip+":53", name+"."+ns+".svc.clusterset.local.")
		fmt.Fprintf(&b, "%s: weft-dns %s answers %s with %d records\n", from, ip, dns.RcodeToString[rc], n)
	}
	return b.String()
}

// askA asks server for name's A records from inside ns: the rcode (-1 when nothing came
// back within 300 ms) and the number of answers.
func askA(ns *netnstest.Netns, server, name string) (rcode, answers int) {
	rcode, addrs := resolveA(ns, server, name, 300*time.Millisecond)
	return rcode, len(addrs)
}

// resolveA asks server, from ns, for name's A records; rcode is -1 without an answer within
// timeout.
func resolveA(ns *netnstest.Netns, server, name string, timeout time.Duration) (rcode int, addrs []string) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	rcode = -1
	_ = ns.Do(func() error {
		c := &dns.Client{Timeout: timeout}
		if m, _, err := c.Exchange(q, server); err == nil {
			rcode = m.Rcode
			for _, rr := range m.Answer {
				if a, ok := rr.(*dns.A); ok {
					addrs = append(addrs, a.A.String())
				}
			}
		}
		return nil
	})
	return rcode, addrs
}

// latencyPercentiles sorts d (in place) and returns its p50 and p99.
func latencyPercentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	pct := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return pct(0.5), pct(0.99)
}
