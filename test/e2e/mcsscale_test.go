package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// BenchmarkMCSAtScale brings up a two-cluster lab and measures what Multi-Cluster Services
// cost at rest and in bulk. With 0, 300 and 1,000 Services exported from weft-2 and imported
// in weft-1, left alone for WEFT_REST_SECONDS (default 30) s: the requests per second each
// API server receives (apiserver_request_total; Lease renewals apart, and everything else
// the clusters run included: the 0-Service row is the floor) and the CPU the four weft
// operators use. Then the time for 1,000 ServiceExports created at once to be imported
// (every ServiceImport with its VIP) and, deleted at once, to be gone; and, while the
// thousand are being imported, how soon single exports in another namespace answer in DNS
// (WEFT_MCS_ROUNDS, default 10). WEFT_REST_IMPORTS picks the sizes at rest ("1000"; "" for
// none). Run with -benchtime 1x.
func BenchmarkMCSAtScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("the MCS benchmarks need root: they bring a lab up")
	}
	rest, singles := 30*time.Second, 10
	if v, err := strconv.Atoi(os.Getenv("WEFT_REST_SECONDS")); err == nil && v > 0 {
		rest = time.Duration(v) * time.Second
	}
	if v, err := strconv.Atoi(os.Getenv("WEFT_MCS_ROUNDS")); err == nil && v > 0 {
		singles = v
	}
	lab := upLabWith(b, 2, 2, "ovs,ebpf", "none")
	InstallWeft(b, InstallInput{Lab: lab, Cluster: "weft-1", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"})
	InstallWeft(b, InstallInput{Lab: lab, Cluster: "weft-2", PodCIDR: "10.245.0.0/16", ServiceCIDR: "10.97.0.0/16"})
	PeerJoin(b, PeerInput{Lab: lab, From: "weft-1", To: "weft-2", ToPodCIDR: "10.245.0.0/16"})
	const ns = "bench-scale"
	for _, c := range lab.Clusters {
		namespace(b, lab.Client(b, c), ns)
	}
	services(b, lab, "weft-2", ns, 1000)

	sizes := []int{0, 300, 1000}
	if v, ok := os.LookupEnv("WEFT_REST_IMPORTS"); ok { // e.g. "1000", or "" for none
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
				sizes = append(sizes, n)
			}
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("at-rest-%d-imports", n), func(bb *testing.B) {
			b := printing{bb}
			start := time.Now()
			setExports(b, lab, "weft-2", ns, n)
			waitImports(b, lab, "weft-1", ns, n, 5*time.Minute)
			b.Logf("%d imports settled %v after their exports were made", n, time.Since(start).Round(100*time.Millisecond))
			time.Sleep(10 * time.Second) // let the last writes and their echoes pass
			before := map[string]requestCounts{}
			for _, c := range lab.Clusters {
				before[c] = apiRequests(b, lab, c)
			}
			cpu0 := operatorCPU(b)
			time.Sleep(rest)
			cpu := (operatorCPU(b) - cpu0).Seconds() / rest.Seconds() * 100
			for _, c := range lab.Clusters {
				d := apiRequests(b, lab, c).minus(before[c])
				b.Logf("%s's API server at rest with %d imports: %.2f requests/s besides Leases (%s), Leases %.2f/s",
					c, n, d.other/rest.Seconds(), d.top(5, rest), d.leases/rest.Seconds())
				b.ReportMetric(d.other/rest.Seconds(), c+"-req/s")
				b.ReportMetric(d.leases/rest.Seconds(), c+"-lease-req/s")
			}
			b.Logf("the four weft operators at rest with %d imports: %.2f %% of a core", n, cpu)
			b.ReportMetric(cpu, "operators-%core")
			b.ReportMetric(0, "ns/op")
		})
	}

	b.Run("bulk-1000", func(bb *testing.B) {
		b := printing{bb}
		setExports(b, lab, "weft-2", ns, 0)
		waitImports(b, lab, "weft-1", ns, 0, 5*time.Minute)
		// The same single exports with nothing else going on, for comparison.
		var idle []time.Duration
		for i, r := range exportToResolvable(b, lab, "weft-1", "weft-2", singles) {
			b.Logf("single export %d, idle: resolvable after %v", i+1, r.Resolvable.Round(time.Millisecond))
			idle = append(idle, r.Resolvable)
		}
		start := time.Now()
		created := make(chan time.Duration, 1)
		exports := lab.CRClient(b, "weft-2")
		go func() {
			if err := trySetExports(exports, ns, 1000); err != nil {
				b.Error(err)
			}
			created <- time.Since(start)
		}()
		// Single exports in another namespace while the thousand are on their way.
		var resolvable []time.Duration
		for i, r := range exportToResolvable(b, lab, "weft-1", "weft-2", singles) {
			b.Logf("single export %d during the bulk: resolvable after %v", i+1, r.Resolvable.Round(time.Millisecond))
			resolvable = append(resolvable, r.Resolvable)
		}
		made := <-created
		imported := waitImports(b, lab, "weft-1", ns, 1000, 5*time.Minute).Sub(start)
		b.Logf("1,000 ServiceExports created in %v; all imported %v after the first", made.Round(100*time.Millisecond), imported.Round(100*time.Millisecond))
		start = time.Now()
		setExports(b, lab, "weft-2", ns, 0)
		gone := waitImports(b, lab, "weft-1", ns, 0, 5*time.Minute).Sub(start)
		b.Logf("1,000 ServiceExports deleted: every import gone %v after the first deletion", gone.Round(100*time.Millisecond))
		// The floor, in the same lab: the API writes weft makes for a thousand imports in each
		// cluster (a ServiceImport, its Service, the VIP patched in, the status) and the
		// thousand records in weft-2, made by a plain client with 32 requests in flight — what
		// this machine's two control planes take for them with nothing to decide.
		floor := floorWrites(b, lab, 1000)
		b.Logf("the same writes by a plain client: %v (weft took %.1f× that)", floor.Round(100*time.Millisecond), imported.Seconds()/floor.Seconds())

		p50, p99 := latencyPercentiles(resolvable)
		ip50, ip99 := latencyPercentiles(idle)
		b.ReportMetric(float64(ip50.Milliseconds()), "p50-idle-resolvable-ms")
		b.ReportMetric(float64(ip99.Milliseconds()), "p99-idle-resolvable-ms")
		b.ReportMetric(floor.Seconds(), "floor-1000-s")
		b.ReportMetric(imported.Seconds()/floor.Seconds(), "import/floor")
		b.ReportMetric(imported.Seconds(), "import-1000-s")
		b.ReportMetric(gone.Seconds(), "remove-1000-s")
		b.ReportMetric(float64(p50.Milliseconds()), "p50-single-resolvable-ms")
		b.ReportMetric(float64(p99.Milliseconds()), "p99-single-resolvable-ms")
		b.ReportMetric(0, "ns/op")
	})
}

// services makes n selector-less Services svc-0 … svc-(n-1) in ns of cluster, each with an
// EndpointSlice of one ready endpoint.
func services(t testing.TB, l *Lab, cluster, ns string, n int) {
	c := l.CRClient(t, cluster)
	if err := parallel(n, func(i int) error {
		name := fmt.Sprintf("svc-%d", i)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		if err := c.Create(context.Background(), svc); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
		return client.IgnoreAlreadyExists(c.Create(context.Background(), endpointSlice(ns, name, fmt.Sprintf("10.245.%d.%d", 100+i/250, 1+i%250))))
	}); err != nil {
		t.Fatal(err)
	}
}

// setExports makes svc-0 … svc-(n-1) of ns exported and the others not, all at once.
func setExports(t testing.TB, l *Lab, cluster, ns string, n int) {
	t.Helper()
	if err := trySetExports(l.CRClient(t, cluster), ns, n); err != nil {
		t.Fatal(err)
	}
}

func trySetExports(c client.Client, ns string, n int) error {
	have := &mcsv1.ServiceExportList{}
	if err := c.List(context.Background(), have, client.InNamespace(ns)); err != nil {
		return err
	}
	exists := map[string]bool{}
	for _, se := range have.Items {
		exists[se.Name] = true
	}
	return parallel(1000, func(i int) error {
		se := &mcsv1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: ns}}
		switch {
		case i < n && !exists[se.Name]:
			return client.IgnoreAlreadyExists(c.Create(context.Background(), se))
		case i >= n && exists[se.Name]:
			return client.IgnoreNotFound(c.Delete(context.Background(), se))
		}
		return nil
	})
}

// parallel runs fn(0) … fn(n-1) on 32 goroutines and returns their errors.
func parallel(n int, fn func(int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// waitImports waits until cluster has exactly n ServiceImports with a VIP in ns and returns
// when it saw them (looking every second).
func waitImports(t testing.TB, l *Lab, cluster, ns string, n int, timeout time.Duration) time.Time {
	t.Helper()
	c := l.CRClient(t, cluster)
	deadline := time.Now().Add(timeout)
	for {
		list := &mcsv1.ServiceImportList{}
		if err := c.List(context.Background(), list, client.InNamespace(ns)); err == nil {
			ready := 0
			for _, si := range list.Items {
				if len(si.Spec.IPs) > 0 {
					ready++
				}
			}
			if ready == n && len(list.Items) == n {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d ServiceImports in %s (%d with a VIP) after %v, want %d", cluster, len(list.Items), ns, ready, timeout, n)
			}
		}
		// Each look lists a thousand objects: not so often that the lists load the API
		// server the imports are written to.
		time.Sleep(time.Second)
	}
}

// requestCounts are an API server's request counters: Leases, and everything else by verb
// and resource.
type requestCounts struct {
	leases, other float64
	byKind        map[string]float64
}

func (a requestCounts) minus(b requestCounts) requestCounts {
	d := requestCounts{leases: a.leases - b.leases, other: a.other - b.other, byKind: map[string]float64{}}
	for k, v := range a.byKind {
		if v -= b.byKind[k]; v > 0 {
			d.byKind[k] = v
		}
	}
	return d
}

// top names the n kinds of request with the highest rates over d.
func (a requestCounts) top(n int, d time.Duration) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range a.byKind {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var out []string
	for i := 0; i < n && i < len(all); i++ {
		out = append(out, fmt.Sprintf("%s %.2f/s", all[i].k, all[i].v/d.Seconds()))
	}
	return strings.Join(out, ", ")
}

// apiRequests reads apiserver_request_total from cluster's API server.
func apiRequests(t testing.TB, l *Lab, cluster string) requestCounts {
	t.Helper()
	raw, err := l.Client(t, cluster).CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rc := requestCounts{byKind: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels, value, ok := strings.Cut(strings.TrimPrefix(line, "apiserver_request_total{"), "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				l[k] = strings.Trim(v, `"`)
			}
		}
		if l["resource"] == "leases" {
			rc.leases += v
			continue
		}
		rc.other += v
		kind := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			kind += "/" + l["subresource"]
		}
		rc.byKind[kind] += v
	}
	return rc
}

// operatorCPU is the CPU time the weft-operator processes on this machine have used.
func operatorCPU(t testing.TB) time.Duration {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ticks int64
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", p.Name(), "exe"))
		if err != nil || filepath.Base(exe) != "weft-operator" {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces): utime and stime are 14th and 15th.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
		f := strings.Fields(rest)
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// endpointSlice is a selector-less Service's slice with one ready endpoint.
func endpointSlice(ns, svc, ip string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-1",
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
}

// floorWrites makes, in namespace bench-floor of both clusters, what weft writes for n
// imports — per import a ServiceImport, a selector-less Service, the Service's ClusterIP
// patched into the ServiceImport and its status — and in weft-2 n ExportRecords, with 32
// requests in flight, and returns how long that took; then removes it all. weft does not
// act on any of it (the records are outside its namespace, the imports not its own).
func floorWrites(t testing.TB, l *Lab, n int) time.Duration {
	t.Helper()
	const ns = "bench-floor"
	ctx := context.Background()
	clients := map[string]client.Client{}
	for _, c := range l.Clusters {
		namespace(t, l.Client(t, c), ns)
		clients[c] = l.CRClient(t, c)
	}
	start := time.Now()
	err := parallel(n*len(l.Clusters), func(j int) error {
		c := clients[l.Clusters[j%len(l.Clusters)]]
		name := fmt.Sprintf("floor-%d", j/len(l.Clusters))
		if j%len(l.Clusters) == 1 {
			rec := &fabricv1.ExportRecord{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: fabricv1.ExportRecordSpec{Cluster: "weft-2", Service: fabricv1.ServiceRef{Namespace: ns, Name: name},
					ExportCreated: metav1.Now(), Type: mcsv1.ClusterSetIP, Ports: []mcsv1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
			if err := c.Create(ctx, rec); err != nil {
				return err
			}
		}
		si := &mcsv1.ServiceImport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: mcsv1.ServiceImportSpec{Type: mcsv1.ClusterSetIP, Ports: []mcsv1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
		if err := c.Create(ctx, si); err != nil {
			return err
		}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		if err := c.Create(ctx, svc); err != nil {
			return err
		}
		before := si.DeepCopy()
		si.Spec.IPs = []string{svc.Spec.ClusterIP}
		if err := c.Patch(ctx, si, client.MergeFrom(before)); err != nil {
			return err
		}
		before = si.DeepCopy()
		si.Status.Clusters = []mcsv1.ClusterStatus{{Cluster: "weft-2"}}
		return c.Status().Patch(ctx, si, client.MergeFrom(before))
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Clusters {
		l.MustKubectl(t, c, "", "delete", "namespace", ns, "--wait=false")
	}
	return took
}
