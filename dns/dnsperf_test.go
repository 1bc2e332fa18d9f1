package dns

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/weft-net/weft/dns/dnstest"
)

// BenchmarkDNSPerf measures weft-dns beside CoreDNS serving the same names with Debian's
// dnsperf, in one run: queries per second at saturation (one dnsperf thread, 20 clients,
// 200 queries in flight) and the latency p50/p99 at a fixed rate both sustain. CoreDNS
// (COREDNS_BIN, built from the module proxy by hack/lab-deps.sh) serves a zone file holding
// exactly the records weft-dns answers — 1,000 ClusterSetIP Services with a named port and
// 100 headless ones with 3 endpoints each; the benchmark first checks that both give the
// same answer to every question. The questions: A and SRV of every Service, 5% unknown
// names (NXDOMAIN). Run it with -benchtime 1x; WEFT_DNSPERF_SECONDS sets each run's length
// (default 10).
func BenchmarkDNSPerf(b *testing.B) {
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		b.Fatal("dnsperf is missing: `make bench` installs it (apt package dnsperf)")
	}
	coredns := filepath.Join(os.Getenv("COREDNS_BIN"), "coredns")
	if _, err := os.Stat(coredns); err != nil {
		b.Fatalf("CoreDNS is missing (COREDNS_BIN=%q): run through `make bench`, which builds it", os.Getenv("COREDNS_BIN"))
	}
	seconds := 10
	if v, err := strconv.Atoi(os.Getenv("WEFT_DNSPERF_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	dir := b.TempDir()
	a, questions := perfZone()
	var lines []string
	for _, q := range questions {
		lines = append(lines, q.Name+" "+dns.TypeToString[q.Qtype])
	}
	queries := filepath.Join(dir, "queries")
	if err := os.WriteFile(queries, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}

	weft := serveInBackground(b, a)
	core := startCoreDNS(b, coredns, dir, a, questions)
	for _, q := range questions {
		w, c := exchange(b, weft, q), exchange(b, core, q)
		if w.Rcode != c.Rcode || dnstest.Records(w) != dnstest.Records(c) {
			b.Fatalf("%s %s: weft-dns %s %q, CoreDNS %s %q", q.Name, dns.TypeToString[q.Qtype],
				dns.RcodeToString[w.Rcode], dnstest.Records(w), dns.RcodeToString[c.Rcode], dnstest.Records(c))
		}
	}

	run := func(server netip.AddrPort, args ...string) []byte {
		b.Helper()
		cmd := exec.Command(dnsperf, append([]string{"-s", server.Addr().String(), "-p", strconv.Itoa(int(server.Port())),
			"-d", queries, "-l", strconv.Itoa(seconds), "-T", "1", "-c", "20"}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		return out
	}
	qps := map[string]float64{}
	for _, s := range []struct {
		name   string
		server netip.AddrPort
	}{{"weft-dns", weft}, {"coredns", core}} {
		out := run(s.server, "-q", "200")
		qps[s.name] = dnsperfQPS(b, out)
		b.Logf("%s at saturation: %.0f queries/s (%s)", s.name, qps[s.name], dnsperfLost(out))
	}
	// The fixed rate: half of what the slower one sustains, so neither queues.
	rate := int(min(qps["weft-dns"], qps["coredns"]) / 2)
	lat := map[string][]time.Duration{}
	for _, s := range []struct {
		name   string
		server netip.AddrPort
	}{{"weft-dns", weft}, {"coredns", core}} {
		lat[s.name] = dnsperfLatencies(b, run(s.server, "-q", "200", "-Q", strconv.Itoa(rate), "-v"))
		b.Logf("%s at %d queries/s: p50 %v, p99 %v over %d answers", s.name, rate,
			percentile(lat[s.name], 0.5), percentile(lat[s.name], 0.99), len(lat[s.name]))
	}
	b.ReportMetric(qps["weft-dns"], "weft-qps")
	b.ReportMetric(qps["coredns"], "coredns-qps")
	b.ReportMetric(qps["weft-dns"]/qps["coredns"], "qps-ratio")
	b.ReportMetric(float64(percentile(lat["weft-dns"], 0.99).Microseconds()), "weft-p99-µs")
	b.ReportMetric(float64(percentile(lat["coredns"], 0.99).Microseconds()), "coredns-p99-µs")
	b.ReportMetric(0, "ns/op")
}

// perfZone is the benchmark's zone and its questions.
func perfZone() (*Answerer, []dns.Question) {
	var svcs []Service
	var qs []dns.Question
	q := func(name string, t uint16) {
		qs = append(qs, dns.Question{Name: name, Qtype: t, Qclass: dns.ClassINET})
	}
	for i := range 1000 {
		s := Service{Namespace: fmt.Sprintf("team-%d", i%20), Name: fmt.Sprintf("svc-%d", i), Type: ClusterSetIP,
			IPs:   []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)})},
			Ports: []Port{{Name: "http", Protocol: "TCP", Port: 80}}}
		svcs = append(svcs, s)
		name := s.Name + "." + s.Namespace + ".svc.clusterset.local."
		q(name, dns.TypeA)
		q("_http._tcp."+name, dns.TypeSRV)
	}
	for i := range 100 {
		s := Service{Namespace: fmt.Sprintf("team-%d", i%20), Name: fmt.Sprintf("db-%d", i), Type: Headless,
			Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 5432}}}
		for j := range 3 {
			s.Endpoints = append(s.Endpoints, Endpoint{Hostname: fmt.Sprintf("db-%d", j), Cluster: []string{"east", "west"}[j%2],
				Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i), byte(j + 1)})}})
		}
		svcs = append(svcs, s)
		q(s.Name+"."+s.Namespace+".svc.clusterset.local.", dns.TypeA)
	}
	for i := range len(qs) / 20 {
		q(fmt.Sprintf("gone-%d.team-%d.svc.clusterset.local.", i, i%20), dns.TypeA)
	}
	a := NewAnswerer("clusterset.local", 5)
	a.Set(NewZone(svcs))
	NewStats(a) // counted, as weft-dns serves
	return a, qs
}

// serveInBackground runs Serve on a loopback port until the benchmark ends.
func serveInBackground(b *testing.B, a *Answerer) netip.AddrPort {
	ctx, cancel := context.WithCancel(context.Background())
	addr, done := make(chan net.Addr, 1), make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", a, func(u, _ net.Addr) { addr <- u }) }()
	b.Cleanup(func() { cancel(); _ = <-done })
	select {
	case u := <-addr:
		return u.(*net.UDPAddr).AddrPort()
	case err := <-done:
		b.Fatal(err)
	}
	return netip.AddrPort{}
}

// startCoreDNS serves, on a free loopback port, a zone file with the SOA, NS and TXT of the
// apex and every record a answers to questions.
func startCoreDNS(b *testing.B, coredns, dir string, a *Answerer, questions []dns.Question) netip.AddrPort {
	var zone bytes.Buffer
	seen := map[string]bool{}
	add := func(rr dns.RR) {
		if s := rr.String(); !seen[s] {
			seen[s] = true
			zone.WriteString(s + "\n")
		}
	}
	for _, name := range []string{"clusterset.local.", "dns-version.clusterset.local."} {
		for _, t := range []uint16{dns.TypeSOA, dns.TypeNS, dns.TypeTXT} {
			for _, rr := range a.Answer(dnstest.Query(name, t)).Answer {
				add(rr)
			}
		}
	}
	for _, q := range questions {
		for _, rr := range a.Answer(dnstest.Query(q.Name, q.Qtype)).Answer {
			add(rr)
		}
	}
	// The NS target needs an address in the zone file; weft-dns does not answer it.
	add(&dns.A{Hdr: dns.RR_Header{Name: "ns.dns.clusterset.local.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(127, 0, 0, 1)})
	zf := filepath.Join(dir, "db.clusterset.local")
	if err := os.WriteFile(zf, zone.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = l.Close()
	corefile := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(corefile, fmt.Appendf(nil, "clusterset.local:%d {\n    bind 127.0.0.1\n    file %s\n}\n", addr.Port(), zf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(coredns, "-conf", corefile, "-quiet")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	probe := dnstest.Query("dns-version.clusterset.local.", dns.TypeTXT)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if m, _, err := c.Exchange(probe, addr.String()); err == nil && len(m.Answer) == 1 {
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("CoreDNS did not answer on %s within 20 s:\n%s", addr, logs.String())
		}
	}
}

func exchange(b *testing.B, server netip.AddrPort, q dns.Question) *dns.Msg {
	b.Helper()
	c := &dns.Client{Timeout: 2 * time.Second, UDPSize: 1232}
	m, _, err := c.Exchange(dnstest.Query(q.Name, q.Qtype), server.String())
	if err != nil {
		b.Fatalf("%s %s to %s: %v", q.Name, dns.TypeToString[q.Qtype], server, err)
	}
	return m
}

var (
	qpsLine  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	lostLine = regexp.MustCompile(`Queries lost:\s+(.*)`)
	// dnsperf -v prints one line per answer: "> NOERROR name type 0.000123".
	verboseLine = regexp.MustCompile(`^> \S+ \S+ \S+ ([0-9.]+)$`)
)

func dnsperfQPS(b *testing.B, out []byte) float64 {
	m := qpsLine.FindSubmatch(out)
	if m == nil {
		b.Fatalf("no queries per second in dnsperf's output:\n%s", out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func dnsperfLost(out []byte) string {
	if m := lostLine.FindSubmatch(out); m != nil {
		return "lost " + strings.TrimSpace(string(m[1]))
	}
	return "lost ?"
}

func dnsperfLatencies(b *testing.B, out []byte) []time.Duration {
	var lat []time.Duration
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := verboseLine.FindStringSubmatch(sc.Text()); m != nil {
			s, _ := strconv.ParseFloat(m[1], 64)
			lat = append(lat, time.Duration(s*float64(time.Second)))
		}
	}
	if len(lat) == 0 {
		b.Fatalf("no per-query latencies in dnsperf -v output:\n%.2000s", out)
	}
	slices.Sort(lat)
	return lat
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
